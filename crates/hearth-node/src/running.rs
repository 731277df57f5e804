//! [`RunningNode`]: a whole node at work — ledger, identity, worker, telemetry, the pause
//! watcher and, when the settings ask for it, the embedded demo pool. The tray program and the
//! headless server each start one and talk to it (and its [`Node`]) in-process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_hardware::{Nvml, PlatformGpus, Sampler};
use hearth_inference::{BackendPreference, ComputeBackend, ComputeDevice, ModelStore};
use hearth_ledger::Ledger;
use hearth_protocol::now_unix_ms;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Node;
use crate::config::{EMBEDDED_POOL, NodeConfig};
use crate::earnings::{earnings, earnings_report, expected_earnings, job_page};
use crate::executor::Executor;
use crate::pause::follower::{follow_pause_state, record_state_changes, watcher_config};
use crate::resources::{energy_between, forward_telemetry, live_telemetry};
use crate::status::{Earnings, JobSummary, NewVersion, NodeEvent, Overview, PoolStatus, Telemetry};
use crate::storage::StorageHealth;
use crate::worker::{self, WorkerConfig, WorkerError, WorkerEvent};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data folder {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("the ledger in {path} did not open: {source}")]
    Ledger {
        path: String,
        source: hearth_ledger::LedgerError,
    },
    #[error("the embedded pool did not start: {0}")]
    EmbeddedPool(String),
    #[error("no compute device: {0}")]
    Device(String),
    #[error("the pool CA file {file}: {reason}")]
    PoolCa { file: String, reason: String },
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Ledger, identity key, settings and the embedded pool's database live here.
    pub data_dir: PathBuf,
    pub config: NodeConfig,
    /// Where model weights are.
    pub models: ModelStore,
    /// Sample GPU and host telemetry once a second (energy per job, live charts).
    pub telemetry: bool,
}

impl StartOptions {
    /// The settings in `data_dir`'s `config.toml`, models from the store for that data folder
    /// ([`ModelStore::for_data_dir`]).
    pub fn from_data_dir(data_dir: &Path) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            data_dir: data_dir.to_owned(),
            config: NodeConfig::load(data_dir)?,
            models: ModelStore::for_data_dir(data_dir),
            telemetry: true,
        })
    }
}

/// A running node. Dropping it stops the worker abruptly; call [`RunningNode::shutdown`] to give
/// running jobs back first.
#[derive(Debug)]
pub struct RunningNode {
    node: Node,
    ledger: Arc<Ledger>,
    node_id: String,
    device: String,
    pool: watch::Sender<PoolStatus>,
    /// The demo pool, when the settings ask for it: held for as long as the node runs
    /// (dropping it stops it).
    _demo_pool: Option<crate::demo_pool::DemoPool>,
    sampler: Option<Arc<Sampler>>,
    /// Runs the jobs; asked what its models hold for the live GPU card.
    executor: Arc<Executor>,
    stop: watch::Sender<bool>,
    /// The pause watcher (dropping it stops it); new pause rules reconfigure it.
    watcher: std::sync::Mutex<Option<crate::pause::watcher::Watcher>>,
    worker: std::sync::Mutex<Option<JoinHandle<Result<(), WorkerError>>>>,
    tasks: Vec<JoinHandle<()>>,
    data_dir: PathBuf,
    models: ModelStore,
    /// What the machine has, detected on first use (enumerating adapters loads drivers).
    hardware: std::sync::OnceLock<hearth_hardware::HardwareReport>,
    /// The settings the running started with (command-line overrides included); saves
    /// go through this lock one at a time.
    config: std::sync::Mutex<NodeConfig>,
    /// The GPU failed its check ([`checked_device`]): the benchmark leaves it out too.
    gpu_refused: bool,
}

impl RunningNode {
    /// Open the ledger, load or create the identity, start the embedded pool when configured,
    /// and start working. Returns once the worker is started (it joins the pool by itself).
    pub async fn start(options: StartOptions) -> Result<Self, StartError> {
        Self::start_with(options, Node::new()).await
    }

    /// [`RunningNode::start`] around a [`Node`] the caller already handed out (the desktop shell
    /// shows the node's state while the rest starts).
    pub async fn start_with(options: StartOptions, node: Node) -> Result<Self, StartError> {
        let data_dir = options.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| StartError::DataDir {
            path: data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let ledger_dir = data_dir.join("ledger");
        // A ledger damaged beyond opening is moved aside and a new one started; the owner is
        // told, and the worker collects the receipts again when it joins the pool.
        let (ledger, damaged) =
            crate::storage::open_ledger(&ledger_dir).map_err(|source| StartError::Ledger {
                path: ledger_dir.display().to_string(),
                source,
            })?;
        let ledger = Arc::new(ledger);
        let mut lasting_notices: Vec<String> = damaged.into_iter().collect();
        // A log tail the disk damaged opens without an error, shorter: the chain mark tells.
        match ledger.lost_receipts() {
            Ok(Some(lost)) => {
                tracing::error!(held_through = lost.held_through, holds_through = ?lost.holds_through, "the ledger lost receipts from its end; collecting them again from the pool");
                lasting_notices.push(crate::storage::lost_receipts_notice(&lost));
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not check the ledger's chain mark"),
        }
        let key = worker::load_or_create_identity(&data_dir.join("node.key"))?;
        let node_id = hearth_protocol::node_id(&key.public_key());

        let config = options.config.clone();
        let embedded = if config.pool == EMBEDDED_POOL {
            let pace = (config.demo_interval_ms > 0)
                .then(|| Duration::from_millis(config.demo_interval_ms));
            Some(crate::demo_pool::start(&data_dir, &options.models, pace).await?)
        } else {
            None
        };
        let pool_url = match &embedded {
            Some(pool) => crate::demo_pool::url(pool),
            None => config.pool.clone(),
        };

        let preference = config.backend_preference();
        let check_dir = data_dir.clone();
        let (device, gpu_refused) = tokio::task::spawn_blocking(move || {
            ComputeDevice::select(preference)
                .map(|device| checked_device(device, preference, &check_dir))
        })
        .await
        .map_err(|e| StartError::Device(e.to_string()))?
        .map_err(|e| StartError::Device(e.to_string()))?;
        lasting_notices.extend(gpu_refused.clone());
        let device_name = device.describe();
        tracing::info!(
            device = %device_name,
            node = %node_id,
            pool = %pool_url,
            models = %options.models.root().display(),
            shipped_models = %options.models.shipped().map(|d| d.display().to_string()).unwrap_or_default(),
            "node starting"
        );
        let executor = Arc::new(Executor::with_budget(
            options.models.clone(),
            device,
            config.model_memory_mib << 20,
        ));

        let sampler = if options.telemetry {
            // Where the kernel's sysfs is: /sys, unless HEARTH_SYSFS names another root (a
            // container with the host's mounted elsewhere; tests with a recorded tree).
            let sysfs = std::env::var_os("HEARTH_SYSFS")
                .map_or_else(|| PathBuf::from("/sys"), PathBuf::from);
            let gpus = PlatformGpus::new(&sysfs, Box::new(Nvml::default()));
            let cpu = hearth_hardware::CpuPower::new(&sysfs, config.cpu_watts as f32);
            match Sampler::start(Box::new(gpus), cpu, Duration::from_secs(1)) {
                Ok(sampler) => Some(Arc::new(sampler)),
                Err(error) => {
                    tracing::warn!(%error, "telemetry is off: the sampler did not start");
                    None
                }
            }
        } else {
            None
        };
        let (pool, _) = watch::channel(PoolStatus {
            url: pool_url.clone(),
            demo: embedded.is_some(),
            notices: lasting_notices.clone(),
            ..PoolStatus::default()
        });
        let mut tasks = Vec::new();
        let storage = StorageHealth::new(node.clone(), Arc::clone(&ledger), data_dir.clone());

        tasks.push(record_state_changes(
            &node,
            Arc::clone(&ledger),
            Arc::clone(&storage),
        ));
        let (paused_tx, paused) = watch::channel(node.status().activity.is_paused());
        let (duty_tx, duty) = watch::channel(100u8);
        tasks.push(node.expire_timed());
        tasks.push(follow_pause_state(
            &node,
            paused_tx,
            duty_tx,
            Arc::clone(&executor),
            Duration::from_secs(config.free_memory_after_s),
        ));
        // The pause policy always runs (temperature limits hold even with detection off).
        let watcher_config = watcher_config(&config);
        let watcher = match crate::pause::watcher::Watcher::start(node.clone(), watcher_config) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::error!(%error, "automatic pausing is off: the watcher did not start");
                None
            }
        };
        if let Some(sampler) = &sampler {
            tasks.push(crate::resources::record_minutes(
                sampler,
                Arc::clone(&ledger),
                Arc::clone(&storage),
            ));
            let inputs = watcher.as_ref().map(crate::pause::watcher::Watcher::inputs);
            // Memory pressure matters only where the models run on a GPU.
            let vram = (config.vram_min_free_mib > 0
                && executor.device().backend == hearth_inference::ComputeBackend::Wgpu
                && executor
                    .device()
                    .adapter
                    .as_ref()
                    .is_some_and(|a| a.is_hardware))
            .then(|| crate::pause::policy::VramGuard::new(config.vram_min_free_mib << 20));
            tasks.push(forward_telemetry(
                &node,
                sampler,
                inputs,
                vram,
                Arc::clone(&executor),
            ));
        }
        let (stop, stopped) = watch::channel(false);
        let events = {
            let (node, ledger, storage, pool) = (
                node.clone(),
                Arc::clone(&ledger),
                Arc::clone(&storage),
                pool.clone(),
            );
            move |event: WorkerEvent| {
                on_worker_event(&node, &ledger, &storage, &pool, &lasting_notices, event);
            }
        };
        let energy = sampler.as_ref().map(|sampler| {
            let sampler = Arc::clone(sampler);
            Arc::new(move |from: u64, to: u64| energy_between(&sampler, from, to))
                as Arc<worker::EnergyMeter>
        });
        // The demo pool is this very process: its key is known, no pin is needed.
        let pool_key = embedded
            .as_ref()
            .map(crate::demo_pool::public_key)
            .or_else(|| config.pool_key.clone().map(hearth_protocol::PublicKey));
        let pool_ca_pem = match &config.pool_ca_file {
            Some(file) => Some(std::fs::read(file).map_err(|e| StartError::PoolCa {
                file: file.clone(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let worker_config = WorkerConfig {
            pool_url,
            pool_key,
            pool_ca_pem,
            concurrency: config.concurrency,
            duty_percent: Some(duty),
            model_disk_bytes: config.model_disk_mib << 20,
            ..WorkerConfig::default()
        };
        let worker = tokio::spawn(worker::run(
            worker_config,
            key,
            Arc::clone(&executor),
            Arc::clone(&ledger),
            paused,
            stopped,
            energy,
            events,
        ));
        Ok(Self {
            node,
            ledger,
            node_id,
            device: device_name,
            pool,
            _demo_pool: embedded,
            sampler,
            executor,
            stop,
            watcher: std::sync::Mutex::new(watcher),
            worker: std::sync::Mutex::new(Some(worker)),
            tasks,
            data_dir: options.data_dir.clone(),
            models: options.models.clone(),
            hardware: std::sync::OnceLock::new(),
            config: std::sync::Mutex::new(config.clone()),
            gpu_refused: gpu_refused.is_some(),
        })
    }

    /// The node's state and events.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The ledger (job history, receipts, settings).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// This node's id (from its key).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The compute device in words.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// What one credit is worth, and in which currency: the pool's rate once it told it,
    /// else the owner's setting.
    pub fn credit_rate(&self) -> (f64, String) {
        match self.pool.borrow().terms.as_ref() {
            Some(terms) => (terms.credit_value, terms.currency.clone()),
            None => {
                let settings = self.settings();
                (settings.credit_value, settings.currency)
            }
        }
    }

    /// The pool and whether it answers.
    pub fn pool(&self) -> PoolStatus {
        self.pool.borrow().clone()
    }

    /// Today's earnings and the current rate.
    pub fn earnings(&self) -> Earnings {
        earnings(&self.ledger, &self.pool.borrow())
    }

    /// The newest `n` jobs, newest first.
    pub fn recent_jobs(&self, n: usize) -> Vec<JobSummary> {
        match self.ledger.recent_jobs(n) {
            Ok(jobs) => jobs.iter().map(JobSummary::from).collect(),
            Err(error) => {
                tracing::error!(%error, "could not read recent jobs");
                Vec::new()
            }
        }
    }

    /// Status, pool, earnings, the newest 50 jobs and live telemetry.
    pub fn overview(&self) -> Overview {
        Overview {
            node_id: self.node_id.clone(),
            device: crate::views::plain_device(self.executor.device()),
            status: self.node.status(),
            pool: self.pool(),
            earnings: self.earnings(),
            jobs: self.recent_jobs(50),
            telemetry: self.telemetry(),
            changes: self.ledger.recent_activity(20).unwrap_or_else(|error| {
                tracing::error!(%error, "could not read the state changes");
                Vec::new()
            }),
        }
    }

    /// The data folder (ledger, key, settings).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The settings as saved in `config.toml` (without command-line overrides); the ones
    /// the running started with when the file cannot be read.
    pub fn settings(&self) -> NodeConfig {
        let started_with = self.config.lock().unwrap_or_else(|e| e.into_inner());
        NodeConfig::load(&self.data_dir).unwrap_or_else(|error| {
            tracing::warn!(%error, "showing the settings Hearth started with");
            started_with.clone()
        })
    }

    /// Check and save new settings. The pause rules (games, fullscreen, other GPU programs,
    /// idle-only and throttle, temperature, schedule) apply at once; the pool, backend,
    /// concurrency and memory from the next start. On an error (naming the setting) nothing
    /// is saved.
    pub fn save_settings(
        &self,
        settings: NodeConfig,
    ) -> Result<NodeConfig, crate::config::ConfigError> {
        let _one_at_a_time = self.config.lock().unwrap_or_else(|e| e.into_inner());
        settings.save(&self.data_dir)?;
        tracing::info!("settings saved");
        // The pause rules apply at once.
        if let Some(watcher) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            && let Err(error) = watcher.reconfigure(watcher_config(&settings))
        {
            tracing::error!(%error, "the new pause rules apply from the next start");
        }
        self.node.announce(NodeEvent::SettingsChanged {
            settings: settings.clone(),
        });
        Ok(settings)
    }

    /// Earnings over the last 30 days for the Earnings page.
    pub fn earnings_report(
        &self,
    ) -> Result<crate::views::EarningsReport, hearth_ledger::LedgerError> {
        earnings_report(
            &self.ledger,
            &self.settings(),
            self.pool.borrow().demo,
            now_unix_ms(),
        )
    }

    /// One page of the job history.
    pub fn job_page(
        &self,
        query: &crate::views::JobQuery,
    ) -> Result<crate::views::JobPage, hearth_ledger::LedgerError> {
        job_page(&self.ledger, query)
    }

    /// The GPUs, CPU and memory, detected once per run (the hardware does not change under a
    /// running app; enumerating adapters costs a fraction of a second and loads drivers).
    pub fn hardware_report(&self) -> &hearth_hardware::HardwareReport {
        self.hardware.get_or_init(hearth_hardware::detect_local)
    }

    /// The machine, its stored benchmark (when it is for this hardware) and what it earns per
    /// hour of work.
    pub fn hardware_view(&self) -> crate::views::HardwareView {
        use hearth_inference::capability;
        let report = self.hardware_report();
        let stored = std::fs::read(self.data_dir.join(CAPABILITY_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<capability::CapabilityReport>(&bytes).ok())
            .filter(|stored| {
                stored.version == capability::BENCHMARK_VERSION
                    && stored.fingerprint == capability::fingerprint(report)
            });
        crate::views::HardwareView::new(
            report,
            stored.as_ref(),
            self.executor.device(),
            expected_earnings(&self.recent_jobs(hearth_ledger::RECENT_CACHED)),
        )
    }

    /// Run the capability benchmark again (seconds of full load), announcing its progress as
    /// [`NodeEvent::BenchmarkProgress`]; the Hardware page's view afterwards.
    pub fn run_benchmark(
        &self,
    ) -> Result<crate::views::HardwareView, hearth_inference::InferenceError> {
        let node = self.node.clone();
        hearth_inference::capability::load_or_run(
            &self.data_dir.join(CAPABILITY_FILE),
            &self.models,
            self.hardware_report(),
            &hearth_inference::capability::usable_devices()
                .into_iter()
                .filter(|device| !(self.gpu_refused && device.backend == ComputeBackend::Wgpu))
                .collect::<Vec<_>>(),
            true,
            &mut |progress| {
                node.announce(NodeEvent::BenchmarkProgress {
                    fraction: progress.fraction,
                    message: progress.message,
                });
            },
        )?;
        Ok(self.hardware_view())
    }

    /// The latest telemetry sample.
    pub fn telemetry(&self) -> Option<Telemetry> {
        let sampler = self.sampler.as_ref()?;
        let since = now_unix_ms().saturating_sub(5_000);
        sampler
            .history_since(since)
            .last()
            .map(|s| live_telemetry(s, &self.executor))
    }

    /// The Settings page's game list: the built-in entries with the owner's switches, their
    /// own entries, and the games that paused Hearth lately.
    pub fn games_view(&self) -> crate::views::GamesView {
        let config = self.settings();
        let changes: Vec<crate::NodeStatus> =
            self.ledger.recent_activity(1000).unwrap_or_else(|error| {
                tracing::error!(%error, "could not read the state changes");
                Vec::new()
            });
        crate::views::GamesView::new(&crate::pause::games::GameList::builtin(), &config, &changes)
    }

    /// Resource use over the last `span_ms`, oldest first (see [`crate::resources::history`]).
    pub fn telemetry_history(
        &self,
        span_ms: u64,
    ) -> Result<Vec<Telemetry>, hearth_ledger::LedgerError> {
        crate::resources::history(
            self.sampler.as_deref(),
            &self.ledger,
            span_ms,
            now_unix_ms(),
        )
    }

    /// Stop working: running jobs are given back to the pool and the worker ends (waiting at
    /// most `grace`). The embedded pool stops when the running node is dropped.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = worker {
            match tokio::time::timeout(grace, worker).await {
                Ok(Ok(Ok(()))) => tracing::info!("worker stopped"),
                Ok(Ok(Err(error))) => tracing::warn!(%error, "worker ended with an error"),
                Ok(Err(error)) => tracing::error!(%error, "worker task failed"),
                Err(_) => tracing::warn!("worker did not stop in time"),
            }
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
        if let Some(worker) = self
            .worker
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            worker.abort();
        }
    }
}

/// The capability benchmark's stored result, in the data folder (the CLI's `bench` too).
pub const CAPABILITY_FILE: &str = "capability.json";

fn on_worker_event(
    node: &Node,
    ledger: &Ledger,
    storage: &Arc<StorageHealth>,
    pool: &watch::Sender<PoolStatus>,
    lasting_notices: &[String],
    event: WorkerEvent,
) {
    match event {
        WorkerEvent::Joined {
            pool_name,
            demo,
            terms,
            release,
            serving,
        } => {
            let new_version = release
                .as_ref()
                .and_then(|r| NewVersion::from_notice(r, env!("CARGO_PKG_VERSION")));
            if let Some(new) = &new_version {
                tracing::info!(version = %new.version, url = %new.url, "a new version of Hearth is available");
            }
            pool.send_modify(|p| {
                p.new_version = new_version;
                p.serving = serving;
                p.name = Some(pool_name);
                p.demo = demo;
                p.connected = true;
                p.error = None;
                p.terms = terms.map(|t| crate::status::PoolTerms {
                    credit_value: t.credit_value,
                    currency: t.currency,
                    settlement_ms: t.settlement_ms,
                });
            });
            node.announce(NodeEvent::PoolChanged {
                pool: pool.borrow().clone(),
            });
            node.announce(NodeEvent::EarningsChanged {
                earnings: earnings(ledger, &pool.borrow()),
            });
        }
        WorkerEvent::PoolUnreachable { error } => {
            let changed = pool.send_if_modified(|p| {
                let changed = p.connected || p.error.as_deref() != Some(error.as_str());
                p.connected = false;
                p.error = Some(error);
                changed
            });
            if changed {
                node.announce(NodeEvent::PoolChanged {
                    pool: pool.borrow().clone(),
                });
            }
        }
        WorkerEvent::JobStarted(record) => {
            let connected = pool.send_if_modified(|p| {
                let changed = !p.connected;
                p.connected = true;
                p.error = None;
                changed
            });
            if connected {
                node.announce(NodeEvent::PoolChanged {
                    pool: pool.borrow().clone(),
                });
            }
            node.announce(NodeEvent::JobStarted {
                job: JobSummary::from(&record),
            });
        }
        WorkerEvent::JobEnded(record) => {
            let paid = record.micro_credits > 0;
            node.announce(NodeEvent::JobEnded {
                job: JobSummary::from(&record),
            });
            if paid || record.status != hearth_ledger::JobStatus::Completed {
                node.announce(NodeEvent::EarningsChanged {
                    earnings: earnings(ledger, &pool.borrow()),
                });
            }
        }
        WorkerEvent::ReceiptsCollected { count } => {
            tracing::info!(count, "missed receipts collected");
        }
        WorkerEvent::StorageFailed(failure) => storage.failed(&failure),
        WorkerEvent::Notices(notices) => {
            for notice in &notices {
                tracing::warn!(%notice, "work is not running as it should");
            }
            pool.send_modify(|p| p.notices = [lasting_notices, &notices].concat());
            node.announce(NodeEvent::PoolChanged {
                pool: pool.borrow().clone(),
            });
        }
        WorkerEvent::Downloads(downloads) => {
            pool.send_modify(|p| p.downloads = downloads);
            node.announce(NodeEvent::PoolChanged {
                pool: pool.borrow().clone(),
            });
        }
        WorkerEvent::Serving(models) => {
            pool.send_modify(|p| p.serving = models);
            node.announce(NodeEvent::PoolChanged {
                pool: pool.borrow().clone(),
            });
        }
    }
}

/// `device`, unless "auto" chose a GPU that fails Hearth's check: a small computation run by
/// `hearth-models gpu-check` in a process of its own (a driver that cannot compile the
/// kernels can take the program down; see `hearth_inference::gpu_check`). Then the processor,
/// and the reason for the owner. A GPU the owner chose in the settings is used as chosen.
fn checked_device(
    device: ComputeDevice,
    preference: BackendPreference,
    data_dir: &Path,
) -> (ComputeDevice, Option<String>) {
    if preference != BackendPreference::Auto || device.backend != ComputeBackend::Wgpu {
        return (device, None);
    }
    let (Some(adapter), Ok(checker)) = (
        device.adapter.as_ref(),
        hearth_instance::sibling_program(hearth_instance::MODELS_PROGRAM),
    ) else {
        return (device, None);
    };
    match hearth_inference::gpu_check::verdict(data_dir, adapter, &checker) {
        Some(verdict) if !verdict.passed => {
            tracing::error!(gpu = %adapter.name, reason = %verdict.detail, "the GPU failed its check; working on the processor");
            let notice = format!(
                "The GPU ({}) failed Hearth's check ({}), so Hearth works on the processor. \
                 Updating the GPU's driver may help; Hearth checks it again when the driver \
                 changes.",
                adapter.name, verdict.detail
            );
            (ComputeDevice::cpu(), Some(notice))
        }
        Some(verdict) => {
            tracing::info!(gpu = %adapter.name, check = %verdict.detail, "the GPU passed its check");
            (device, None)
        }
        None => (device, None),
    }
}
