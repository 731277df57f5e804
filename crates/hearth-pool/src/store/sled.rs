//! [`PoolStore`] in a sled database: one process (sled locks its folder), so the chain ends it
//! caches stay true.
//!
//! Receipts are written without sled's atomic batches (each of which writes its log three
//! times): a batch's receipts and job index entries go first, then each node's chain head
//! (last sequence and balance, one value). sled recovers a crashed database's log up to its
//! first gap, a prefix of the writes in the order they were made, so a head is never ahead of
//! its receipts; receipts beyond a node's head are the remains of a batch that was never
//! synced (so never acknowledged) and are read as absent, then written over.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use hearth_protocol::{KeyPair, SignedReceipt};

use super::{
    ChainEnd, MemoryJobs, NodeSession, Payment, PoolStore, StoreError, UsageCharge, chain_payments,
    from_json, to_json, usage_by_key,
};
use crate::accounts::{CustomerKey, Usage};
use crate::queue::job::{Claim, JobCounts, JobEdit, JobRow, QueueEvent};
use crate::reputation::NodeRecord;

/// Make everything written to `tree`'s database durable. Not sled's `flush_async`: it can
/// miss its wake-up and never finish when several flushes run at once (spacejam/sled#1241,
/// #1308; the dispatch bench, 32 nodes registering at once, hung on it now and then). The
/// blocking flush runs off the runtime's threads.
async fn flush(tree: &sled::Tree) -> Result<(), StoreError> {
    let tree = tree.clone();
    tokio::task::spawn_blocking(move || tree.flush())
        .await
        .map_err(|e| StoreError::Unavailable(format!("the flush task failed: {e}")))??;
    Ok(())
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => Self::Corrupt {
                what: "sled data",
                detail: e.to_string(),
            },
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// The default tree's key for the layout a store is written in (absent: older than 2).
const LAYOUT_KEY: &str = "receipt_layout";
/// Heads hold [`Head`]s; there is no separate balances tree.
const LAYOUT: u8 = 2;

/// A node's chain end and balance, as cached while appending.
#[derive(Clone, Debug, Default)]
struct Tail {
    end: ChainEnd,
    balance: u64,
}

/// A node's entry in `chain_heads`: the sequence of its last committed receipt and its
/// balance with it. Written after that batch's receipts, in one write, so it is where the
/// batch commits for this node.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Head {
    last: u64,
    balance: u64,
}

impl Head {
    /// First byte of an encoded head. Older layouts held a receipt (JSON, `{`) or its key
    /// (starting with a node id, text), never this.
    const TAG: u8 = 1;

    fn encode(self) -> [u8; 17] {
        let mut out = [0; 17];
        out[0] = Self::TAG;
        out[1..9].copy_from_slice(&self.last.to_be_bytes());
        out[9..].copy_from_slice(&self.balance.to_be_bytes());
        out
    }

    /// A stored head; an entry that is not one is a corrupt store.
    fn read(entry: &[u8]) -> Result<Self, StoreError> {
        Self::decode(entry).ok_or_else(|| StoreError::Corrupt {
            what: "chain head",
            detail: format!("{} bytes, not a head", entry.len()),
        })
    }

    /// A head, or `None` for an entry of an older layout.
    fn decode(entry: &[u8]) -> Option<Self> {
        let [Self::TAG, rest @ ..] = entry else {
            return None;
        };
        let (last, balance) = rest.split_at_checked(8)?;
        Some(Self {
            last: u64::from_be_bytes(last.try_into().ok()?),
            balance: u64::from_be_bytes(balance.try_into().ok()?),
        })
    }
}

/// A receipt's key in `receipts_by_node`: node id, `/`, sequence (big-endian, so in order).
fn node_key(node_id: &str, sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(node_id.len() + 9);
    key.extend_from_slice(node_id.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// The sequence a [`node_key`] names.
fn sequence_of(key: &[u8]) -> Result<u64, StoreError> {
    key.len()
        .checked_sub(8)
        .map(|at| &key[at..])
        .ok_or_else(|| StoreError::Corrupt {
            what: "receipt index",
            detail: format!("a key of {} bytes", key.len()),
        })
        .and_then(|b| read_u64(b, "receipt index"))
}

/// Eight big-endian bytes as a number.
fn read_u64(bytes: &[u8], what: &'static str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            what,
            detail: format!("{} bytes, not 8", bytes.len()),
        })
}

/// [`PoolStore`] in a sled database.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    /// Each node's [`Head`]: where its committed chain ends, and its balance.
    heads: sled::Tree,
    /// Keyed `job id / node id`: the receipt's `by_node` key (the whole receipt in stores
    /// of the oldest layout); see [`SledStore::paid`].
    receipts: sled::Tree,
    /// The receipts, keyed `node id / sequence (big-endian)`, for catching a node up in order.
    by_node: sled::Tree,
    records: sled::Tree,
    customer_keys: sled::Tree,
    /// Keyed `key id / model`.
    usage: sled::Tree,
    /// Nodes' registrations, by node id.
    sessions: sled::Tree,
    jobs: MemoryJobs,
    /// Each node's chain end and balance as committed so far (read from its head once per
    /// node); held while appending, so one batch at a time moves them.
    tails: Mutex<HashMap<String, Tail>>,
}

impl SledStore {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = hearth_sled::open(dir)?;
        Self {
            heads: db.open_tree("chain_heads")?,
            receipts: db.open_tree("receipts_by_job")?,
            by_node: db.open_tree("receipts_by_node")?,
            records: db.open_tree("node_records")?,
            customer_keys: db.open_tree("customer_keys")?,
            usage: db.open_tree("customer_usage")?,
            sessions: db.open_tree("node_sessions")?,
            jobs: MemoryJobs::default(),
            db,
            tails: Mutex::default(),
        }
        .migrated()
    }

    /// Bring a store of an older layout up to this one: heads that named their receipt (or
    /// held it whole) beside a separate `balances` tree become [`Head`]s. Safe to repeat
    /// after a crash part way: a head already converted is left as it is.
    fn migrated(self) -> Result<Self, StoreError> {
        if self.db.get(LAYOUT_KEY)?.as_deref() == Some(&[LAYOUT][..]) {
            return Ok(self);
        }
        let balances = self.db.open_tree("balances")?;
        for entry in self.heads.iter() {
            let (node, entry) = entry?;
            if Head::decode(&entry).is_some() {
                continue;
            }
            let last = self.indexed(&entry)?.receipt.sequence;
            let balance = balances
                .get(&node)?
                .map(|b| read_u64(&b, "balance"))
                .transpose()?
                .unwrap_or(0);
            self.heads
                .insert(node, &Head { last, balance }.encode()[..])?;
        }
        self.db.drop_tree("balances")?;
        self.db.insert(LAYOUT_KEY, &[LAYOUT])?;
        self.db.flush()?;
        Ok(self)
    }

    fn decode(bytes: &[u8]) -> Result<SignedReceipt, StoreError> {
        from_json(bytes, "receipt")
    }

    /// The receipt a head of an older layout names, for [`SledStore::migrated`]: its key in
    /// `receipts_by_node`, or (in the oldest layout) the receipt itself (JSON, so `{` first).
    fn indexed(&self, entry: &[u8]) -> Result<SignedReceipt, StoreError> {
        if entry.first() == Some(&b'{') {
            return Self::decode(entry);
        }
        let bytes = self
            .by_node
            .get(entry)?
            .ok_or_else(|| StoreError::Corrupt {
                what: "receipt index",
                detail: "points to no receipt".into(),
            })?;
        Self::decode(&bytes)
    }

    /// `node_id`'s committed head, if it was ever paid.
    fn head(&self, node_id: &str) -> Result<Option<Head>, StoreError> {
        self.heads
            .get(node_id)?
            .map(|entry| Head::read(&entry))
            .transpose()
    }

    /// `node_id`'s receipt at `sequence`, as stored (committed or not).
    fn receipt_at(
        &self,
        node_id: &str,
        sequence: u64,
    ) -> Result<Option<SignedReceipt>, StoreError> {
        self.by_node
            .get(node_key(node_id, sequence))?
            .map(|bytes| Self::decode(&bytes))
            .transpose()
    }

    /// The receipt `head` names, which must be there.
    fn receipt_of(&self, node_id: &str, head: Head) -> Result<SignedReceipt, StoreError> {
        self.receipt_at(node_id, head.last)?
            .ok_or_else(|| StoreError::Corrupt {
                what: "chain head",
                detail: format!(
                    "node {node_id}'s head names receipt {}, which is missing",
                    head.last
                ),
            })
    }

    /// `node_id`'s chain end and balance as stored.
    fn stored_tail(&self, node_id: &str) -> Result<Tail, StoreError> {
        let Some(head) = self.head(node_id)? else {
            return Ok(Tail::default());
        };
        Ok(Tail {
            end: ChainEnd::after(&self.receipt_of(node_id, head)?),
            balance: head.balance,
        })
    }

    /// The receipt paying `job_id` to `node_id`, if that payment was committed: its index
    /// entry may be left from a batch cut short by a crash, naming a sequence past the
    /// node's head or (once written over) another job's receipt.
    fn paid(&self, job_id: &str, node_id: &str) -> Result<Option<SignedReceipt>, StoreError> {
        let Some(entry) = self.receipts.get(format!("{job_id}/{node_id}"))? else {
            return Ok(None);
        };
        if entry.first() == Some(&b'{') {
            // Written by an older layout, in one atomic batch with its head.
            return Self::decode(&entry).map(Some);
        }
        let sequence = sequence_of(&entry)?;
        if self.head(node_id)?.is_none_or(|head| sequence > head.last) {
            return Ok(None);
        }
        Ok(self
            .receipt_at(node_id, sequence)?
            .filter(|r| r.receipt.payment.job_id == job_id))
    }

    fn append(
        &self,
        payments: &[Payment],
        key: &KeyPair,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        let mut tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        for payment in payments {
            if !tails.contains_key(&payment.node_id) {
                let tail = self.stored_tail(&payment.node_id)?;
                tails.insert(payment.node_id.clone(), tail);
            }
        }
        let mut paying = HashSet::new();
        for payment in payments {
            if !paying.insert((&payment.job_id, &payment.node_id))
                || self.paid(&payment.job_id, &payment.node_id)?.is_some()
            {
                return Err(StoreError::Conflict(format!(
                    "job {} was already paid to node {}",
                    payment.job_id, payment.node_id
                )));
            }
        }
        // Chain against a copy: the cache moves only once the batch is written.
        let mut moved: HashMap<String, ChainEnd> = HashMap::new();
        let receipts = chain_payments(payments, key, &mut moved, |node| {
            Ok(tails.get(node).map(|t| t.end.clone()).unwrap_or_default())
        })?;
        // The receipts and their job index first; each node's head, which commits them, last.
        let mut heads: HashMap<&str, Head> = HashMap::new();
        for receipt in &receipts {
            let r = &receipt.receipt;
            let key = node_key(&r.payment.node_id, r.sequence);
            self.by_node.insert(key.as_slice(), to_json(receipt)?)?;
            self.receipts
                .insert(format!("{}/{}", r.payment.job_id, r.payment.node_id), key)?;
            let head = heads
                .entry(r.payment.node_id.as_str())
                .or_insert_with(|| Head {
                    last: 0,
                    balance: tails.get(&r.payment.node_id).map_or(0, |t| t.balance),
                });
            head.last = r.sequence;
            head.balance = head.balance.saturating_add(r.payment.micro_credits);
        }
        for (node, head) in &heads {
            self.heads.insert(node.as_bytes(), &head.encode()[..])?;
        }
        for (node, end) in moved {
            let balance = heads.get(node.as_str()).map_or(0, |h| h.balance);
            tails.insert(node, Tail { end, balance });
        }
        Ok(receipts)
    }

    /// Add `jobs` jobs' `units` and `micro_credits` to `key_id`'s usage of `model`.
    fn add_usage(
        &self,
        key_id: &str,
        model: &str,
        jobs: u64,
        units: u64,
        micro_credits: u64,
    ) -> Result<(), StoreError> {
        let id = format!("{key_id}/{model}");
        let mut failure = None;
        self.usage.update_and_fetch(id.as_bytes(), |old| {
            let mut usage: Usage = old
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            usage.jobs = usage.jobs.saturating_add(jobs);
            usage.units = usage.units.saturating_add(units);
            usage.charged_micro_credits = usage.charged_micro_credits.saturating_add(micro_credits);
            match serde_json::to_vec(&usage) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    failure = Some(e.to_string());
                    old.map(<[u8]>::to_vec)
                }
            }
        })?;
        match failure {
            Some(e) => Err(StoreError::Invalid(e)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl PoolStore for SledStore {
    async fn append_receipts(
        &self,
        payments: &[Payment],
        charges: &[UsageCharge],
        key: &KeyPair,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        if payments.is_empty() {
            return Ok(Vec::new());
        }
        let receipts = self.append(payments, key)?;
        // One process owns a sled store, so nothing reads between the two; both are made
        // durable by the same sync.
        for ((key_id, model), (jobs, units, credits)) in usage_by_key(charges) {
            self.add_usage(key_id, model, jobs, units, credits)?;
        }
        Ok(receipts)
    }

    async fn sync(&self) -> Result<(), StoreError> {
        flush(&self.db).await
    }

    async fn chain_head(&self, node_id: &str) -> Result<Option<SignedReceipt>, StoreError> {
        self.head(node_id)?
            .map(|head| self.receipt_of(node_id, head))
            .transpose()
    }

    async fn receipt_for_job(
        &self,
        job_id: &str,
        node_id: &str,
    ) -> Result<Option<SignedReceipt>, StoreError> {
        self.paid(job_id, node_id)
    }

    async fn receipts_after(
        &self,
        node_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        let Some(head) = self.head(node_id)? else {
            return Ok(Vec::new());
        };
        let start = node_key(node_id, after.map_or(0, |a| a.saturating_add(1)));
        let end = node_key(node_id, head.last);
        let mut out = Vec::new();
        for entry in self.by_node.range(start..=end).take(limit) {
            let (_, bytes) = entry?;
            out.push(Self::decode(&bytes)?);
        }
        Ok(out)
    }

    async fn balances(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.heads
            .iter()
            .map(|entry| {
                let (node, entry) = entry?;
                let head = Head::read(&entry)?;
                Ok((String::from_utf8_lossy(&node).into_owned(), head.balance))
            })
            .collect()
    }

    async fn pool_secret(&self, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let stored =
            self.db
                .compare_and_swap("pool_secret", None as Option<&[u8]>, Some(&fresh[..]))?;
        let secret = match stored {
            Ok(()) => {
                flush(&self.db).await?;
                fresh
            }
            Err(existing) => existing
                .current
                .as_deref()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    what: "pool key",
                    detail: "not 32 bytes".into(),
                })?,
        };
        Ok(secret)
    }

    async fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.records
            .get(node_id)?
            .map(|b| from_json(&b, "node record"))
            .transpose()
    }

    async fn put_node_record(
        &self,
        node_id: &str,
        record: &NodeRecord,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.records.insert(node_id, to_json(record)?)?;
        if durable {
            flush(&self.records).await?;
        }
        Ok(())
    }

    async fn node_records(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        self.records
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let record = from_json(&v, "node record")?;
                Ok((String::from_utf8_lossy(&k).into_owned(), record))
            })
            .collect()
    }

    async fn put_customer_key(&self, key: &CustomerKey) -> Result<(), StoreError> {
        self.customer_keys
            .insert(key.id.as_bytes(), to_json(key)?)?;
        flush(&self.customer_keys).await?;
        Ok(())
    }

    async fn customer_keys(&self) -> Result<Vec<CustomerKey>, StoreError> {
        self.customer_keys
            .iter()
            .map(|entry| from_json(&entry?.1, "customer key"))
            .collect()
    }

    async fn usage(&self) -> Result<Vec<(String, String, Usage)>, StoreError> {
        self.usage
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let key = String::from_utf8_lossy(&k).into_owned();
                let (key_id, model) = key.split_once('/').unwrap_or((key.as_str(), ""));
                let usage = from_json(&v, "usage")?;
                Ok((key_id.to_owned(), model.to_owned(), usage))
            })
            .collect()
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.db.get("pool_secret")?;
        Ok(())
    }

    async fn put_session(&self, node_id: &str, session: &NodeSession) -> Result<(), StoreError> {
        self.sessions.insert(node_id, to_json(session)?)?;
        flush(&self.sessions).await?;
        Ok(())
    }

    async fn session(&self, node_id: &str) -> Result<Option<NodeSession>, StoreError> {
        self.sessions
            .get(node_id)?
            .map(|b| from_json(&b, "node session"))
            .transpose()
    }

    async fn insert_jobs(&self, jobs: &[JobRow], events: &[QueueEvent]) -> Result<(), StoreError> {
        self.jobs.insert_jobs(jobs, events)
    }

    async fn claim_jobs(&self, claim: &Claim<'_>) -> Result<Vec<JobRow>, StoreError> {
        Ok(self.jobs.claim_jobs(claim))
    }

    async fn edit_job(&self, job_id: &str, edit: JobEdit<'_>) -> Result<bool, StoreError> {
        Ok(self.jobs.edit_job(job_id, edit))
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        Ok(self.jobs.job(job_id))
    }

    async fn take_finished_job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        Ok(self.jobs.take_finished_job(job_id))
    }

    async fn expired_leases(
        &self,
        now_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self.jobs.expired_leases(now_unix_ms, limit))
    }

    async fn next_lease_expiry(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.jobs.next_lease_expiry())
    }

    async fn jobs_leased_to(&self, node_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.jobs.jobs_leased_to(node_id))
    }

    async fn purge_jobs(&self, before_unix_ms: u64) -> Result<usize, StoreError> {
        Ok(self.jobs.purge_jobs(before_unix_ms))
    }

    async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        Ok(self.jobs.job_counts())
    }

    async fn publish(&self, events: &[QueueEvent]) -> Result<(), StoreError> {
        self.jobs.publish(events);
        Ok(())
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<QueueEvent> {
        self.jobs.events()
    }
}
