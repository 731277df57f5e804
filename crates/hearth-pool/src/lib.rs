//! Hearth's pool: takes OpenAI-style requests from customers, splits them into jobs, leases the
//! jobs to nodes that can run them, checks the results and pays each with a signed receipt.
//!
//! - [`openai`]: the customer API (`/v1/models`, `/v1/embeddings`, `/v1/chat/completions`,
//!   `/v1/images/classifications`), authenticated by API key.
//! - [`node_api`]: the node API (`/node/v1/...`), every request signed by the node's key.
//! - [`queue`]: leases, heartbeats, expiry and requeue, results accepted once.
//! - [`verify`]: a share of jobs answered twice (or scored) before anyone is paid.
//! - [`store`]: receipt chains and balances, durable, behind [`PoolStore`] ([`SledStore`]).
//! - [`embedded`]: the local demo pool the desktop app starts, with its demo customer.
//!
//! [`Pool::start`] runs a pool on a tokio runtime; the desktop app starts one in-process on
//! 127.0.0.1 as its local demo pool.

pub mod config;
pub mod embedded;
pub mod error;
pub mod node_api;
pub mod nodes;
pub mod openai;
pub mod queue;
pub mod store;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hearth_protocol::KeyPair;
use tokio::sync::oneshot;

pub use config::{ModelOffer, ModelTask, PoolConfig};
pub use error::ApiError;
pub use store::{Payment, PoolStore, SledStore, StoreError};

/// Everything the handlers share.
#[derive(Debug)]
pub struct PoolState {
    pub config: Arc<PoolConfig>,
    pub queue: queue::Queue,
    pub nodes: nodes::Nodes,
    pub store: Arc<dyn PoolStore>,
    /// The key receipts are signed with (its public half is given to nodes).
    pub pool_key: KeyPair,
    /// Chains, signs and stores receipts, durably and in batches.
    pub receipts: store::ReceiptWriter,
}

/// Why a pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("pool key: {0}")]
    Key(String),
}

/// A running pool. Dropping it shuts the server down.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    state: Arc<PoolState>,
    shutdown: Option<oneshot::Sender<()>>,
}

/// The HTTP routes of a pool.
pub fn router(state: Arc<PoolState>) -> Router {
    let limit = state.config.body_limit_bytes;
    Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/images/classifications", post(openai::classify_images))
        .route("/node/v1/register", post(node_api::register))
        .route("/node/v1/lease", post(node_api::lease))
        .route("/node/v1/jobs/{id}/heartbeat", post(node_api::heartbeat))
        .route("/node/v1/jobs/{id}/return", post(node_api::give_back))
        .route("/node/v1/jobs/{id}/result", post(node_api::result))
        .route("/node/v1/receipts", post(node_api::receipts))
        .route("/health", get(|| async { "ok" }))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(format!("no route for {}", uri.path()))
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

impl Pool {
    /// Start a pool with `config` and `store` on the current tokio runtime.
    pub async fn start(config: PoolConfig, store: Arc<dyn PoolStore>) -> Result<Self, StartError> {
        // A key for a new pool (an existing pool's stored key wins); no randomness, no pool.
        let fresh = KeyPair::generate()
            .map_err(|e| StartError::Key(e.to_string()))?
            .secret_bytes();
        let secret = store.pool_secret(&|| fresh)?;
        let pool_key =
            KeyPair::from_secret_bytes(&secret).map_err(|e| StartError::Key(e.to_string()))?;
        let receipts = store::ReceiptWriter::start(
            Arc::clone(&store),
            KeyPair::from_secret_bytes(&secret).map_err(|e| StartError::Key(e.to_string()))?,
        )
        .map_err(|e| StartError::Key(format!("cannot start the receipt writer: {e}")))?;
        let config = Arc::new(config);
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let state = Arc::new(PoolState {
            queue: queue::Queue::new(Arc::clone(&config)),
            nodes: nodes::Nodes::default(),
            store,
            pool_key,
            receipts,
            config,
        });
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app = router(Arc::clone(&state));
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "pool server stopped");
            }
        });
        // Expired leases go back to the queue a few times a second.
        let reaper = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let Some(state) = reaper.upgrade() else { break };
                state.queue.expire_leases();
            }
        });
        tracing::info!(%addr, name = %state.config.name, "pool listening");
        Ok(Self {
            addr,
            state,
            shutdown: Some(shutdown),
        })
    }

    /// Where the pool listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state (queue, nodes, store), for status pages and tests.
    pub fn state(&self) -> &Arc<PoolState> {
        &self.state
    }
}

/// What the pool owes each node, as CSV: `node_id,micro_credits`, one line per node.
pub fn payout_csv(store: &dyn PoolStore) -> Result<String, StoreError> {
    let mut csv = String::from("node_id,micro_credits\n");
    for (node, credits) in store.balances()? {
        // Node ids are hex; nothing needs quoting.
        csv.push_str(&format!("{node},{credits}\n"));
    }
    Ok(csv)
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
