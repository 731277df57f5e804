//! What the pool keeps across restarts: each node's receipt chain and balance, each node's
//! record (strikes, quarantine), and the pool's own signing key. Behind [`PoolStore`] so a server database can back a large pool; the
//! embedded pool uses sled.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hearth_protocol::{KeyPair, Receipt, SignedReceipt};

use crate::accounts::{CustomerKey, Usage};
use crate::queue::now_unix_ms;
use crate::reputation::NodeRecord;
use sled::Transactional;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("pool storage: {0}")]
pub struct StoreError(pub String);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self(e.to_string())
    }
}

/// Durable pool state.
pub trait PoolStore: Send + Sync + std::fmt::Debug {
    /// The newest receipt issued to `node_id`.
    fn chain_head(&self, node_id: &str) -> Result<Option<SignedReceipt>, StoreError>;
    /// Record each receipt, in order, as its node's new chain head and add its credits to the
    /// node's balance: all of them or none (atomically). Durable only after [`PoolStore::sync`].
    fn append_receipts(&self, receipts: &[SignedReceipt]) -> Result<(), StoreError>;
    /// Make everything appended so far durable.
    fn sync(&self) -> Result<(), StoreError>;
    /// The receipt `node_id` got for `job_id`, if one was issued.
    fn receipt_for_job(
        &self,
        job_id: &str,
        node_id: &str,
    ) -> Result<Option<SignedReceipt>, StoreError>;
    /// `node_id`'s receipts after sequence `after` (all when `None`), oldest first, at most `limit`.
    fn receipts_after(
        &self,
        node_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<SignedReceipt>, StoreError>;
    /// Micro-credits owed to each node, by node id.
    fn balances(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// The pool's receipt-signing key (32 secret bytes), created on first use.
    fn pool_secret(&self, create: &dyn Fn() -> [u8; 32]) -> Result<[u8; 32], StoreError>;
    /// `node_id`'s record, if it ever worked here.
    fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError>;
    /// Replace `node_id`'s record; `durable` makes it survive a crash at once (strikes).
    fn put_node_record(
        &self,
        node_id: &str,
        record: &NodeRecord,
        durable: bool,
    ) -> Result<(), StoreError>;
    /// Every node's record, by node id.
    fn node_records(&self) -> Result<Vec<(String, NodeRecord)>, StoreError>;
    /// Add or replace a customer key (durably).
    fn put_customer_key(&self, key: &CustomerKey) -> Result<(), StoreError>;
    /// Every customer key.
    fn customer_keys(&self) -> Result<Vec<CustomerKey>, StoreError>;
    /// Add a job's units and charge to `key_id`'s usage of `model`.
    fn add_usage(
        &self,
        key_id: &str,
        model: &str,
        units: u64,
        micro_credits: u64,
    ) -> Result<(), StoreError>;
    /// Usage by key id and model.
    fn usage(&self) -> Result<Vec<(String, String, Usage)>, StoreError>;
}

/// One payment to record: a receipt before its place in the node's chain is known.
#[derive(Clone, Debug)]
pub struct Payment {
    pub job_id: String,
    pub node_id: String,
    pub model: String,
    pub units: u64,
    pub unit: String,
    pub micro_credits: u64,
}

impl Payment {
    /// This payment's receipt, issued at `issued_unix_ms` at the end of its node's chain.
    fn receipt(&self, issued_unix_ms: u64, end: ChainEnd) -> Receipt {
        Receipt {
            job_id: self.job_id.clone(),
            node_id: self.node_id.clone(),
            model: self.model.clone(),
            units: self.units,
            unit: self.unit.clone(),
            micro_credits: self.micro_credits,
            issued_unix_ms,
            sequence: end.next_sequence,
            prev_hash: end.prev_hash,
        }
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Vec<SignedReceipt>, StoreError>>;

struct IssueRequest {
    payments: Vec<Payment>,
    reply: Reply,
}

/// Receipts appended to the store, waiting for a sync before their requesters hear of them.
type Appended = Vec<(Reply, Vec<SignedReceipt>)>;

/// Issues receipts in batches (group commit), on two threads. The chain thread takes the
/// payments waiting when it turns to them, chains and signs them, and appends them in one
/// [`PoolStore::append_receipts`]; the sync thread makes everything appended so far durable
/// with one [`PoolStore::sync`] and only then answers, while the chain thread goes on with
/// the next batch. One chain thread means each node's chain grows one receipt at a time
/// without locks; batching means that under load a disk write serves many jobs (sled writes
/// its log twice for every atomic batch: one batch per job cost two synced writes per job).
pub struct ReceiptWriter {
    requests: Option<std::sync::mpsc::Sender<IssueRequest>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ReceiptWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptWriter")
    }
}

/// Most payments chained and written together.
const MAX_BATCH: usize = 512;

impl ReceiptWriter {
    /// Start the writer's threads over `store`, signing with `key`.
    pub fn start(store: Arc<dyn PoolStore>, key: KeyPair) -> std::io::Result<Self> {
        let (requests, incoming) = std::sync::mpsc::channel::<IssueRequest>();
        let (appended_tx, appended) = std::sync::mpsc::channel::<Appended>();
        let chain_store = Arc::clone(&store);
        let chain = std::thread::Builder::new()
            .name("pool-receipts".into())
            .spawn(move || {
                let mut ends = ChainEnds::default();
                while let Some(batch) = next_batch(&incoming, MAX_BATCH) {
                    if let Some(done) = append_batch(chain_store.as_ref(), &key, &mut ends, batch)
                        && appended_tx.send(done).is_err()
                    {
                        break;
                    }
                }
            })?;
        let sync = std::thread::Builder::new()
            .name("pool-receipts-sync".into())
            .spawn(move || {
                while let Some(batches) = next_batch(&appended, usize::MAX) {
                    let synced = store.sync();
                    if let Err(error) = &synced {
                        tracing::error!(%error, "receipts stored but not made durable");
                    }
                    for (reply, receipts) in batches.into_iter().flatten() {
                        let _ = reply.send(match &synced {
                            Ok(()) => Ok(receipts),
                            Err(error) => Err(StoreError(error.0.clone())),
                        });
                    }
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            threads: vec![chain, sync],
        })
    }

    /// Chain, sign and durably store a receipt for each payment; returns them in order.
    pub async fn issue(&self, payments: Vec<Payment>) -> Result<Vec<SignedReceipt>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .as_ref()
            .and_then(|r| r.send(IssueRequest { payments, reply }).ok())
            .ok_or_else(|| StoreError("the receipt writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError("the receipt writer has stopped".into()))?
    }
}

impl Drop for ReceiptWriter {
    /// Let the threads finish what they were given and release the store.
    fn drop(&mut self) {
        drop(self.requests.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The next message and up to `max - 1` more already waiting; `None` once the senders are gone.
fn next_batch<T>(incoming: &std::sync::mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let mut batch = vec![incoming.recv().ok()?];
    while batch.len() < max {
        match incoming.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Where a node's chain ends: the next receipt's sequence and the hash it names.
#[derive(Clone, Debug)]
struct ChainEnd {
    next_sequence: u64,
    prev_hash: String,
}

/// The chain ends the writer knows, so a batch does not read and hash each node's last
/// receipt again. Only the writer appends, so the cache stays true while writes succeed.
#[derive(Debug, Default)]
struct ChainEnds(HashMap<String, ChainEnd>);

impl ChainEnds {
    fn get(&mut self, store: &dyn PoolStore, node_id: &str) -> Result<ChainEnd, StoreError> {
        if let Some(end) = self.0.get(node_id) {
            return Ok(end.clone());
        }
        let end = match store.chain_head(node_id)? {
            Some(head) => ChainEnd {
                next_sequence: head.receipt.sequence + 1,
                prev_hash: head.hash(),
            },
            None => ChainEnd {
                next_sequence: 0,
                prev_hash: String::new(),
            },
        };
        self.0.insert(node_id.to_owned(), end.clone());
        Ok(end)
    }
}

/// Chain and sign every payment of `batch` after its node's chain end and append them all;
/// the requests with their receipts, to be answered after a sync. On a storage error every
/// request of the batch is answered with it, and the chain ends are forgotten (read again
/// from the store).
fn append_batch(
    store: &dyn PoolStore,
    key: &KeyPair,
    ends: &mut ChainEnds,
    batch: Vec<IssueRequest>,
) -> Option<Appended> {
    let mut signed: Vec<Vec<SignedReceipt>> = Vec::with_capacity(batch.len());
    let mut chained = || -> Result<(), StoreError> {
        let now = now_unix_ms();
        let mut all = Vec::new();
        for request in &batch {
            let mut mine = Vec::with_capacity(request.payments.len());
            for p in &request.payments {
                let receipt =
                    SignedReceipt::sign(p.receipt(now, ends.get(store, &p.node_id)?), key);
                ends.0.insert(
                    p.node_id.clone(),
                    ChainEnd {
                        next_sequence: receipt.receipt.sequence + 1,
                        prev_hash: receipt.hash(),
                    },
                );
                all.push(receipt.clone());
                mine.push(receipt);
            }
            signed.push(mine);
        }
        store.append_receipts(&all)
    };
    match chained() {
        Ok(()) => Some(
            batch
                .into_iter()
                .map(|request| request.reply)
                .zip(signed)
                .collect(),
        ),
        Err(error) => {
            tracing::error!(%error, "receipts not stored");
            ends.0.clear();
            for request in batch {
                let _ = request.reply.send(Err(StoreError(error.0.clone())));
            }
            None
        }
    }
}

/// A stored value read back; `what` names it in the error.
fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt {what}: {e}")))
}

/// A value as stored.
fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError(e.to_string()))
}

/// [`PoolStore`] in a sled database.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    heads: sled::Tree,
    /// Keyed `job id / node id`.
    receipts: sled::Tree,
    /// Keyed `node id / sequence (big-endian)`, for catching a node up in order.
    by_node: sled::Tree,
    balances: sled::Tree,
    records: sled::Tree,
    customer_keys: sled::Tree,
    /// Keyed `key id / model`.
    usage: sled::Tree,
    /// Serialises appends to the balances' read-modify-write.
    append: Mutex<()>,
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
            db,
            append: Mutex::new(()),
        })
    }

    fn decode(bytes: &[u8]) -> Result<SignedReceipt, StoreError> {
        from_json(bytes, "receipt")
    }
}

impl PoolStore for SledStore {
    fn chain_head(&self, node_id: &str) -> Result<Option<SignedReceipt>, StoreError> {
        self.heads
            .get(node_id)?
            .map(|b| Self::decode(&b))
            .transpose()
    }

    fn append_receipts(&self, receipts: &[SignedReceipt]) -> Result<(), StoreError> {
        let _guard = self.append.lock().unwrap_or_else(|e| e.into_inner());
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
        (&self.heads, &self.receipts, &self.by_node, &self.balances)
            .transaction(|(heads, by_job, by_node, balances)| {
                for (receipt, row) in receipts.iter().zip(&rows) {
                    let node = receipt.receipt.node_id.as_bytes();
                    heads.insert(node, row.bytes.as_slice())?;
                    by_job.insert(row.job_key.as_bytes(), row.bytes.as_slice())?;
                    by_node.insert(row.node_key.as_slice(), row.bytes.as_slice())?;
                    let old = balances
                        .get(node)?
                        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
                        .map_or(0, u64::from_be_bytes);
                    let new = old.saturating_add(receipt.receipt.micro_credits);
                    balances.insert(node, &new.to_be_bytes())?;
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| StoreError(format!("{e:?}")))?;
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn receipt_for_job(
        &self,
        job_id: &str,
        node_id: &str,
    ) -> Result<Option<SignedReceipt>, StoreError> {
        self.receipts
            .get(format!("{job_id}/{node_id}"))?
            .map(|b| Self::decode(&b))
            .transpose()
    }

    fn receipts_after(
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

    fn balances(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.balances
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let amount = <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError("corrupt balance".into()))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), amount))
            })
            .collect()
    }

    fn pool_secret(&self, create: &dyn Fn() -> [u8; 32]) -> Result<[u8; 32], StoreError> {
        if let Some(bytes) = self.db.get("pool_secret")? {
            return <[u8; 32]>::try_from(bytes.as_ref())
                .map_err(|_| StoreError("corrupt pool key".into()));
        }
        let secret = create();
        self.db.insert("pool_secret", &secret)?;
        self.db.flush()?;
        Ok(secret)
    }

    fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.records
            .get(node_id)?
            .map(|b| from_json(&b, "node record"))
            .transpose()
    }

    fn put_node_record(
        &self,
        node_id: &str,
        record: &NodeRecord,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.records.insert(node_id, to_json(record)?)?;
        if durable {
            self.records.flush()?;
        }
        Ok(())
    }

    fn put_customer_key(&self, key: &CustomerKey) -> Result<(), StoreError> {
        self.customer_keys
            .insert(key.id.as_bytes(), to_json(key)?)?;
        self.customer_keys.flush()?;
        Ok(())
    }

    fn customer_keys(&self) -> Result<Vec<CustomerKey>, StoreError> {
        self.customer_keys
            .iter()
            .map(|entry| from_json(&entry?.1, "customer key"))
            .collect()
    }

    fn add_usage(
        &self,
        key_id: &str,
        model: &str,
        units: u64,
        micro_credits: u64,
    ) -> Result<(), StoreError> {
        let id = format!("{key_id}/{model}");
        let mut failure = None;
        self.usage.update_and_fetch(id.as_bytes(), |old| {
            let mut usage: Usage = old
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            usage.jobs = usage.jobs.saturating_add(1);
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
            Some(e) => Err(StoreError(e)),
            None => Ok(()),
        }
    }

    fn usage(&self) -> Result<Vec<(String, String, Usage)>, StoreError> {
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

    fn node_records(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        self.records
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let record = from_json(&v, "node record")?;
                Ok((String::from_utf8_lossy(&k).into_owned(), record))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn payment(job: usize, node: &str, credits: u64) -> Payment {
        Payment {
            job_id: format!("job-{job}"),
            node_id: node.into(),
            model: "m".into(),
            units: credits,
            unit: "images".into(),
            micro_credits: credits,
        }
    }

    /// Many payments at once from many tasks: each node's chain has every receipt once, in
    /// sequence, each naming the one before; balances are the sums; all of it after reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_payments_make_unbroken_chains_and_exact_balances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool");
        let key = KeyPair::generate().unwrap();
        let public = key.public_key();
        {
            let store: Arc<dyn PoolStore> = Arc::new(SledStore::open(&path).unwrap());
            let writer = Arc::new(ReceiptWriter::start(Arc::clone(&store), key).unwrap());
            let tasks: Vec<_> = (0..300)
                .map(|i| {
                    let writer = Arc::clone(&writer);
                    tokio::spawn(async move {
                        let nodes = ["a", "b", "c"];
                        // Every fifth job pays two nodes (a verified job).
                        let mut payments = vec![payment(i, nodes[i % 3], 1 + i as u64)];
                        if i % 5 == 0 {
                            payments.push(payment(i, nodes[(i + 1) % 3], 1));
                        }
                        let receipts = writer.issue(payments.clone()).await.unwrap();
                        assert_eq!(receipts.len(), payments.len());
                        for (r, p) in receipts.iter().zip(&payments) {
                            assert_eq!(
                                (&r.receipt.job_id, &r.receipt.node_id),
                                (&p.job_id, &p.node_id)
                            );
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        }
        // The writer has let go of the store; sled lets go of its lock a moment later.
        let store = SledStore::open(&path).unwrap();
        let mut total = 0;
        for node in ["a", "b", "c"] {
            let chain = store.receipts_after(node, None, 10_000).unwrap();
            let mut prev = String::new();
            for (i, receipt) in chain.iter().enumerate() {
                receipt.verify(&public).unwrap();
                assert_eq!(receipt.receipt.sequence, i as u64);
                assert_eq!(receipt.receipt.prev_hash, prev);
                prev = receipt.hash();
            }
            assert_eq!(store.chain_head(node).unwrap().unwrap().hash(), prev);
            let sum: u64 = chain.iter().map(|r| r.receipt.micro_credits).sum();
            let balance = store
                .balances()
                .unwrap()
                .into_iter()
                .find(|(n, _)| n == node);
            assert_eq!(balance.map(|(_, b)| b), Some(sum));
            total += chain.len();
        }
        assert_eq!(total, 300 + 60);
    }
}
