//! What the pool keeps across restarts: each node's receipt chain and balance, and the pool's
//! own signing key. Behind [`PoolStore`] so a server database can back a large pool; the
//! embedded pool uses sled.

use std::path::Path;
use std::sync::Mutex;

use hearth_protocol::SignedReceipt;
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
    /// Record `receipt` as the node's new chain head and add its credits to the node's balance,
    /// together (atomically). Durable only after [`PoolStore::sync`].
    fn append_receipt(&self, receipt: &SignedReceipt) -> Result<(), StoreError>;
    /// Make everything appended so far durable. Callers appending concurrently share the
    /// disk writes (group commit): call it outside any lock.
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
}

/// Group commit: many receipts appended at about the same time are made durable by one
/// [`PoolStore::sync`]. Each caller waits until a sync that began after its append has
/// finished; while one sync runs, later callers queue behind it and the first of them syncs
/// for all.
#[derive(Debug, Default)]
pub struct GroupCommit {
    /// Appends announced so far.
    requested: std::sync::atomic::AtomicU64,
    /// Appends known durable.
    durable: std::sync::atomic::AtomicU64,
    flushing: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    /// Make everything this caller appended durable (call after appending).
    pub async fn sync(&self, store: &std::sync::Arc<dyn PoolStore>) -> Result<(), crate::ApiError> {
        use std::sync::atomic::Ordering;
        let mine = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.flushing.lock().await;
        if self.durable.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        // Everything announced up to now was appended before it was announced.
        let target = self.requested.load(Ordering::SeqCst);
        let store = std::sync::Arc::clone(store);
        tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(|e| crate::ApiError::internal(e.to_string()))?
            .map_err(|e| crate::ApiError::internal(e.to_string()))?;
        self.durable.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }
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
    /// Serialises appends to the balances' read-modify-write.
    append: Mutex<()>,
}

impl SledStore {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir)?;
        Ok(Self {
            heads: db.open_tree("chain_heads")?,
            receipts: db.open_tree("receipts_by_job")?,
            by_node: db.open_tree("receipts_by_node")?,
            balances: db.open_tree("balances")?,
            db,
            append: Mutex::new(()),
        })
    }

    fn decode(bytes: &[u8]) -> Result<SignedReceipt, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt receipt: {e}")))
    }
}

impl PoolStore for SledStore {
    fn chain_head(&self, node_id: &str) -> Result<Option<SignedReceipt>, StoreError> {
        self.heads
            .get(node_id)?
            .map(|b| Self::decode(&b))
            .transpose()
    }

    fn append_receipt(&self, receipt: &SignedReceipt) -> Result<(), StoreError> {
        let _guard = self.append.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = serde_json::to_vec(receipt).map_err(|e| StoreError(e.to_string()))?;
        let node = receipt.receipt.node_id.as_bytes();
        let credits = receipt.receipt.micro_credits;
        let job_key = format!("{}/{}", receipt.receipt.job_id, receipt.receipt.node_id);
        let mut node_key = node.to_vec();
        node_key.push(b'/');
        node_key.extend(receipt.receipt.sequence.to_be_bytes());
        (&self.heads, &self.receipts, &self.by_node, &self.balances)
            .transaction(|(heads, receipts, by_node, balances)| {
                heads.insert(node, bytes.as_slice())?;
                receipts.insert(job_key.as_bytes(), bytes.as_slice())?;
                by_node.insert(node_key.as_slice(), bytes.as_slice())?;
                let old = balances
                    .get(node)?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
                    .map_or(0, u64::from_be_bytes);
                balances.insert(node, &old.saturating_add(credits).to_be_bytes())?;
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
}
