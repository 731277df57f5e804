//! The worker: joins a pool, leases jobs this machine can run, runs them, heartbeats, submits,
//! and records each job and its receipt in the ledger before anyone is told.
//!
//! It stops leasing while the node is paused, gives a running job back when paused or told to
//! stop, and reconnects with backoff when the pool is away. After (re)joining it collects any
//! receipt it has not stored yet (`/node/v1/receipts`), so a crash between the pool paying and
//! the ledger writing loses nothing. Whatever a pool sends is checked: replies are size-capped
//! and parsed strictly, receipts must carry the pool's signature and follow the chain.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use hearth_inference::CancelToken;
use hearth_ledger::{JobOutcome, JobRecord, JobStatus, Ledger, LedgerError};
use hearth_protocol::{
    Challenge, HardwareProfile, Heartbeat, HeartbeatReply, Job, JobResult, KeyPair, LeaseReply,
    LeaseRequest, PROTOCOL_VERSION, PublicKey, ReceiptsReply, ReceiptsRequest, Registration,
    RegistrationReply, RequestSigner, ResultReply, ReturnJob, SessionSecret,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::executor::Executor;

use hearth_protocol::now_unix_ms as now_ms;

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

/// Load the node's key from `path`, or create it (mode 0600) on first run.
pub fn load_or_create_identity(path: &Path) -> Result<KeyPair, WorkerError> {
    let bad = |reason: String| WorkerError::Identity {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => KeyPair::from_secret_bytes(&bytes).map_err(|e| bad(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().map_err(|e| bad(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
            }
            write_private(path, &key.secret_bytes()).map_err(|e| bad(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

#[cfg(unix)]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The most a pool's reply may hold: a lease of a few jobs with images is well under this.
pub const MAX_REPLY_BYTES: usize = 32 << 20;

/// A signed HTTP client for one pool.
#[derive(Debug)]
pub struct PoolClient {
    url: String,
    http: reqwest::Client,
    /// Signs requests, or MACs them once the registration agreed on a session.
    signer: std::sync::RwLock<RequestSigner>,
}

impl PoolClient {
    /// A client for the pool at `url`, signing as `key`. HTTPS pools are checked against the
    /// system's roots and, when given, the PEM certificates of `extra_ca_pem` (a private pool's
    /// own CA).
    pub fn new(url: &str, key: KeyPair, extra_ca_pem: Option<&[u8]>) -> Result<Self, WorkerError> {
        let bad = |reason: String| WorkerError::Pool {
            url: url.to_owned(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            // Leases wait up to a minute; nothing else should take this long.
            .timeout(Duration::from_secs(90));
        if let Some(pem) = extra_ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| bad(format!("the pool CA file: {}", error_chain(&e))))?;
            if certificates.is_empty() {
                return Err(bad("the pool CA file holds no certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| bad(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            http,
            signer: std::sync::RwLock::new(RequestSigner::new(key)),
        })
    }

    fn signer(&self) -> std::sync::RwLockReadGuard<'_, RequestSigner> {
        self.signer.read().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's id.
    pub fn node_id(&self) -> String {
        self.signer().node_id().to_owned()
    }

    /// True once requests are authenticated by a session MAC rather than signatures.
    pub fn has_session(&self) -> bool {
        self.signer().has_session()
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, WorkerError> {
        let err = |reason: String| WorkerError::Pool {
            url: self.url.clone(),
            reason,
        };
        let bytes = serde_json::to_vec(body).map_err(|e| err(e.to_string()))?;
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(bytes.clone());
        let headers = self.signer().headers("POST", path, now_ms(), &bytes);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(|e| err(error_chain(&e)))?;
        let status = response.status();
        // Read at most MAX_REPLY_BYTES, whatever the pool claims or sends.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| err(e.to_string()))? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(err(format!(
                    "{path}: reply larger than {} MiB refused",
                    MAX_REPLY_BYTES >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            // The pool's own words where it sent an error body (a quarantine says why).
            let said = serde_json::from_slice::<hearth_protocol::ErrorBody>(&body)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            let reason = format!(
                "{path}: {status}: {}",
                said.chars().take(400).collect::<String>()
            );
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Err(WorkerError::Unauthorized {
                    url: self.url.clone(),
                    reason,
                });
            }
            return Err(err(reason));
        }
        serde_json::from_slice(&body).map_err(|e| err(format!("{path}: unreadable reply: {e}")))
    }

    /// Register with the node's hardware profile, quoting a fresh challenge from the pool and
    /// asking for a session: later requests carry a MAC instead of a signature when the pool
    /// grants one (signed with its key). With `pinned`, a pool answering with another key is
    /// refused before anything else happens.
    pub async fn register(
        &self,
        profile: HardwareProfile,
        pinned: Option<&PublicKey>,
    ) -> Result<RegistrationReply, WorkerError> {
        // Registration is always signed: it is the proof of holding the key.
        self.signer
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .end_session();
        let challenge: Challenge = self.post("/node/v1/challenge", &()).await?;
        let secret = SessionSecret::generate().ok();
        let registration = Registration {
            protocol_version: PROTOCOL_VERSION,
            challenge: challenge.challenge,
            public_key: self.signer().key().public_key(),
            profile,
            client: format!("hearth {}", env!("CARGO_PKG_VERSION")),
            session_key: secret.as_ref().map(SessionSecret::public),
        };
        let reply: RegistrationReply = self.post("/node/v1/register", &registration).await?;
        if let Some(pinned) = pinned
            && *pinned != reply.pool_public_key
        {
            return Err(WorkerError::PoolKeyChanged {
                url: self.url.clone(),
                pinned: pinned.0.clone(),
                got: reply.pool_public_key.0.clone(),
            });
        }
        if let (Some(secret), Some(grant)) = (&secret, &reply.session) {
            let started = self
                .signer
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .start_session(secret, grant, &reply.pool_public_key);
            if let Err(error) = started {
                tracing::warn!(%error, "the pool's session grant does not check out; signing every request");
            }
        }
        Ok(reply)
    }
}

/// An error and every cause under it, so a refused certificate says why ("invalid peer
/// certificate: UnknownIssuer") instead of only "error sending request".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
        }
    }
}

/// What the worker reports as it goes; [`crate::Service`] turns these into node events.
#[derive(Clone, Debug)]
pub enum WorkerEvent {
    /// Registered with the pool.
    Joined {
        pool_name: String,
        demo: bool,
        terms: Option<hearth_protocol::PayoutTerms>,
    },
    /// The pool could not be reached or refused us; the worker retries.
    PoolUnreachable { error: String },
    /// A job was leased and recorded as running.
    JobStarted(JobRecord),
    /// A job ended and is durable in the ledger.
    JobEnded(JobRecord),
    /// Receipts the node had missed were collected and stored.
    ReceiptsCollected { count: usize },
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
    events: Box<dyn Fn(WorkerEvent) + Send + Sync>,
    energy: Option<Arc<EnergyMeter>>,
    /// Jobs computing or submitting. A job frees its slot once the pool has its result, so
    /// the next lease overlaps the ledger write.
    busy: std::sync::atomic::AtomicUsize,
    slot_freed: tokio::sync::Notify,
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
    if pinned.is_none() {
        // Trust on first use: this pool's key from now on.
        ledger.set_setting(&pin_setting, &joined.pool_public_key)?;
    }
    ledger.set_setting(POOL_KEY_SETTING, &joined.pool_public_key)?;
    events(WorkerEvent::Joined {
        pool_name: joined.pool_name.clone(),
        demo: joined.demo,
        terms: joined.terms.clone(),
    });
    let context = Arc::new(Context {
        config,
        client,
        executor,
        ledger,
        pool_key: joined.pool_public_key,
        profile,
        events: Box::new(events),
        energy,
        busy: std::sync::atomic::AtomicUsize::new(0),
        slot_freed: tokio::sync::Notify::new(),
    });
    if let Err(error) = collect_receipts(&context).await {
        tracing::warn!(%error, "could not collect missed receipts; will try after the next job");
    }

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
        if leasing.is_none() && !stopping && !is_paused && free > 0 {
            let context = Arc::clone(&context);
            leasing = Some(tokio::spawn(async move {
                let request = LeaseRequest {
                    max_jobs: free as u32,
                    wait_ms: context.config.lease_wait.as_millis() as u64,
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
                        }
                    });
                }
            }
            () = context.slot_freed.notified() => {}
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

/// Why a job stopped before it finished.
enum Interrupted {
    Paused,
    Stopping,
    CancelledByPool,
}

async fn run_job(
    context: &Context,
    job: Job,
    slot: Slot<'_>,
    mut paused: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let started = now_ms();
    let record = context
        .ledger
        .start_job(&job.id, &job.model, job.task.name(), started)?;
    // The start reaches the disk while the job runs, not before it.
    let flush_start = {
        let ledger = Arc::clone(&context.ledger);
        tokio::task::spawn_blocking(move || ledger.flush())
    };
    (context.events)(WorkerEvent::JobStarted(record));
    let cancel = CancelToken::new();
    let streamed = Arc::new(Mutex::new(String::new()));
    let work = {
        let (executor, job, cancel, streamed) = (
            Arc::clone(&context.executor),
            job.clone(),
            cancel.clone(),
            Arc::clone(&streamed),
        );
        tokio::task::spawn_blocking(move || {
            executor.run(&job.model, &job.task, &cancel, &mut |text| {
                streamed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(text);
            })
        })
    };
    tokio::pin!(work);
    // The first heartbeat is due one period in (an interval's first tick would fire at once
    // and cost every short job a round trip).
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + context.config.heartbeat,
        context.config.heartbeat,
    );
    let mut interrupted = None;
    let mut give_back_at: Option<tokio::time::Instant> = None;
    let output = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = tick.tick() => {
                let delta = std::mem::take(&mut *streamed.lock().unwrap_or_else(|e| e.into_inner()));
                let beat = Heartbeat { lease_id: job.lease_id.clone(), text_delta: delta };
                let reply: Result<HeartbeatReply, _> = context.client.post(&format!("/node/v1/jobs/{}/heartbeat", job.id), &beat).await;
                if let Ok(reply) = reply && reply.cancel {
                    cancel.cancel();
                    interrupted.get_or_insert(Interrupted::CancelledByPool);
                }
            }
            Ok(()) = paused.changed(), if interrupted.is_none() && give_back_at.is_none() => {
                if *paused.borrow() {
                    // The owner needs the GPU: a job that ends within the grace period
                    // finishes (and is paid); one that does not is stopped and given back.
                    give_back_at = Some(tokio::time::Instant::now() + context.config.pause_grace);
                }
            }
            () = async {
                match give_back_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if interrupted.is_none() && give_back_at.is_some() => {
                give_back_at = None;
                if *paused.borrow() {
                    cancel.cancel();
                    interrupted = Some(Interrupted::Paused);
                }
            }
            Ok(()) = stop.changed(), if interrupted.is_none() => {
                if *stop.borrow() {
                    cancel.cancel();
                    interrupted = Some(Interrupted::Stopping);
                }
            }
        }
    };
    let ended = now_ms();
    if let Ok(Err(error)) = flush_start.await {
        tracing::warn!(job = %job.id, %error, "could not flush the job's start");
    }
    let (energy_wh, energy_estimated) = match &context.energy {
        Some(meter) => meter(started, ended).map_or((None, false), |(wh, est)| (Some(wh), est)),
        None => (None, false),
    };
    let output = match (output, interrupted) {
        (Ok(Ok(output)), None) => output,
        (other, interrupted) => {
            let (status, reason) = match (interrupted, other) {
                (Some(Interrupted::Paused), _) => {
                    (JobStatus::Returned, "paused for the owner".to_owned())
                }
                (Some(Interrupted::Stopping), _) => {
                    (JobStatus::Returned, "Hearth is stopping".to_owned())
                }
                (Some(Interrupted::CancelledByPool), _) => (
                    JobStatus::Returned,
                    "the customer cancelled the request".to_owned(),
                ),
                (None, Ok(Err(e))) => (JobStatus::Failed, e.to_string()),
                (None, Err(e)) => (JobStatus::Failed, format!("the job crashed: {e}")),
                (None, Ok(Ok(_))) => (JobStatus::Failed, "no output".to_owned()),
            };
            give_back(context, &job, &reason).await;
            let record = context.ledger.finish_job(
                &job.id,
                JobOutcome {
                    status,
                    ended_unix_ms: ended,
                    energy_wh,
                    energy_estimated,
                    receipt: None,
                    note: Some(reason),
                },
                &context.pool_key,
            )?;
            (context.events)(WorkerEvent::JobEnded(record));
            return Ok(());
        }
    };
    // Text produced since the last heartbeat goes out before the result.
    let delta = std::mem::take(&mut *streamed.lock().unwrap_or_else(|e| e.into_inner()));
    if !delta.is_empty() {
        let beat = Heartbeat {
            lease_id: job.lease_id.clone(),
            text_delta: delta,
        };
        // The result carries the whole text anyway: a lost last beat only delays the stream.
        let sent: Result<HeartbeatReply, _> = context
            .client
            .post(&format!("/node/v1/jobs/{}/heartbeat", job.id), &beat)
            .await;
        if let Err(error) = sent {
            tracing::warn!(job = %job.id, %error, "the last streamed text did not reach the pool before the result");
        }
    }
    let result = JobResult {
        lease_id: job.lease_id.clone(),
        output,
        started_unix_ms: started,
        finished_unix_ms: ended,
        energy_wh,
        energy_estimated,
        next: None,
    };
    let outcome = |status, receipt, note: Option<String>| JobOutcome {
        status,
        ended_unix_ms: ended,
        energy_wh,
        energy_estimated,
        receipt,
        note,
    };
    let path = format!("/node/v1/jobs/{}/result", job.id);
    let mut attempt = 0;
    let reply: ResultReply = loop {
        match context.client.post(&path, &result).await {
            Ok(reply) => break reply,
            Err(error) if attempt < 3 && !*stop.borrow() => {
                attempt += 1;
                tracing::warn!(job = %job.id, %error, attempt, "result not delivered; retrying");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            Err(error) => {
                // The pool is gone (or refuses the result): nothing is owed for it. If it did
                // pay after all, the receipt is collected when the node next joins.
                let record = context.ledger.finish_job(
                    &job.id,
                    outcome(
                        JobStatus::Failed,
                        None,
                        Some(format!("result not delivered: {error}")),
                    ),
                    &context.pool_key,
                )?;
                (context.events)(WorkerEvent::JobEnded(record));
                return Err(error);
            }
        }
    };
    // Throttled: the slot rests in proportion to the compute time (a `d`% duty cycle), and
    // the ledger write below overlaps the rest. Stopping ends the rest at once.
    let duty = context
        .config
        .duty_percent
        .as_ref()
        .map_or(100, |duty| *duty.borrow());
    let rest = rest_after(Duration::from_millis(ended.saturating_sub(started)), duty);
    let rest_until = tokio::time::Instant::now() + rest;
    let hold_slot = if rest.is_zero() {
        drop(slot);
        None
    } else {
        Some(slot)
    };
    let note = reply
        .pending_verification
        .then(|| "paid once another node confirms the result".to_owned());
    let record = match context.ledger.finish_job(
        &job.id,
        outcome(JobStatus::Completed, reply.receipt.clone(), note),
        &context.pool_key,
    ) {
        Ok(record) => record,
        Err(LedgerError::BadReceipt { reason, .. }) => {
            // Either an earlier receipt is missing (collect them, this one included) or the
            // pool sent one that does not verify: keep the job, refuse the receipt.
            let collected = collect_receipts(context).await;
            let stored = context
                .ledger
                .job(&job.id)?
                .is_some_and(|r| r.receipt.is_some());
            if collected.is_ok() && stored {
                return Ok(());
            }
            tracing::error!(job = %job.id, %reason, "the pool's receipt was refused");
            context.ledger.finish_job(
                &job.id,
                outcome(
                    JobStatus::Completed,
                    None,
                    Some(format!("receipt refused: {reason}")),
                ),
                &context.pool_key,
            )?
        }
        Err(error) => return Err(error.into()),
    };
    (context.events)(WorkerEvent::JobEnded(record));
    if let Some(slot) = hold_slot {
        // The rest also ends when the throttle is lifted (the owner went away).
        let mut duty = context.config.duty_percent.clone();
        let unthrottled = async {
            match duty.as_mut() {
                Some(duty) => {
                    let _ = duty.wait_for(|percent| *percent >= 100).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(rest_until) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
            () = unthrottled => {}
        }
        drop(slot);
    }
    Ok(())
}

/// How long to rest after computing for `busy` so that computing takes `duty_percent` of the
/// time (no rest at 100; at most a minute, so one long job does not stall the node).
fn rest_after(busy: Duration, duty_percent: u8) -> Duration {
    let duty = u32::from(duty_percent.clamp(1, 100));
    (busy * (100 - duty) / duty).min(Duration::from_secs(60))
}
