//! Hearth's pool: takes OpenAI-style requests from customers, splits them into jobs, leases the
//! jobs to nodes that can run them, checks the results and pays each with a signed receipt.
//!
//! - [`openai`]: the customer API (`/v1/models`, `/v1/embeddings`, `/v1/chat/completions`,
//!   `/v1/images/classifications`), authenticated by API key.
//! - [`node_api`]: the node API (`/node/v1/...`), every request signed by the node's key;
//!   `model_files`: the models' manifests and files for nodes that lack them (range requests).
//! - [`meter`]: what the pool counts itself (tokens by its own tokenizers) so it pays only for
//!   what it can check; [`checks`]: what a result must be to be paid.
//! - [`queue`]: leases, heartbeats, expiry and requeue, results accepted once.
//! - [`verify`]: a share of jobs answered twice (or scored) before anyone is paid, drawn from
//!   each node's record ([`reputation`]: probation, strikes, quarantine).
//! - [`store`]: receipt chains, balances, node records, customer keys and usage, durable,
//!   behind [`PoolStore`] ([`SledStore`] for one process, [`PgStore`] for several).
//! - [`server`]: connections, limits and timeouts.
//! - [`embedded`]: the local demo pool the desktop app starts, with its demo customer.
//!
//! [`Pool::start`] runs a pool on a tokio runtime; the desktop app starts one in-process on
//! 127.0.0.1 as its local demo pool.

pub mod accounts;
pub mod admin;
mod checks;
pub mod config;
pub mod embedded;
pub mod error;
pub mod meter;
pub mod metrics;
mod model_files;
pub mod node_api;
pub mod nodes;
pub mod openai;
pub mod queue;
mod rate;
pub mod reputation;
mod server;
pub mod store;
pub mod tls;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hearth_protocol::KeyPair;
use tokio::sync::watch;

pub use config::{ConfigError as PoolConfigError, ModelOffer, PoolConfig};
pub use error::ApiError;
pub use hearth_protocol::{Payment, ReleaseNotice, TaskKind};
pub use meter::{Meter, MeterError};
pub use reputation::NodeRecord;
pub use store::{AuditError, PgStore, PoolStore, SledStore, StoreError, UsageCharge, audit_chains};

/// Everything the handlers share.
#[derive(Debug)]
pub struct PoolState {
    pub config: Arc<PoolConfig>,
    pub queue: Arc<queue::Queue>,
    pub nodes: nodes::Nodes,
    pub store: Arc<dyn PoolStore>,
    /// The pool's own count of what it bills and pays.
    pub meter: Arc<Meter>,
    /// Customer keys, their limits and what they are charged.
    pub accounts: accounts::Accounts,
    /// The key receipts are signed with (its public half is given to nodes).
    pub pool_key: KeyPair,
    /// Chains, signs and stores receipts, durably and in batches.
    pub receipts: store::ReceiptWriter,
    /// This process's counters, for `/metrics`.
    pub metrics: metrics::Metrics,
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
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(
        "the pool cannot count the work of models {0:?} (their tokenizers are missing): fetch them with `hearth-models fetch` or stop selling them"
    )]
    Unmetered(Vec<String>),
}

/// A running pool. Dropping it shuts the server down.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    /// `https` when the pool terminates TLS itself.
    scheme: &'static str,
    admin: Option<admin::AdminEndpoint>,
    state: Arc<PoolState>,
    shutdown: watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// The HTTP routes of a pool.
pub fn router(state: Arc<PoolState>) -> Router {
    Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/images/classifications", post(openai::classify_images))
        .route("/node/v1/challenge", post(node_api::challenge))
        .route("/node/v1/register", post(node_api::register))
        .route("/node/v1/lease", post(node_api::lease))
        .route("/node/v1/jobs/{id}/heartbeat", post(node_api::heartbeat))
        .route("/node/v1/jobs/{id}/return", post(node_api::give_back))
        .route("/node/v1/jobs/{id}/result", post(node_api::result))
        .route("/node/v1/receipts", post(node_api::receipts))
        .route("/node/v1/models", get(model_files::manifests))
        .route("/node/v1/files/{sha256}", get(model_files::file))
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(format!("no route for {}", uri.path()))
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Bodies are read by the handlers, each with its own limit and deadline.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `ok` when the pool can read its store; 503 with the reason when it cannot.
async fn health(
    axum::extract::State(state): axum::extract::State<Arc<PoolState>>,
) -> Result<&'static str, ApiError> {
    state
        .store
        .health()
        .await
        .map(|()| "ok")
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

/// `GET /metrics`: Prometheus' text format.
async fn prometheus(
    axum::extract::State(state): axum::extract::State<Arc<PoolState>>,
) -> impl axum::response::IntoResponse {
    let counts = state.store.job_counts().await;
    let store_up = counts.is_ok();
    let counts = counts.unwrap_or_default();
    let gauges = metrics::Gauges {
        queued: counts.queued,
        leased: counts.leased,
        finished: counts.finished,
        nodes_waiting: state.queue.nodes_waiting(),
        customers_waiting: state.queue.leased(),
        connections: state.store.connection_use(),
        store_up,
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state.metrics, &gauges),
    )
}

impl Pool {
    /// Start a pool with `config`, `store` and `meter` (which must cover every model sold) on
    /// the current tokio runtime. A config that lists no models sells the meter's offers: the
    /// models of its store that have a price.
    pub async fn start(
        mut config: PoolConfig,
        store: Arc<dyn PoolStore>,
        meter: Arc<Meter>,
    ) -> Result<Self, StartError> {
        if config.models.is_empty() {
            config.models = meter.offers().to_vec();
        }
        let unmetered: Vec<String> = config
            .models
            .iter()
            .filter(|m| !meter.covers(&m.id))
            .map(|m| m.id.clone())
            .collect();
        if !unmetered.is_empty() {
            return Err(StartError::Unmetered(unmetered));
        }
        // A key for a new pool (an existing pool's stored key wins); no randomness, no pool.
        let fresh = KeyPair::generate()
            .map_err(|e| StartError::Key(e.to_string()))?
            .secret_bytes();
        let secret = store.pool_secret(fresh).await?;
        let pool_key =
            KeyPair::from_secret_bytes(&secret).map_err(|e| StartError::Key(e.to_string()))?;
        let receipts = store::ReceiptWriter::start(
            Arc::clone(&store),
            KeyPair::from_secret_bytes(&secret).map_err(|e| StartError::Key(e.to_string()))?,
        );
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
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
            queue: Arc::new(queue::Queue::start(Arc::clone(&store), Arc::clone(&config))),
            nodes: nodes::Nodes::new(Arc::clone(&store), Arc::clone(&config)),
            accounts: accounts::Accounts::load(Arc::clone(&store), Arc::clone(&config)).await?,
            store,
            meter,
            pool_key,
            receipts,
            config,
            metrics: metrics::Metrics::default(),
        });
        let (shutdown, stopped) = watch::channel(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = tokio::spawn(server::serve(
            listener,
            router(Arc::clone(&state)),
            tls,
            state.config.max_connections,
            Duration::from_millis(state.config.header_timeout_ms),
            stopped,
        ));
        tokio::spawn(reap(Arc::downgrade(&state)));
        let admin = match state.config.admin_bind {
            None => None,
            Some(bind) => {
                let listener = tokio::net::TcpListener::bind(bind)
                    .await
                    .map_err(|source| StartError::Bind { addr: bind, source })?;
                let admin_addr = listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr: bind, source })?;
                let token = queue::random_id("admin-");
                tokio::spawn(server::serve(
                    listener,
                    admin::router(Arc::clone(&state), token.clone()),
                    None,
                    64,
                    Duration::from_millis(state.config.header_timeout_ms),
                    shutdown.subscribe(),
                ));
                Some(admin::AdminEndpoint {
                    url: format!("http://{admin_addr}"),
                    token,
                })
            }
        };
        tracing::info!(%addr, name = %state.config.name, "pool listening");
        Ok(Self {
            addr,
            scheme,
            admin,
            state,
            shutdown,
            server: Some(server),
        })
    }

    /// Drain before stopping: lease nothing more and take no new requests (customers of jobs
    /// no node holds are told to retry at once), wait up to `grace` for the jobs nodes hold
    /// to come back and be paid, then tell the customers still waiting. Returns how many
    /// leased jobs were still out when the grace ran out.
    pub async fn drain(&self, grace: Duration) -> usize {
        let told = self.state.queue.close().await;
        tracing::info!(customers_told = told, "draining: no more leases");
        let until = tokio::time::Instant::now() + grace;
        while self.state.queue.leased() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = self.state.queue.leased();
        let abandoned = self.state.queue.abandon().await;
        tracing::info!(leases_out = out, customers_told = abandoned, "drained");
        out
    }

    /// Stop serving: no new connections; those open finish the request they answer and close.
    /// Waits up to `grace` for them.
    pub async fn stop(mut self, grace: Duration) {
        self.shutdown.send_replace(true);
        if let Some(server) = self.server.take()
            && tokio::time::timeout(grace, server).await.is_err()
        {
            tracing::warn!(
                "connections still open after {} ms; closing anyway",
                grace.as_millis()
            );
        }
    }

    /// The admin API, when [`PoolConfig::admin_bind`] asked for one.
    pub fn admin(&self) -> Option<&admin::AdminEndpoint> {
        self.admin.as_ref()
    }

    /// Where the pool listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, or `https://<addr>` with a certificate.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The shared state (queue, nodes, store), for status pages and tests.
    pub fn state(&self) -> &Arc<PoolState> {
        &self.state
    }
}

/// Put expired leases back in the queue when they run out (sleeping until the first held
/// lease does, so an idle pool does nothing), forget jobs whose customers are gone, and when a
/// busy process has no more customers waiting, give the memory their jobs held back to the
/// system. Every process does this; a job is requeued once however many look at once.
async fn reap(state: std::sync::Weak<PoolState>) {
    const MIN_NAP: Duration = Duration::from_millis(20);
    let mut was_busy = false;
    loop {
        let Some(pool) = state.upgrade() else { break };
        let now = queue::now_unix_ms();
        match pool.queue.expire_leases().await {
            Ok(expired) => pool
                .metrics
                .count(metrics::Outcome::LeaseExpired, expired as u64),
            Err(error) => tracing::warn!(%error, "could not look for expired leases"),
        }
        // A customer's job outlives its deadline by a lease at most, unless its process died.
        let gone_before = now.saturating_sub(pool.config.lease_ms);
        match pool.store.purge_jobs(gone_before).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "forgot jobs whose customers are gone"),
            Err(error) => tracing::warn!(%error, "could not forget old jobs"),
        }
        let busy = pool.queue.leased() > 0;
        if was_busy && !busy {
            return_freed_memory();
        }
        was_busy = busy;
        // Until the first lease runs out; with none held, a lease taken now runs out a whole
        // lease from now at the earliest.
        let next = match pool.queue.next_expiry().await {
            Ok(Some(at)) => at.saturating_sub(now),
            Ok(None) => pool.config.lease_ms,
            Err(_) => 1000,
        };
        let nap = Duration::from_millis(next.min(pool.config.lease_ms)).max(MIN_NAP);
        let queue = Arc::clone(&pool.queue);
        drop(pool);
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = queue.went_idle() => {}
        }
    }
}

/// Raise this process's limit on open files (each connection is one) to the most the system
/// allows it; the limit now.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Windows has no such limit on sockets.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> u64 {
    u64::MAX
}

/// Hand memory the allocator keeps after a free back to the system: glibc keeps freed blocks
/// of its arenas for reuse, so a burst of requests would otherwise stay resident for good.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointers from us.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released,
        "the queue emptied: freed memory returned to the system"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

/// One node's earnings at a moment, in micro-credits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Earnings {
    /// Older than the settlement window: may be paid out.
    pub payable: u64,
    /// Inside the settlement window.
    pub pending: u64,
    /// Earned by a node since quarantined: not paid out.
    pub held: u64,
}

/// Every node's earnings at `now_unix_ms` under `settlement_ms`, by node id.
pub async fn earnings(
    store: &dyn PoolStore,
    settlement_ms: u64,
    now_unix_ms: u64,
) -> Result<Vec<(String, Earnings)>, StoreError> {
    let records: std::collections::HashMap<String, NodeRecord> =
        store.node_records().await?.into_iter().collect();
    let mut out = Vec::new();
    for (node, _) in store.balances().await? {
        let quarantined = records.get(&node).is_some_and(|r| r.quarantined.is_some());
        let mut earned = Earnings::default();
        let mut after = None;
        loop {
            let page = store.receipts_after(&node, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.receipt.sequence);
            for receipt in &page {
                let credits = receipt.receipt.payment.micro_credits;
                let bucket = if quarantined {
                    &mut earned.held
                } else if now_unix_ms.saturating_sub(receipt.receipt.issued_unix_ms) < settlement_ms
                {
                    &mut earned.pending
                } else {
                    &mut earned.payable
                };
                *bucket = bucket.saturating_add(credits);
            }
        }
        out.push((node, earned));
    }
    Ok(out)
}

/// What the pool owes each node, as CSV: `node_id,payable,pending,held` in micro-credits, one
/// line per node.
pub async fn payout_csv(store: &dyn PoolStore, settlement_ms: u64) -> Result<String, StoreError> {
    let mut csv =
        String::from("node_id,payable_micro_credits,pending_micro_credits,held_micro_credits\n");
    for (node, e) in earnings(store, settlement_ms, queue::now_unix_ms()).await? {
        // Node ids are hex; nothing needs quoting.
        csv.push_str(&format!("{node},{},{},{}\n", e.payable, e.pending, e.held));
    }
    Ok(csv)
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}
