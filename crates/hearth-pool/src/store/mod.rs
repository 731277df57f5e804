//! What the pool must not lose: each node's receipt chain and balance, each node's record
//! (strikes, quarantine) and session, the job queue (jobs, leases, attempts, answers,
//! outcomes), customer keys and usage, and the pool's own signing key.
//!
//! [`PoolStore`] is one async interface with two backends:
//! - [`SledStore`]: a sled database in one folder, for the desktop app's embedded pool and a
//!   single-box operator (one process: sled locks its files). Its job queue lives in the
//!   process's memory ([`MemoryJobs`]): the customers waiting on it are in the same process.
//! - [`PgStore`]: PostgreSQL, shared by several pool processes; the database itself keeps
//!   each node's chain from forking and each job from being paid twice, a job is leased to
//!   one node at a time (`FOR UPDATE SKIP LOCKED`), and events cross processes by
//!   `LISTEN/NOTIFY`.
//!
//! [`open`] picks one from the config's `database`.

mod memory;
mod postgres;
mod sled;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use hearth_protocol::{KeyPair, Payment, Receipt, SignedReceipt};

use crate::accounts::{CustomerKey, Usage};
use crate::queue::job::{Claim, JobCounts, JobEdit, JobRow, QueueEvent};
use crate::queue::now_unix_ms;
use crate::reputation::NodeRecord;

pub use memory::MemoryJobs;
pub use postgres::{ConnectionUse, MIGRATIONS, PgStore};
pub use sled::SledStore;

/// A node's registration as the pool keeps it, so that any pool process checks its requests.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeSession {
    pub key: hearth_protocol::PublicKey,
    pub profile: hearth_protocol::HardwareProfile,
    /// The MAC key agreed at registration (hex), when the node asked for a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    pub registered_unix_ms: u64,
}

/// Why the store could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached, or failed to answer; worth retrying.
    #[error("the pool's database is unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back.
    #[error("corrupt {what} in the pool's database: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The write would break a rule the database keeps (a job paid twice to one node, a
    /// chain sequence taken, an id in use); nothing was written.
    #[error("refused by the pool's database: {0}")]
    Conflict(String),
    /// The request itself is not valid (checked before anything is written).
    #[error("{0}")]
    Invalid(String),
    /// No such item.
    #[error("{0} not found")]
    NotFound(String),
    /// The database was set up by a newer pool, or its schema could not be brought up to date.
    #[error("the pool's database schema: {0}")]
    Schema(String),
}

impl StoreError {
    /// Whether trying again later may succeed (the database was down or busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Durable pool state. Every method is one atomic step: it happens entirely or not at all.
#[async_trait]
pub trait PoolStore: Send + Sync + std::fmt::Debug {
    /// A receipt for each payment, in order, each at the end of its node's chain (the next
    /// sequence, naming the hash of the one before), signed with `key`; stored with each node's
    /// balance raised by its credits, and each of `charges` added to its customer's usage, all
    /// of them or none: a customer is charged exactly for the jobs whose nodes were paid. A job
    /// paid twice to one node is [`StoreError::Conflict`]. Durable only after
    /// [`PoolStore::sync`].
    async fn append_receipts(
        &self,
        payments: &[Payment],
        charges: &[UsageCharge],
        key: &KeyPair,
    ) -> Result<Vec<SignedReceipt>, StoreError>;
    /// Make everything appended so far durable.
    async fn sync(&self) -> Result<(), StoreError>;
    /// The newest receipt issued to `node_id`.
    async fn chain_head(&self, node_id: &str) -> Result<Option<SignedReceipt>, StoreError>;
    /// The receipt `node_id` got for `job_id`, if one was issued.
    async fn receipt_for_job(
        &self,
        job_id: &str,
        node_id: &str,
    ) -> Result<Option<SignedReceipt>, StoreError>;
    /// `node_id`'s receipts after sequence `after` (all when `None`), oldest first, at most `limit`.
    async fn receipts_after(
        &self,
        node_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<SignedReceipt>, StoreError>;
    /// Micro-credits owed to each node, by node id.
    async fn balances(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// The pool's receipt-signing key (32 secret bytes): the stored one, else `fresh`, stored.
    /// Processes starting together on one database agree on one key.
    async fn pool_secret(&self, fresh: [u8; 32]) -> Result<[u8; 32], StoreError>;
    /// `node_id`'s record, if it ever worked here.
    async fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError>;
    /// Replace `node_id`'s record; `durable` makes it survive a crash at once (strikes).
    async fn put_node_record(
        &self,
        node_id: &str,
        record: &NodeRecord,
        durable: bool,
    ) -> Result<(), StoreError>;
    /// Every node's record, by node id.
    async fn node_records(&self) -> Result<Vec<(String, NodeRecord)>, StoreError>;
    /// Add or replace a customer key (durably).
    async fn put_customer_key(&self, key: &CustomerKey) -> Result<(), StoreError>;
    /// Every customer key.
    async fn customer_keys(&self) -> Result<Vec<CustomerKey>, StoreError>;
    /// Usage by key id and model.
    async fn usage(&self) -> Result<Vec<(String, String, Usage)>, StoreError>;
    /// A round trip to the database (for `/health`): fails when it cannot be read.
    async fn health(&self) -> Result<(), StoreError>;

    /// Store `node_id`'s registration (replacing an earlier one).
    async fn put_session(&self, node_id: &str, session: &NodeSession) -> Result<(), StoreError>;
    /// `node_id`'s registration, if it registered.
    async fn session(&self, node_id: &str) -> Result<Option<NodeSession>, StoreError>;

    /// Add `jobs` (queued) and send `events`, all in one step.
    async fn insert_jobs(&self, jobs: &[JobRow], events: &[QueueEvent]) -> Result<(), StoreError>;
    /// Lease up to `claim.max` queued jobs that `claim.node_id` may run (retried and checked
    /// jobs first, then oldest first), each to one node only however many processes claim at
    /// once; the jobs as leased.
    async fn claim_jobs(&self, claim: &Claim<'_>) -> Result<Vec<JobRow>, StoreError>;
    /// Apply `edit` to job `job_id` with nobody else changing it meanwhile, write what it asks
    /// and send its events in the same step; false when there is no such job.
    async fn edit_job(&self, job_id: &str, edit: JobEdit<'_>) -> Result<bool, StoreError>;
    /// Job `job_id` as stored.
    async fn job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError>;
    /// Job `job_id` as it was, removed, if it is finished (its customer takes its outcome: one
    /// step, so only one of several readers gets it); `None` when it is not finished or gone.
    async fn take_finished_job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError>;
    /// Jobs whose lease ran out by `now_unix_ms`, at most `limit`.
    async fn expired_leases(
        &self,
        now_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// When the first lease still held runs out, if any is held.
    async fn next_lease_expiry(&self) -> Result<Option<u64>, StoreError>;
    /// Jobs `node_id` holds (leased, not being paid).
    async fn jobs_leased_to(&self, node_id: &str) -> Result<Vec<String>, StoreError>;
    /// Forget queued and finished jobs whose customer's deadline passed before `before_unix_ms`
    /// (their customer is gone: a process that was killed, say); how many.
    async fn purge_jobs(&self, before_unix_ms: u64) -> Result<usize, StoreError>;
    /// Jobs by state.
    async fn job_counts(&self) -> Result<JobCounts, StoreError>;
    /// Send `events` to every process on this store (this one included).
    async fn publish(&self, events: &[QueueEvent]) -> Result<(), StoreError>;
    /// Every event sent from now on, by any process on this store ([`QueueEvent::Resync`]
    /// when some may have been missed).
    fn events(&self) -> tokio::sync::broadcast::Receiver<QueueEvent>;
    /// How the database's connections are used, where there are any (for `/metrics`).
    fn connection_use(&self) -> Option<ConnectionUse> {
        None
    }
}

/// The store a config names: PostgreSQL for `postgres://…` (migrated to the current schema
/// first), else sled in `data_dir/pool.sled`.
pub async fn open(
    database: Option<&str>,
    max_connections: usize,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn PoolStore>, StoreError> {
    match database {
        Some(url) => {
            let store = PgStore::connect(url, max_connections).await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        None => Ok(Arc::new(SledStore::open(&data_dir.join("pool.sled"))?)),
    }
}

/// What one job costs its customer, recorded with the job's receipts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageCharge {
    pub key_id: String,
    pub model: String,
    pub units: u64,
    /// What its nodes were paid and the pool's fee.
    pub micro_credits: u64,
}

/// `charges` summed by key and model, in that order (one row each to write):
/// (key, model) → (jobs, units, micro-credits).
pub(crate) fn usage_by_key(charges: &[UsageCharge]) -> BTreeMap<(&str, &str), (u64, u64, u64)> {
    let mut sums: BTreeMap<(&str, &str), (u64, u64, u64)> = BTreeMap::new();
    for charge in charges {
        let sum = sums
            .entry((charge.key_id.as_str(), charge.model.as_str()))
            .or_default();
        sum.0 = sum.0.saturating_add(1);
        sum.1 = sum.1.saturating_add(charge.units);
        sum.2 = sum.2.saturating_add(charge.micro_credits);
    }
    sums
}

/// Where a node's chain ends: the next receipt's sequence and the hash it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChainEnd {
    pub next_sequence: u64,
    pub prev_hash: String,
}

impl ChainEnd {
    /// The end after `receipt`.
    fn after(receipt: &SignedReceipt) -> Self {
        Self {
            next_sequence: receipt.receipt.sequence + 1,
            prev_hash: receipt.hash(),
        }
    }
}

/// `payment`'s receipt at `end` of its node's chain, signed.
fn sign_at(payment: &Payment, end: &ChainEnd, issued_unix_ms: u64, key: &KeyPair) -> SignedReceipt {
    SignedReceipt::sign(
        Receipt {
            payment: payment.clone(),
            issued_unix_ms,
            sequence: end.next_sequence,
            prev_hash: end.prev_hash.clone(),
        },
        key,
    )
}

/// Chain and sign `payments` in order: a node's first payment of the batch follows the end
/// `start_of` gives; `moved` holds (and gets) each node's end after its payments. One
/// definition for both backends.
pub(crate) fn chain_payments(
    payments: &[Payment],
    key: &KeyPair,
    moved: &mut HashMap<String, ChainEnd>,
    mut start_of: impl FnMut(&str) -> Result<ChainEnd, StoreError>,
) -> Result<Vec<SignedReceipt>, StoreError> {
    let now = now_unix_ms();
    let mut signed = Vec::with_capacity(payments.len());
    for payment in payments {
        let end = match moved.get(&payment.node_id) {
            Some(end) => end.clone(),
            None => start_of(&payment.node_id)?,
        };
        let receipt = sign_at(payment, &end, now, key);
        moved.insert(payment.node_id.clone(), ChainEnd::after(&receipt));
        signed.push(receipt);
    }
    Ok(signed)
}

type Reply = tokio::sync::oneshot::Sender<Result<Vec<SignedReceipt>, StoreError>>;

struct IssueRequest {
    payments: Vec<Payment>,
    charge: Option<UsageCharge>,
    reply: Reply,
}

/// Receipts appended to the store, waiting for a sync before their requesters hear of them.
type Appended = Vec<(Reply, Vec<SignedReceipt>)>;

/// Issues receipts in batches (group commit), in two tasks. The chain task takes the
/// payments waiting when it turns to them (after one turn of the scheduler, so that
/// requests already on their way join) and appends them in one
/// [`PoolStore::append_receipts`]; the sync task makes everything appended so far durable
/// with one [`PoolStore::sync`] and only then answers, while the chain task goes on with the
/// next batch. Under load one disk write (or one database transaction) serves many jobs. A
/// batch the store refuses is retried one request at a time, so one bad payment fails alone.
pub struct ReceiptWriter {
    requests: Option<tokio::sync::mpsc::UnboundedSender<IssueRequest>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ReceiptWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptWriter")
    }
}

/// Most requests chained and written together.
const MAX_BATCH: usize = 512;

impl ReceiptWriter {
    /// Start the writer's tasks over `store` on the current tokio runtime, signing with `key`.
    pub fn start(store: Arc<dyn PoolStore>, key: KeyPair) -> Self {
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<IssueRequest>();
        let (appended_tx, mut appended) = tokio::sync::mpsc::unbounded_channel::<Appended>();
        let chain_store = Arc::clone(&store);
        let chain = tokio::spawn(async move {
            while let Some(first) = incoming.recv().await {
                // Let the tasks already running go first (they may be requests on their way
                // here): under load a batch gathers the requests of one turn of the
                // scheduler, not just one; an idle runtime comes straight back.
                tokio::task::yield_now().await;
                let mut batch = vec![first];
                take_waiting(&mut incoming, &mut batch, MAX_BATCH);
                let done = append_batch(chain_store.as_ref(), &key, batch).await;
                if !done.is_empty() && appended_tx.send(done).is_err() {
                    break;
                }
            }
        });
        let sync = tokio::spawn(async move {
            while let Some(batches) = next_batch(&mut appended, usize::MAX).await {
                let synced = store.sync().await;
                if let Err(error) = &synced {
                    tracing::error!(%error, "receipts stored but not made durable");
                }
                for (reply, receipts) in batches.into_iter().flatten() {
                    let _ = reply.send(synced.clone().map(|()| receipts));
                }
            }
        });
        Self {
            requests: Some(requests),
            tasks: vec![chain, sync],
        }
    }

    /// Chain, sign and durably store a receipt for each payment, and the customer's `charge`
    /// with them; returns the receipts in order.
    pub async fn issue(
        &self,
        payments: Vec<Payment>,
        charge: Option<UsageCharge>,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        let stopped = || StoreError::Unavailable("the receipt writer has stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .as_ref()
            .and_then(|r| {
                r.send(IssueRequest {
                    payments,
                    charge,
                    reply,
                })
                .ok()
            })
            .ok_or_else(stopped)?;
        answer.await.map_err(|_| stopped())?
    }

    /// Finish what was asked and let go of the store.
    pub async fn close(mut self) {
        drop(self.requests.take());
        for task in self.tasks.drain(..) {
            if let Err(error) = task.await {
                tracing::error!(%error, "a receipt writer task ended abnormally");
            }
        }
    }
}

/// The next message and up to `max - 1` more already waiting; `None` once the senders are gone.
pub(crate) async fn next_batch<T>(
    incoming: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    max: usize,
) -> Option<Vec<T>> {
    let mut batch = vec![incoming.recv().await?];
    take_waiting(incoming, &mut batch, max);
    Some(batch)
}

/// Move the messages already waiting into `batch`, until it holds `max`.
fn take_waiting<T>(
    incoming: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    batch: &mut Vec<T>,
    max: usize,
) {
    while batch.len() < max {
        match incoming.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
}

/// Append every payment of `batch` in one step; the requests with their receipts, to be
/// answered after a sync. When the store refuses the batch, each request is tried alone and
/// those refused again are answered with the error.
async fn append_batch(store: &dyn PoolStore, key: &KeyPair, batch: Vec<IssueRequest>) -> Appended {
    let all: Vec<Payment> = batch
        .iter()
        .flat_map(|r| r.payments.iter().cloned())
        .collect();
    let charges: Vec<UsageCharge> = batch.iter().filter_map(|r| r.charge.clone()).collect();
    match store.append_receipts(&all, &charges, key).await {
        Ok(mut receipts) => {
            let mut done = Vec::with_capacity(batch.len());
            for request in batch.into_iter().rev() {
                let mine = receipts.split_off(receipts.len() - request.payments.len());
                done.push((request.reply, mine));
            }
            done.reverse();
            done
        }
        Err(error) if batch.len() > 1 => {
            tracing::warn!(%error, requests = batch.len(), "a batch of receipts was refused; issuing one request at a time");
            let mut done = Vec::with_capacity(batch.len());
            for request in batch {
                let charges: Vec<UsageCharge> = request.charge.iter().cloned().collect();
                match store
                    .append_receipts(&request.payments, &charges, key)
                    .await
                {
                    Ok(receipts) => done.push((request.reply, receipts)),
                    Err(error) => {
                        tracing::error!(%error, "receipts not stored");
                        let _ = request.reply.send(Err(error));
                    }
                }
            }
            done
        }
        Err(error) => {
            tracing::error!(%error, "receipts not stored");
            for request in batch {
                let _ = request.reply.send(Err(error.clone()));
            }
            Vec::new()
        }
    }
}

/// A stored value read back; `what` names it in the error.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// A value as stored.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// What an audit of the receipt chains found wrong.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("node {node}: receipt {sequence}: {source}")]
    Signature {
        node: String,
        sequence: u64,
        source: hearth_protocol::ProtocolError,
    },
    #[error("node {node}: receipt {sequence} does not follow receipt {after:?}")]
    Broken {
        node: String,
        sequence: u64,
        after: Option<u64>,
    },
    #[error("node {node}: balance {balance} but its receipts add up to {sum}")]
    Balance {
        node: String,
        balance: u64,
        sum: u64,
    },
}

/// Every node's chain from the start: each receipt signed by `pool_key`, in sequence from 0,
/// each naming the hash of the one before; and its balance equal to the chain's sum. The number
/// of receipts checked, or what is wrong (an audit, and the tests' check after a crash).
pub async fn audit_chains(
    store: &dyn PoolStore,
    pool_key: &hearth_protocol::PublicKey,
) -> Result<u64, AuditError> {
    let mut checked = 0;
    for (node, balance) in store.balances().await? {
        let mut expected = ChainEnd::default();
        let mut sum = 0u64;
        loop {
            let after = expected.next_sequence.checked_sub(1);
            let page = store.receipts_after(&node, after, 1000).await?;
            if page.is_empty() {
                break;
            }
            for receipt in &page {
                receipt
                    .verify(pool_key)
                    .map_err(|source| AuditError::Signature {
                        node: node.clone(),
                        sequence: receipt.receipt.sequence,
                        source,
                    })?;
                if receipt.receipt.sequence != expected.next_sequence
                    || receipt.receipt.prev_hash != expected.prev_hash
                {
                    return Err(AuditError::Broken {
                        node,
                        sequence: receipt.receipt.sequence,
                        after,
                    });
                }
                sum = sum.saturating_add(receipt.receipt.payment.micro_credits);
                expected = ChainEnd::after(receipt);
                checked += 1;
            }
        }
        if sum != balance {
            return Err(AuditError::Balance { node, balance, sum });
        }
    }
    Ok(checked)
}
