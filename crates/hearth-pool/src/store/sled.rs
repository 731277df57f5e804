//! [`PoolStore`] in a sled database: one process (sled locks its folder), so the chain ends it
//! caches stay true.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use hearth_protocol::{KeyPair, SignedReceipt};
use sled::Transactional;

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

/// [`PoolStore`] in a sled database.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    /// Each node's last receipt: its `by_node` key.
    heads: sled::Tree,
    /// Keyed `job id / node id`: the receipt's `by_node` key.
    receipts: sled::Tree,
    /// The receipts, keyed `node id / sequence (big-endian)`, for catching a node up in order.
    by_node: sled::Tree,
    balances: sled::Tree,
    records: sled::Tree,
    customer_keys: sled::Tree,
    /// Keyed `key id / model`.
    usage: sled::Tree,
    /// Nodes' registrations, by node id.
    sessions: sled::Tree,
    jobs: MemoryJobs,
    /// The chain ends appended so far (read from the heads once per node); held while
    /// appending, which also serialises the balances' read-modify-write.
    ends: Mutex<HashMap<String, ChainEnd>>,
}

impl SledStore {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = hearth_ledger::open_database(dir)?;
        Ok(Self {
            heads: db.open_tree("chain_heads")?,
            receipts: db.open_tree("receipts_by_job")?,
            by_node: db.open_tree("receipts_by_node")?,
            balances: db.open_tree("balances")?,
            records: db.open_tree("node_records")?,
            customer_keys: db.open_tree("customer_keys")?,
            usage: db.open_tree("customer_usage")?,
            sessions: db.open_tree("node_sessions")?,
            jobs: MemoryJobs::default(),
            db,
            ends: Mutex::default(),
        })
    }

    fn decode(bytes: &[u8]) -> Result<SignedReceipt, StoreError> {
        from_json(bytes, "receipt")
    }

    /// The receipt an index entry (of `receipts_by_job` or `chain_heads`) points to. A
    /// receipt is stored once, under its node and sequence; the indexes hold that key.
    /// Stores written before that hold the receipt itself (JSON, so `{` first).
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

    fn stored_end(&self, node_id: &str) -> Result<ChainEnd, StoreError> {
        Ok(match self.heads.get(node_id)? {
            Some(entry) => ChainEnd::after(&self.indexed(&entry)?),
            None => ChainEnd::default(),
        })
    }

    fn append(
        &self,
        payments: &[Payment],
        key: &KeyPair,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        // Chain against a copy: the cache moves only once the batch is stored.
        let mut moved: HashMap<String, ChainEnd> = HashMap::new();
        let receipts = chain_payments(payments, key, &mut moved, |node| match ends.get(node) {
            Some(end) => Ok(end.clone()),
            None => self.stored_end(node),
        })?;
        struct Row {
            bytes: Vec<u8>,
            job_key: String,
            node_key: Vec<u8>,
        }
        let rows = receipts
            .iter()
            .map(|receipt| {
                let mut node_key = receipt.receipt.node_id.as_bytes().to_vec();
                node_key.push(b'/');
                node_key.extend(receipt.receipt.sequence.to_be_bytes());
                Ok(Row {
                    bytes: to_json(receipt)?,
                    job_key: format!("{}/{}", receipt.receipt.job_id, receipt.receipt.node_id),
                    node_key,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Each node's balance moves once per batch, by the sum of its receipts; its head
        // points to its last receipt of the batch.
        let mut earned: HashMap<&str, (u64, &[u8])> = HashMap::new();
        for (receipt, row) in receipts.iter().zip(&rows) {
            let entry = earned
                .entry(receipt.receipt.node_id.as_str())
                .or_insert((0, &[]));
            entry.0 = entry.0.saturating_add(receipt.receipt.micro_credits);
            entry.1 = row.node_key.as_slice();
        }
        (&self.heads, &self.receipts, &self.by_node, &self.balances)
            .transaction(|(heads, by_job, by_node, balances)| {
                for (receipt, row) in receipts.iter().zip(&rows) {
                    if by_job.get(row.job_key.as_bytes())?.is_some() {
                        return sled::transaction::abort(format!(
                            "job {} was already paid to node {}",
                            receipt.receipt.job_id, receipt.receipt.node_id
                        ));
                    }
                    by_node.insert(row.node_key.as_slice(), row.bytes.as_slice())?;
                    by_job.insert(row.job_key.as_bytes(), row.node_key.as_slice())?;
                }
                for (node, (credits, last)) in &earned {
                    heads.insert(node.as_bytes(), *last)?;
                    let old = balances
                        .get(node.as_bytes())?
                        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
                        .map_or(0, u64::from_be_bytes);
                    let new = old.saturating_add(*credits);
                    balances.insert(node.as_bytes(), &new.to_be_bytes())?;
                }
                Ok(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(why) => StoreError::Conflict(why),
                sled::transaction::TransactionError::Storage(e) => StoreError::from(e),
            })?;
        ends.extend(moved);
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
        self.heads
            .get(node_id)?
            .map(|entry| self.indexed(&entry))
            .transpose()
    }

    async fn receipt_for_job(
        &self,
        job_id: &str,
        node_id: &str,
    ) -> Result<Option<SignedReceipt>, StoreError> {
        self.receipts
            .get(format!("{job_id}/{node_id}"))?
            .map(|entry| self.indexed(&entry))
            .transpose()
    }

    async fn receipts_after(
        &self,
        node_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        let mut prefix = node_id.as_bytes().to_vec();
        prefix.push(b'/');
        let mut start = prefix.clone();
        start.extend(after.map_or(0, |a| a.saturating_add(1)).to_be_bytes());
        let mut end = prefix;
        end.extend(u64::MAX.to_be_bytes());
        let mut out = Vec::new();
        for entry in self.by_node.range(start..=end).take(limit) {
            let (_, bytes) = entry?;
            out.push(Self::decode(&bytes)?);
        }
        Ok(out)
    }

    async fn balances(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.balances
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let amount = <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        what: "balance",
                        detail: format!("{} bytes, not 8", v.len()),
                    })?;
                Ok((String::from_utf8_lossy(&k).into_owned(), amount))
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
