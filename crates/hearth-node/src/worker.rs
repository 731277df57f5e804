//! The worker: joins a pool, leases jobs this machine can run, runs them, heartbeats, submits,
//! and records each job and its receipt in the ledger before anyone is told.
//!
//! It stops leasing while the node is paused, gives a running job back when told to stop, and
//! reconnects with backoff when the pool is away.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_inference::CancelToken;
use hearth_ledger::{JobOutcome, JobStatus, Ledger};
use hearth_protocol::{
    HardwareProfile, Heartbeat, HeartbeatReply, Job, JobResult, KeyPair, LeaseReply, LeaseRequest,
    PROTOCOL_VERSION, PublicKey, Registration, RegistrationReply, RequestSigner, ResultReply,
    ReturnJob, TaskPayload,
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
    #[error("identity key {path}: {reason}")]
    Identity { path: String, reason: String },
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
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A signed HTTP client for one pool.
#[derive(Debug)]
pub struct PoolClient {
    url: String,
    http: reqwest::Client,
    signer: RequestSigner,
}

impl PoolClient {
    /// A client for the pool at `url`, signing as `key`.
    pub fn new(url: &str, key: KeyPair) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            signer: RequestSigner::new(key),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.signer.node_id()
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
        for (name, value) in self.signer.headers("POST", path, now_ms(), &bytes) {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| err(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| err(e.to_string()))?;
        if !status.is_success() {
            return Err(err(format!(
                "{path}: {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        serde_json::from_str(&text).map_err(|e| err(format!("{path}: unreadable reply: {e}")))
    }

    /// Register with the node's hardware profile.
    pub async fn register(
        &self,
        profile: HardwareProfile,
    ) -> Result<RegistrationReply, WorkerError> {
        let registration = Registration {
            protocol_version: PROTOCOL_VERSION,
            public_key: self.signer.key().public_key(),
            profile,
            client: format!("hearth {}", env!("CARGO_PKG_VERSION")),
        };
        self.post("/node/v1/register", &registration).await
    }
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub pool_url: String,
    /// Longest a lease request waits for work.
    pub lease_wait: Duration,
    /// How often a running job heartbeats (and streams its text).
    pub heartbeat: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            pool_url: String::new(),
            lease_wait: Duration::from_secs(10),
            heartbeat: Duration::from_millis(250),
        }
    }
}

/// Run the worker until `stop` turns true. `paused` true means: finish nothing new, lease
/// nothing. Each finished job is in `ledger` before `on_job` hears of it.
pub async fn run(
    config: WorkerConfig,
    key: KeyPair,
    executor: Arc<Executor>,
    ledger: Arc<Ledger>,
    mut paused: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    on_job: impl Fn(&hearth_ledger::JobRecord) + Send + Sync + 'static,
) -> Result<(), WorkerError> {
    let client = PoolClient::new(&config.pool_url, key);
    let models = executor.available_models();
    let profile = HardwareProfile {
        backend: executor.device().backend.to_string(),
        device: executor.device().describe(),
        memory_bytes: 0,
        models,
        matmul_gflops: None,
    };
    let mut backoff = Duration::from_millis(250);
    let pool_key: PublicKey = loop {
        match client.register(profile.clone()).await {
            Ok(reply) => break reply.pool_public_key,
            Err(error) => {
                tracing::warn!(%error, "pool not reachable; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    tracing::info!(node = client.node_id(), "joined the pool");
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if *paused.borrow() {
            tokio::select! {
                _ = paused.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let request = LeaseRequest {
            max_jobs: 1,
            wait_ms: config.lease_wait.as_millis() as u64,
        };
        let reply: Result<LeaseReply, _> = tokio::select! {
            reply = client.post("/node/v1/lease", &request) => reply,
            _ = stop.changed() => return Ok(()),
            _ = paused.changed() => continue,
        };
        let jobs = match reply {
            Ok(reply) => {
                backoff = Duration::from_millis(250);
                reply.jobs
            }
            Err(error) => {
                tracing::warn!(%error, "lease failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        for job in jobs {
            if let Err(error) = run_job(
                &config,
                &client,
                &executor,
                &ledger,
                &pool_key,
                &job,
                &on_job,
                &mut paused,
            )
            .await
            {
                tracing::warn!(job = %job.id, %error, "job did not complete");
            }
        }
    }
}

fn task_name(task: &TaskPayload) -> &'static str {
    match task {
        TaskPayload::Embeddings { .. } => "embeddings",
        TaskPayload::Chat { .. } => "chat",
        TaskPayload::ImageClassification { .. } => "image_classification",
        TaskPayload::ChatScore { .. } => "chat_score",
    }
}

#[allow(clippy::too_many_arguments)] // the worker's parts, passed down once
async fn run_job(
    config: &WorkerConfig,
    client: &PoolClient,
    executor: &Arc<Executor>,
    ledger: &Arc<Ledger>,
    pool_key: &PublicKey,
    job: &Job,
    on_job: &(impl Fn(&hearth_ledger::JobRecord) + Send + Sync),
    paused: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let started = now_ms();
    ledger.start_job(&job.id, &job.model, task_name(&job.task), started)?;
    let cancel = CancelToken::new();
    let streamed = Arc::new(Mutex::new(String::new()));
    let work = {
        let (executor, job, cancel, streamed) = (
            Arc::clone(executor),
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
    let mut tick = tokio::time::interval(config.heartbeat);
    let mut returned = false;
    let output = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = tick.tick() => {
                let delta = std::mem::take(&mut *streamed.lock().unwrap_or_else(|e| e.into_inner()));
                let beat = Heartbeat { lease_id: job.lease_id.clone(), text_delta: delta };
                let reply: Result<HeartbeatReply, _> = client.post(&format!("/node/v1/jobs/{}/heartbeat", job.id), &beat).await;
                if let Ok(reply) = reply && reply.cancel {
                    cancel.cancel();
                    returned = true;
                }
            }
            _ = paused.changed() => {
                if *paused.borrow() {
                    // The owner needs the GPU: stop and give the job back.
                    cancel.cancel();
                    returned = true;
                }
            }
        }
    };
    let ended = now_ms();
    let output = match output {
        Ok(Ok(output)) if !returned => output,
        other => {
            let reason = match other {
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(_)) => "paused".into(),
            };
            let _: Result<serde_json::Value, _> = client
                .post(
                    &format!("/node/v1/jobs/{}/return", job.id),
                    &ReturnJob {
                        lease_id: job.lease_id.clone(),
                        reason: reason.clone(),
                    },
                )
                .await;
            let status = if returned {
                JobStatus::Returned
            } else {
                JobStatus::Failed
            };
            let record = ledger.finish_job(
                &job.id,
                JobOutcome {
                    status,
                    ended_unix_ms: ended,
                    energy_wh: None,
                    energy_estimated: false,
                    receipt: None,
                    note: Some(reason),
                },
                pool_key,
            )?;
            on_job(&record);
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
        let _: Result<HeartbeatReply, _> = client
            .post(&format!("/node/v1/jobs/{}/heartbeat", job.id), &beat)
            .await;
    }
    let result = JobResult {
        lease_id: job.lease_id.clone(),
        output,
        started_unix_ms: started,
        finished_unix_ms: ended,
        energy_wh: None,
        energy_estimated: false,
        next: None,
    };
    let reply: ResultReply = client
        .post(&format!("/node/v1/jobs/{}/result", job.id), &result)
        .await?;
    let note = reply
        .pending_verification
        .then(|| "paid once another node confirms the result".to_owned());
    let record = ledger.finish_job(
        &job.id,
        JobOutcome {
            status: JobStatus::Completed,
            ended_unix_ms: ended,
            energy_wh: None,
            energy_estimated: false,
            receipt: reply.receipt,
            note,
        },
        pool_key,
    )?;
    on_job(&record);
    Ok(())
}
