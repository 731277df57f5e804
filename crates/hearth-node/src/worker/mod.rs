//! The worker: joins a pool, leases jobs this machine can run, runs them, heartbeats, submits,
//! and records each job and its receipt in the ledger before anyone is told.
//!
//! It stops leasing while the node is paused, gives a running job back when paused or told to
//! stop, and reconnects with backoff when the pool is away. After (re)joining it collects any
//! receipt it has not stored yet (`/node/v1/receipts`), so a crash between the pool paying and
//! the ledger writing loses nothing. Whatever a pool sends is checked: replies are size-capped
//! and parsed strictly, receipts must carry the pool's signature and follow the chain.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use hearth_ledger::{JobRecord, Ledger};
use hearth_protocol::{
    HardwareProfile, Job, KeyPair, LeaseReply, LeaseRequest, PublicKey, ReceiptsReply,
    ReceiptsRequest, ReturnJob,
};
use tokio::sync::watch;

use crate::executor::Executor;

mod fetching;
mod identity;
mod job;
mod pool_client;
mod trouble;

pub use identity::load_or_create_identity;
use job::run_job;
pub use pool_client::{MAX_REPLY_BYTES, PoolClient};

/// Why the worker could not go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("pool at {url}: {reason}")]
    Pool { url: String, reason: String },
    /// The pool does not know this node (it restarted) or its session: register again.
    #[error("pool at {url} refused the node: {reason}")]
    Unauthorized { url: String, reason: String },
    #[error("identity key {path}: {reason}")]
    Identity { path: String, reason: String },
    /// The pool answers with another key than the one this node pinned for it: someone else
    /// may be answering at its address. The node does not work for it.
    #[error(
        "the pool at {url} now signs with key {got}, not the key {pinned} this node trusts for it; refusing to work for it (if the operator really changed keys, remove the pin in Settings or set pool_key in the config)"
    )]
    PoolKeyChanged {
        url: String,
        pinned: String,
        got: String,
    },
    #[error(transparent)]
    Ledger(#[from] hearth_ledger::LedgerError),
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub pool_url: String,
    /// The pool's key as the owner gave it; else the key first seen at this URL is pinned.
    pub pool_key: Option<PublicKey>,
    /// PEM certificates to trust for an HTTPS pool beside the system's roots.
    pub pool_ca_pem: Option<Vec<u8>>,
    /// Longest a lease request waits for work.
    pub lease_wait: Duration,
    /// How often a running job heartbeats (and streams its text).
    pub heartbeat: Duration,
    /// On a pause, a running job that ends within this long finishes; others are given back.
    pub pause_grace: Duration,
    /// Jobs run at once (the models share one device; 1 keeps latency lowest).
    pub concurrency: usize,
    /// The share of the time to compute, in percent (the node's throttle); after a job that
    /// computed for `t`, its slot rests `t × (100 − d) / d` before the next lease. `None`:
    /// always 100.
    pub duty_percent: Option<watch::Receiver<u8>>,
    /// Disk the models' files may take; a model the pool sells that would not fit is not
    /// fetched.
    pub model_disk_bytes: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            pool_url: String::new(),
            pool_key: None,
            pool_ca_pem: None,
            lease_wait: Duration::from_secs(10),
            heartbeat: Duration::from_millis(250),
            pause_grace: Duration::from_secs(1),
            concurrency: 1,
            duty_percent: None,
            model_disk_bytes: 20 << 30,
        }
    }
}

/// What the worker reports as it goes; [`crate::RunningNode`] turns these into node events.
#[derive(Clone, Debug)]
pub enum WorkerEvent {
    /// Registered with the pool.
    Joined {
        pool_name: String,
        demo: bool,
        terms: Option<hearth_protocol::PayoutTerms>,
        /// The newest release the pool knows of.
        release: Option<hearth_protocol::ReleaseNotice>,
        /// The models the node registered (those it can run now).
        serving: Vec<String>,
    },
    /// The pool could not be reached or refused us; the worker retries.
    PoolUnreachable { error: String },
    /// A job was leased and recorded as running.
    JobStarted(JobRecord),
    /// A job ended and is durable in the ledger.
    JobEnded(JobRecord),
    /// Receipts the node had missed were collected and stored.
    ReceiptsCollected { count: usize },
    /// The ledger could not write (a full or failing disk): the node pauses until it can.
    StorageFailed(crate::storage::WriteFailure),
    /// What keeps work from running as it should, in words (a damaged model being fetched
    /// again, jobs failing in a row); empty when nothing does. Sent when it changes.
    Notices(Vec<String>),
    /// The models being fetched from the pool, and how far each is (empty once all are
    /// here). Sent a few times a second at most.
    Downloads(Vec<crate::status::ModelDownload>),
    /// The models the node runs changed (one fetched from the pool).
    Serving(Vec<String>),
}

/// Measures a job's energy from `start` to `end` (Unix ms): watt-hours and whether estimated.
pub type EnergyMeter = dyn Fn(u64, u64) -> Option<(f64, bool)> + Send + Sync;

/// The parts every job needs, shared by the jobs in flight.
struct Context {
    config: WorkerConfig,
    client: PoolClient,
    executor: Arc<Executor>,
    ledger: Arc<Ledger>,
    pool_key: PublicKey,
    /// What the node registered with, to register again after the pool forgot it.
    profile: HardwareProfile,
    events: Arc<dyn Fn(WorkerEvent) + Send + Sync>,
    /// Damaged models and failures in a row.
    trouble: Arc<trouble::Trouble>,
    energy: Option<Arc<EnergyMeter>>,
    /// Jobs computing or submitting. A job frees its slot once the pool has its result, so
    /// the next lease overlaps the ledger write.
    busy: std::sync::atomic::AtomicUsize,
    slot_freed: tokio::sync::Notify,
    /// A ledger write failed since receipts were last collected: a receipt the pool issued
    /// may be missing, so they are collected before the next lease.
    receipts_owed: std::sync::atomic::AtomicBool,
}

impl Context {
    /// Note what a failure means for the node: a ledger that cannot write pauses it (and
    /// receipts are collected once it works again).
    fn report(&self, error: &WorkerError) {
        if let WorkerError::Ledger(error) = error {
            self.receipts_owed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(failure) = crate::storage::WriteFailure::from_ledger(error) {
                (self.events)(WorkerEvent::StorageFailed(failure));
            }
        }
    }
}

/// One job's claim on a concurrency slot; released when dropped.
struct Slot<'a>(&'a Context);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.slot_freed.notify_one();
    }
}

/// The ledger setting that remembers which pool signed the receipts (for `ledger verify`).
pub const POOL_KEY_SETTING: &str = "pool_public_key";

/// The ledger setting that pins the key of the pool at `url` (trust on first use).
pub fn pool_key_pin_setting(url: &str) -> String {
    format!("pool_key_pin/{}", url.trim_end_matches('/'))
}

/// Run the worker until `stop` turns true. `paused` true means: lease nothing, give back what
/// runs. Each ended job is in `ledger` before `events` hears of it.
#[allow(clippy::too_many_arguments)] // the worker's parts, handed over once
pub async fn run(
    config: WorkerConfig,
    key: KeyPair,
    executor: Arc<Executor>,
    ledger: Arc<Ledger>,
    mut paused: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    energy: Option<Arc<EnergyMeter>>,
    events: impl Fn(WorkerEvent) + Send + Sync + 'static,
) -> Result<(), WorkerError> {
    let client = PoolClient::new(&config.pool_url, key, config.pool_ca_pem.as_deref())?;
    let profile = HardwareProfile {
        backend: executor.device().backend.to_string(),
        device: executor.device().describe(),
        memory_bytes: 0,
        models: executor.available_models(),
        matmul_gflops: None,
    };
    let pin_setting = pool_key_pin_setting(&config.pool_url);
    let pinned: Option<PublicKey> = match &config.pool_key {
        Some(key) => Some(key.clone()),
        None => ledger.setting(&pin_setting)?,
    };
    let mut backoff = Backoff::new();
    let joined = loop {
        match client.register(profile.clone(), pinned.as_ref()).await {
            Ok(reply) => break reply,
            Err(error) => {
                tracing::warn!(%error, "pool not reachable; retrying");
                events(WorkerEvent::PoolUnreachable {
                    error: error.to_string(),
                });
                tokio::select! {
                    () = backoff.wait() => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    };
    tracing::info!(node = %client.node_id(), pool = %joined.pool_name, session = client.has_session(), "joined the pool");
    events(WorkerEvent::Joined {
        pool_name: joined.pool_name.clone(),
        demo: joined.demo,
        terms: joined.terms.clone(),
        release: joined.release.clone(),
        serving: profile.models.clone(),
    });
    let events: Arc<dyn Fn(WorkerEvent) + Send + Sync> = Arc::new(events);
    let context = Arc::new(Context {
        config,
        client,
        executor,
        ledger,
        pool_key: joined.pool_public_key,
        profile,
        trouble: Arc::new(trouble::Trouble::new(Arc::clone(&events))),
        events,
        energy,
        busy: std::sync::atomic::AtomicUsize::new(0),
        slot_freed: tokio::sync::Notify::new(),
        receipts_owed: std::sync::atomic::AtomicBool::new(false),
    });
    // Trust on first use: this pool's key from now on. (A ledger that cannot write pauses the
    // node; the pin is stored at the next join.)
    let pinned_now = match pinned {
        None => context.ledger.set_setting(&pin_setting, &context.pool_key),
        Some(_) => Ok(()),
    };
    for written in [
        pinned_now,
        context
            .ledger
            .set_setting(POOL_KEY_SETTING, &context.pool_key),
    ] {
        if let Err(error) = written {
            tracing::error!(%error, "could not store the pool's key");
            context.report(&error.into());
        }
    }
    if let Err(error) = collect_receipts(&context).await {
        tracing::warn!(%error, "could not collect missed receipts; will try after the next job");
        context.report(&error);
    }

    // The models the pool sells that this computer lacks are fetched meanwhile.
    let _fetching = fetching::Fetching::start(Arc::clone(&context));

    let mut running: JoinSet<()> = JoinSet::new();
    // One lease request at a time, never dropped half-way (the pool may already have handed
    // us jobs): it runs as its own task and is always awaited.
    let mut leasing: Option<tokio::task::JoinHandle<Result<LeaseReply, WorkerError>>> = None;
    loop {
        let stopping = *stop.borrow();
        let is_paused = *paused.borrow();
        let free = context
            .config
            .concurrency
            .max(1)
            .saturating_sub(context.busy.load(std::sync::atomic::Ordering::SeqCst));
        let failure_wait = context.trouble.lease_wait();
        if leasing.is_none() && !stopping && !is_paused && free > 0 && failure_wait.is_none() {
            if context
                .receipts_owed
                .swap(false, std::sync::atomic::Ordering::SeqCst)
                && let Err(error) = collect_receipts(&context).await
            {
                tracing::warn!(%error, "could not collect missed receipts");
                context.report(&error);
            }
            let context = Arc::clone(&context);
            leasing = Some(tokio::spawn(async move {
                // What the node can run now, where that is not what it registered: a model
                // found damaged is left out until it is fetched again, one fetched from the
                // pool since is added.
                let available = context.executor.available_models();
                let models = (available != context.profile.models).then_some(available);
                let request = LeaseRequest {
                    max_jobs: free as u32,
                    wait_ms: context.config.lease_wait.as_millis() as u64,
                    models,
                };
                context.client.post("/node/v1/lease", &request).await
            }));
        }
        if stopping && leasing.is_none() && running.is_empty() {
            return Ok(());
        }
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(error) = done {
                    tracing::error!(%error, "a job task failed");
                }
            }
            reply = async {
                match leasing.as_mut() {
                    Some(lease) => lease.await,
                    None => std::future::pending().await,
                }
            }, if leasing.is_some() => {
                leasing = None;
                let jobs = match reply {
                    Ok(Ok(reply)) => {
                        backoff.reset();
                        reply.jobs
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "lease failed; retrying");
                        (context.events)(WorkerEvent::PoolUnreachable { error: error.to_string() });
                        tokio::select! {
                            () = backoff.wait() => {}
                            _ = stop.changed() => {}
                        }
                        if matches!(error, WorkerError::Unauthorized { .. }) {
                            rejoin(&context).await;
                        }
                        Vec::new()
                    }
                    Err(error) => {
                        tracing::error!(%error, "the lease task failed");
                        Vec::new()
                    }
                };
                for job in jobs {
                    if *stop.borrow() || *paused.borrow() {
                        give_back(&context, &job, "the node is pausing").await;
                        continue;
                    }
                    let (context, paused, stop) = (Arc::clone(&context), paused.clone(), stop.clone());
                    context.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    running.spawn(async move {
                        let id = job.id.clone();
                        let slot = Slot(&context);
                        if let Err(error) = run_job(&context, job, slot, paused, stop).await {
                            tracing::warn!(job = %id, %error, "job did not complete");
                            context.report(&error);
                        }
                    });
                }
            }
            () = context.slot_freed.notified() => {}
            // Jobs failed in a row: the next lease waits its turn.
            () = tokio::time::sleep(failure_wait.unwrap_or_default()), if failure_wait.is_some() && leasing.is_none() => {}
            Ok(()) = paused.changed() => {}
            Ok(()) = stop.changed() => {}
            // Nothing running, nothing leasing, and no one can pause or stop us any more.
            else => return Ok(()),
        }
    }
}

/// Register again after the pool stopped knowing this node (a pool restart forgets nodes and
/// their sessions). Receipts the pool issued meanwhile are collected after.
async fn rejoin(context: &Context) {
    match context
        .client
        .register(context.profile.clone(), Some(&context.pool_key))
        .await
    {
        Ok(_) => {
            tracing::info!(
                session = context.client.has_session(),
                "joined the pool again"
            );
            if let Err(error) = collect_receipts(context).await {
                tracing::warn!(%error, "could not collect missed receipts");
                context.report(&error);
            }
        }
        Err(error) => tracing::warn!(%error, "could not register again; will retry"),
    }
}

/// Exponential backoff from 250 ms to 30 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(250))
    }
    fn reset(&mut self) {
        self.0 = Duration::from_millis(250);
    }
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }
}

/// Store every receipt the pool issued after the ledger's chain head.
async fn collect_receipts(context: &Context) -> Result<usize, WorkerError> {
    let mut collected = 0;
    loop {
        let after = context.ledger.chain_head()?.map(|h| h.receipt.sequence);
        let reply: ReceiptsReply = context
            .client
            .post(
                "/node/v1/receipts",
                &ReceiptsRequest {
                    after_sequence: after,
                    limit: 500,
                },
            )
            .await?;
        if reply.receipts.is_empty() {
            break;
        }
        for receipt in reply.receipts {
            let record = context
                .ledger
                .record_late_receipt(receipt, &context.pool_key)?;
            tracing::info!(job = %record.job_id, credits = record.micro_credits, "collected a missed receipt");
            collected += 1;
            (context.events)(WorkerEvent::JobEnded(record));
        }
    }
    if collected > 0 {
        (context.events)(WorkerEvent::ReceiptsCollected { count: collected });
    }
    Ok(collected)
}

async fn give_back(context: &Context, job: &Job, reason: &str) {
    let reply: Result<serde_json::Value, _> = context
        .client
        .post(
            &format!("/node/v1/jobs/{}/return", job.id),
            &ReturnJob {
                lease_id: job.lease_id.clone(),
                reason: reason.to_owned(),
            },
        )
        .await;
    if let Err(error) = reply {
        // The lease will expire at the pool and the job run elsewhere.
        tracing::warn!(job = %job.id, %error, "could not give the job back");
    }
}

/// How long to rest after computing for `busy` so that computing takes `duty_percent` of the
/// time (no rest at 100; at most a minute, so one long job does not stall the node).
fn rest_after(busy: Duration, duty_percent: u8) -> Duration {
    let duty = u32::from(duty_percent.clamp(1, 100));
    (busy * (100 - duty) / duty).min(Duration::from_secs(60))
}
