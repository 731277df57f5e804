//! [`Service`]: a whole running node — ledger, identity, worker, telemetry and, by default,
//! the embedded local pool with its demo customer. The desktop shell and the headless server
//! each start one and talk to it (and its [`Node`]) in-process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_hardware::{Nvml, PlatformGpus, Sampler};
use hearth_inference::{ComputeDevice, ModelStore};
use hearth_ledger::Ledger;
use hearth_protocol::now_unix_ms;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Node;
use crate::config::{EMBEDDED_POOL, NodeConfig};
use crate::executor::Executor;
use crate::status::{Earnings, JobState, JobSummary, NodeEvent, Overview, PoolStatus, Telemetry};
use crate::worker::{self, WorkerConfig, WorkerError, WorkerEvent};

const MS_PER_HOUR: u64 = 3_600_000;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("data folder {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("the ledger in {path} is in use or unreadable ({source}); is another Hearth running?")]
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
pub struct ServiceOptions {
    /// Ledger, identity key, settings and the embedded pool's database live here.
    pub data_dir: PathBuf,
    pub config: NodeConfig,
    /// Where model weights are.
    pub models: ModelStore,
    /// Sample GPU and host telemetry once a second (energy per job, live charts).
    pub telemetry: bool,
}

impl ServiceOptions {
    /// The settings in `data_dir`'s `config.toml`, models from the default store.
    pub fn from_data_dir(data_dir: &Path) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            data_dir: data_dir.to_owned(),
            config: NodeConfig::load(data_dir)?,
            models: ModelStore::from_env(),
            telemetry: true,
        })
    }
}

/// A running node. Dropping it stops the worker abruptly; call [`Service::shutdown`] to give
/// running jobs back first.
#[derive(Debug)]
pub struct Service {
    node: Node,
    ledger: Arc<Ledger>,
    node_id: String,
    device: String,
    pool: watch::Sender<PoolStatus>,
    embedded: Option<hearth_pool::embedded::EmbeddedPool>,
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
    /// The settings the service started with (command-line overrides included); saves
    /// go through this lock one at a time.
    config: std::sync::Mutex<NodeConfig>,
}

impl Service {
    /// Open the ledger, load or create the identity, start the embedded pool when configured,
    /// and start working. Returns once the worker is started (it joins the pool by itself).
    pub async fn start(options: ServiceOptions) -> Result<Self, ServiceError> {
        Self::start_with(options, Node::new()).await
    }

    /// [`Service::start`] around a [`Node`] the caller already handed out (the desktop shell
    /// shows the node's state while the rest starts).
    pub async fn start_with(options: ServiceOptions, node: Node) -> Result<Self, ServiceError> {
        let data_dir = options.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| ServiceError::DataDir {
            path: data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let ledger_dir = data_dir.join("ledger");
        let ledger =
            Arc::new(
                Ledger::open(&ledger_dir).map_err(|source| ServiceError::Ledger {
                    path: ledger_dir.display().to_string(),
                    source,
                })?,
            );
        let key = worker::load_or_create_identity(&data_dir.join("node.key"))?;
        let node_id = hearth_protocol::node_id(&key.public_key());

        let config = options.config.clone();
        let embedded = if config.pool == EMBEDDED_POOL {
            let pace = (config.demo_interval_ms > 0)
                .then(|| Duration::from_millis(config.demo_interval_ms));
            Some(
                hearth_pool::embedded::start(&data_dir, &options.models, pace)
                    .await
                    .map_err(|e| ServiceError::EmbeddedPool(e.to_string()))?,
            )
        } else {
            None
        };
        let pool_url = match &embedded {
            Some(pool) => pool.url(),
            None => config.pool.clone(),
        };

        let preference = config.backend_preference();
        let device = tokio::task::spawn_blocking(move || ComputeDevice::select(preference))
            .await
            .map_err(|e| ServiceError::Device(e.to_string()))?
            .map_err(|e| ServiceError::Device(e.to_string()))?;
        let device_name = device.describe();
        tracing::info!(device = %device_name, node = %node_id, pool = %pool_url, "node starting");
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
            ..PoolStatus::default()
        });
        let mut tasks = Vec::new();

        tasks.push(record_state_changes(&node, Arc::clone(&ledger)));
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
            let (node, ledger, pool) = (node.clone(), Arc::clone(&ledger), pool.clone());
            move |event: WorkerEvent| on_worker_event(&node, &ledger, &pool, event)
        };
        let energy = sampler.as_ref().map(|sampler| {
            let sampler = Arc::clone(sampler);
            Arc::new(move |from: u64, to: u64| energy_between(&sampler, from, to))
                as Arc<worker::EnergyMeter>
        });
        // The demo pool is this very process: its key is known, no pin is needed.
        let pool_key = embedded
            .as_ref()
            .map(|pool| pool.pool().state().pool_key.public_key())
            .or_else(|| config.pool_key.clone().map(hearth_protocol::PublicKey));
        let pool_ca_pem = match &config.pool_ca_file {
            Some(file) => Some(std::fs::read(file).map_err(|e| ServiceError::PoolCa {
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
            embedded,
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

    /// The embedded pool, when this node runs one.
    pub fn embedded_pool(&self) -> Option<&hearth_pool::embedded::EmbeddedPool> {
        self.embedded.as_ref()
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
    /// the service started with when the file cannot be read.
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
    pub fn run_benchmark(&self) -> Result<crate::views::HardwareView, String> {
        let node = self.node.clone();
        hearth_inference::capability::load_or_run(
            &self.data_dir.join(CAPABILITY_FILE),
            &self.models,
            self.hardware_report(),
            &hearth_inference::capability::usable_devices(),
            true,
            &mut |progress| {
                node.announce(NodeEvent::BenchmarkProgress {
                    fraction: progress.fraction,
                    message: progress.message,
                });
            },
        )
        .map_err(|e| e.to_string())?;
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
    pub fn telemetry_history(&self, span_ms: u64) -> Result<Vec<Telemetry>, String> {
        crate::resources::history(
            self.sampler.as_deref(),
            &self.ledger,
            span_ms,
            now_unix_ms(),
        )
        .map_err(|e| e.to_string())
    }

    /// Stop working: running jobs are given back to the pool and the worker ends (waiting at
    /// most `grace`). The embedded pool stops when the service is dropped.
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

impl Drop for Service {
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

/// Local midnight today, in Unix ms.
fn local_midnight_ms() -> u64 {
    use chrono::{Local, TimeZone};
    let today = Local::now().date_naive();
    today
        .and_hms_opt(0, 0, 0)
        .and_then(|midnight| Local.from_local_datetime(&midnight).earliest())
        .map_or(0, |t| u64::try_from(t.timestamp_millis()).unwrap_or(0))
}

/// How the pause watcher runs for `config`.
fn watcher_config(config: &NodeConfig) -> crate::pause::watcher::WatcherConfig {
    crate::pause::watcher::WatcherConfig {
        interval: Duration::from_millis(config.watch_interval_ms),
        policy: crate::pause::policy::PolicyConfig {
            cooldown: Duration::from_secs(config.game_cooldown_s),
            temperature_stop_c: config.temperature_stop_c,
            temperature_resume_c: config.temperature_resume_c,
            idle_only: config.idle_only,
            throttle_when_active: (config.throttle_when_active_percent < 100)
                .then_some(config.throttle_when_active_percent),
        },
        power_supply: config
            .pause_on_battery
            .then(|| PathBuf::from("/sys/class/power_supply")),
        // Input is watched only when a mode needs to know whether the owner is here.
        active_for: (config.idle_only || config.throttle_when_active_percent < 100)
            .then(|| Duration::from_secs(config.away_after_s)),
        games: config.detect_games.then(|| {
            crate::pause::games::GameList::builtin()
                .without(&config.games_off)
                .with_user_entries(&config.games)
        }),
        fullscreen: config.detect_fullscreen,
        gpu_use: config
            .detect_gpu_processes
            .then(crate::pause::gpu_use::GpuUseConfig::default),
        nvidia: config
            .detect_gpu_processes
            .then(|| Arc::new(Nvml::default()) as Arc<dyn hearth_hardware::NvidiaSource>),
        // Validated when the settings were read.
        schedule: crate::pause::schedule::Schedule::parse(&config.schedule).unwrap_or_default(),
        ..crate::pause::watcher::WatcherConfig::default()
    }
}

/// The capability benchmark's stored result, in the data folder (the CLI's `bench` too).
pub const CAPABILITY_FILE: &str = "capability.json";

/// Credits per hour of computing over the completed jobs among `jobs` (`None`: none yet).
pub fn expected_earnings(jobs: &[JobSummary]) -> Option<crate::views::ExpectedEarnings> {
    let (mut micro, mut busy_ms, mut count) = (0u64, 0u64, 0u64);
    for job in jobs.iter().filter(|j| j.state == JobState::Completed) {
        let Some(ended) = job.ended_unix_ms else {
            continue;
        };
        micro += job.micro_credits;
        busy_ms += ended.saturating_sub(job.started_unix_ms).max(1);
        count += 1;
    }
    (count > 0).then(|| crate::views::ExpectedEarnings {
        micro_credits_per_busy_hour: (micro as f64 * 3_600_000.0 / busy_ms as f64) as u64,
        jobs: count,
        busy_s: busy_ms as f64 / 1000.0,
    })
}

/// How many days the Earnings page looks back.
const REPORT_DAYS: u32 = 30;
/// Jobs read at most for the per-model breakdown (newest first).
const BY_MODEL_SCAN_LIMIT: usize = 200_000;

/// The Earnings page's figures from `ledger` at `now_ms`, priced with `config`'s electricity
/// price and credit value.
pub fn earnings_report(
    ledger: &Ledger,
    config: &NodeConfig,
    demo: bool,
    now_ms: u64,
) -> Result<crate::views::EarningsReport, hearth_ledger::LedgerError> {
    use crate::views::{EarningsReport, HourEarnings, ModelEarnings, PeriodEarnings};
    const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;
    let from = now_ms.saturating_sub(u64::from(REPORT_DAYS) * MS_PER_DAY);
    let hours: Vec<HourEarnings> = ledger
        .hourly(from, now_ms + 1)?
        .into_iter()
        .map(|(at_ms, t)| HourEarnings {
            at_ms,
            micro_credits: t.micro_credits,
            jobs_completed: t.jobs_completed,
            jobs_failed: t.jobs_failed,
            energy_wh: t.energy_wh,
            energy_estimated: t.energy_estimated,
        })
        .collect();
    let periods = [1u32, 7, REPORT_DAYS]
        .into_iter()
        .map(|days| {
            let since = now_ms.saturating_sub(u64::from(days) * MS_PER_DAY);
            let inside = hours.iter().filter(|h| h.at_ms + MS_PER_HOUR > since);
            let mut period = PeriodEarnings {
                days,
                micro_credits: 0,
                jobs_completed: 0,
                energy_wh: 0.0,
                energy_estimated: false,
                value: 0.0,
                electricity_cost: 0.0,
                net: 0.0,
            };
            for hour in inside {
                period.micro_credits += hour.micro_credits;
                period.jobs_completed += hour.jobs_completed;
                period.energy_wh += hour.energy_wh;
                period.energy_estimated |= hour.energy_estimated;
            }
            period.value = period.micro_credits as f64 / 1e6 * config.credit_value;
            period.electricity_cost = period.energy_wh / 1000.0 * config.electricity_price_per_kwh;
            period.net = period.value - period.electricity_cost;
            period
        })
        .collect();
    let mut models: std::collections::BTreeMap<String, ModelEarnings> = Default::default();
    let (_, recent) = ledger.jobs_page(from, now_ms + 1, 0, BY_MODEL_SCAN_LIMIT, None)?;
    for job in recent
        .iter()
        .filter(|j| j.status == hearth_ledger::JobStatus::Completed)
    {
        let entry = models
            .entry(job.model.clone())
            .or_insert_with(|| ModelEarnings {
                model: job.model.clone(),
                jobs: 0,
                micro_credits: 0,
            });
        entry.jobs += 1;
        entry.micro_credits += job.micro_credits;
    }
    let mut by_model: Vec<ModelEarnings> = models.into_values().collect();
    by_model.sort_by_key(|m| std::cmp::Reverse(m.micro_credits));
    Ok(EarningsReport {
        hours,
        periods,
        by_model,
        price_per_kwh: config.electricity_price_per_kwh,
        currency: config.currency.clone(),
        credit_value: config.credit_value,
        demo,
        now_ms,
    })
}

/// One page of `ledger`'s jobs for `query` (an id search ignores the other filters).
pub fn job_page(
    ledger: &Ledger,
    query: &crate::views::JobQuery,
) -> Result<crate::views::JobPage, hearth_ledger::LedgerError> {
    use crate::views::{JobPage, JobQuery};
    let limit = query.limit.clamp(1, JobQuery::MAX_LIMIT) as usize;
    let offset = usize::try_from(query.offset).unwrap_or(usize::MAX);
    if let Some(prefix) = query
        .id_prefix
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (total, found) = ledger.jobs_with_id_prefix(prefix, offset, limit)?;
        return Ok(JobPage {
            total,
            offset: query.offset,
            jobs: found.iter().map(JobSummary::from).collect(),
        });
    }
    let state = query.state;
    let model = query.model.clone().filter(|m| !m.is_empty());
    let keep = move |record: &hearth_ledger::JobRecord| {
        state.is_none_or(|s| JobState::from(record.status) == s)
            && model.as_deref().is_none_or(|m| record.model == m)
    };
    let filtered = state.is_some() || query.model.as_deref().is_some_and(|m| !m.is_empty());
    let (total, jobs) = ledger.jobs_page(
        query.from_ms.unwrap_or(0),
        query.to_ms.unwrap_or(u64::MAX),
        offset,
        limit,
        filtered.then_some(&keep as &dyn Fn(&hearth_ledger::JobRecord) -> bool),
    )?;
    Ok(JobPage {
        total,
        offset: query.offset,
        jobs: jobs.iter().map(JobSummary::from).collect(),
    })
}

/// Today's totals, the last hour's credits, the lifetime total and what of it is payable under
/// `pool`'s terms, from the ledger's hourly table.
pub fn earnings(ledger: &Ledger, pool: &PoolStatus) -> Earnings {
    let demo = pool.demo;
    let now = now_unix_ms();
    let today = ledger.totals_between(local_midnight_ms(), now + 1);
    let hour = ledger.totals_between(now.saturating_sub(MS_PER_HOUR), now + 1);
    // Payable: the hours before the settlement time (unknown terms: none yet); pending: the
    // hours since. Together they are the lifetime total, each hour read once.
    let settled_before = pool
        .terms
        .as_ref()
        .map_or(0, |t| now.saturating_sub(t.settlement_ms));
    let split = settled_before.div_ceil(MS_PER_HOUR) * MS_PER_HOUR;
    let payable = ledger.totals_between(0, split);
    let pending = ledger.totals_between(split, now + 1);
    match (today, hour, payable, pending) {
        (Ok(today), Ok(hour), Ok(payable), Ok(pending)) => Earnings {
            today_micro_credits: today.micro_credits,
            today_jobs: today.jobs_completed,
            today_failed: today.jobs_failed,
            last_hour_micro_credits: hour.micro_credits,
            lifetime_micro_credits: payable.micro_credits.saturating_add(pending.micro_credits),
            today_energy_wh: today.energy_wh,
            today_energy_estimated: today.energy_estimated,
            pending_micro_credits: pending.micro_credits,
            payable_micro_credits: payable.micro_credits,
            demo,
        },
        (Err(error), ..) | (_, Err(error), ..) | (_, _, Err(error), _) | (.., Err(error)) => {
            tracing::error!(%error, "could not total the ledger");
            Earnings {
                demo,
                ..Earnings::default()
            }
        }
    }
}

fn on_worker_event(
    node: &Node,
    ledger: &Ledger,
    pool: &watch::Sender<PoolStatus>,
    event: WorkerEvent,
) {
    match event {
        WorkerEvent::Joined {
            pool_name,
            demo,
            terms,
        } => {
            pool.send_modify(|p| {
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
    }
}

/// Every pause and resume, with its reason, goes into the ledger.
fn record_state_changes(node: &Node, ledger: Arc<Ledger>) -> JoinHandle<()> {
    let mut status = node.watch_status();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            let ledger = Arc::clone(&ledger);
            let written = tokio::task::spawn_blocking(move || {
                ledger.record_activity(now.changed_at_ms, &now)
            })
            .await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::error!(?written, "could not record a state change");
            }
        }
    })
}

/// The worker works while the node is not paused, at the node's duty cycle; a pause that lasts
/// (`free_memory_after`) frees the models' memory; a short one keeps them.
fn follow_pause_state(
    node: &Node,
    paused: watch::Sender<bool>,
    duty: watch::Sender<u8>,
    executor: Arc<Executor>,
    free_memory_after: Duration,
) -> JoinHandle<()> {
    let mut status = node.watch_status();
    tokio::spawn(async move {
        loop {
            let activity = status.borrow_and_update().activity.clone();
            let is_paused = activity.is_paused();
            paused.send_if_modified(|p| std::mem::replace(p, is_paused) != is_paused);
            if !is_paused {
                let percent = activity.duty_percent();
                duty.send_if_modified(|d| std::mem::replace(d, percent) != percent);
            }
            let changed = if is_paused {
                tokio::select! {
                    changed = status.changed() => changed,
                    () = tokio::time::sleep(free_memory_after) => {
                        let released = executor.release_all();
                        if released > 0 {
                            tracing::info!(released, "paused a while: models unloaded to free memory");
                        }
                        status.changed().await
                    }
                }
            } else {
                status.changed().await
            };
            if changed.is_err() {
                break;
            }
        }
    })
}

/// Telemetry to the node's subscribers, and the hottest GPU's temperature to the pause policy.
/// With a VRAM limit, the GPU's memory figures and what Hearth's models hold decide whether
/// memory is short, for the GPU the models run on.
fn forward_telemetry(
    node: &Node,
    sampler: &Sampler,
    policy: Option<crate::pause::watcher::PolicyInputs>,
    vram: Option<crate::pause::policy::VramGuard>,
    executor: Arc<Executor>,
) -> JoinHandle<()> {
    let mut samples = sampler.subscribe();
    let node = node.clone();
    let mut vram = vram;
    tokio::spawn(async move {
        let mut was_short = false;
        loop {
            match samples.recv().await {
                Ok(sample) => {
                    let hottest = sample
                        .gpus
                        .iter()
                        .filter_map(|g| g.temperature_c)
                        .reduce(f32::max);
                    if let (Some(policy), Some(celsius)) = (&policy, hottest) {
                        policy.send(crate::pause::policy::Input::Temperature(celsius));
                    }
                    if let (Some(policy), Some(guard)) = (&policy, &mut vram) {
                        let ours = executor.device().adapter.as_ref().map(|a| a.name.as_str());
                        let gpu = sample
                            .gpus
                            .iter()
                            .filter(|g| g.vram_total_bytes.is_some() && g.vram_used_bytes.is_some())
                            .find(|g| ours.is_none_or(|name| g.name == name))
                            .or_else(|| sample.gpus.iter().find(|g| g.vram_total_bytes.is_some()));
                        if let Some(gpu) = gpu {
                            let short = guard.observe(
                                gpu.vram_total_bytes.unwrap_or(0),
                                gpu.vram_used_bytes.unwrap_or(0),
                                executor.loaded_bytes(),
                            );
                            if short != was_short {
                                tracing::info!(short, gpu = %gpu.name, "GPU memory pressure changed");
                                policy.send(crate::pause::policy::Input::VramPressure(short));
                                was_short = short;
                            }
                        }
                    }
                    node.announce(NodeEvent::Telemetry {
                        telemetry: live_telemetry(&sample, &executor),
                    });
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

/// Live telemetry from a sample, with what Hearth's models hold on the GPU they run on.
fn live_telemetry(sample: &hearth_hardware::TelemetrySample, executor: &Executor) -> Telemetry {
    let mut telemetry = Telemetry::from(sample);
    let ours = executor.device().adapter.as_ref().filter(|a| {
        a.is_hardware && executor.device().backend == hearth_inference::ComputeBackend::Wgpu
    });
    if let Some(adapter) = ours
        && let Some(gpu) = telemetry.gpus.iter_mut().find(|g| g.name == adapter.name)
    {
        gpu.hearth_vram_bytes = Some(executor.loaded_bytes());
    }
    telemetry
}

/// Energy Hearth used between `from` and `to` (Unix ms): the GPUs' and its share of the
/// processor's (see [`energy_over`]).
fn energy_between(sampler: &Sampler, from: u64, to: u64) -> Option<(f64, bool)> {
    energy_over(
        &sampler.history_since(from),
        sampler.latest().as_deref(),
        from,
        to,
    )
}

/// Energy over `from..to` (Unix ms) from `samples`, each covering the interval before it and
/// counted in proportion to its overlap. The part after the newest reading (`latest`: a job
/// ends before the next one is taken) is extrapolated at that reading's power and marked
/// estimated. `None` with no reading at all (telemetry off, or the first second of a run).
fn energy_over(
    samples: &[Arc<hearth_hardware::TelemetrySample>],
    latest: Option<&hearth_hardware::TelemetrySample>,
    from: u64,
    to: u64,
) -> Option<(f64, bool)> {
    let latest = latest?;
    let mut total = 0.0;
    let mut estimated = false;
    for sample in samples {
        let end = sample.at_unix_ms;
        let start = end.saturating_sub((sample.interval_s * 1000.0) as u64);
        let overlap = end.min(to).saturating_sub(start.max(from));
        if overlap == 0 || end <= start {
            continue;
        }
        let share = overlap as f64 / (end - start) as f64;
        let (wh, sample_estimated) = sample.hearth_energy_wh();
        total += wh * share;
        estimated |= sample_estimated;
    }
    let uncovered = to.saturating_sub(latest.at_unix_ms.max(from));
    let latest_hours = latest.interval_s / 3600.0;
    if uncovered > 0 && latest_hours > 0.0 {
        let (wh, _) = latest.hearth_energy_wh();
        total += wh / latest_hours * (uncovered as f64 / 3_600_000.0);
        estimated = true;
    }
    Some((total, estimated))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn paid(id: &str, ended_unix_ms: u64, micro_credits: u64) -> hearth_ledger::JobRecord {
        let mut job =
            hearth_ledger::JobRecord::started(id, "all-minilm-l6-v2", "embeddings", ended_unix_ms);
        job.ended_unix_ms = Some(ended_unix_ms);
        job.status = hearth_ledger::JobStatus::Completed;
        job.micro_credits = micro_credits;
        job.energy_wh = Some(0.5);
        job.energy_estimated = true;
        job
    }

    fn reading(at_unix_ms: u64, cpu_energy_wh: f64) -> Arc<hearth_hardware::TelemetrySample> {
        Arc::new(hearth_hardware::TelemetrySample {
            at_unix_ms,
            interval_s: 1.0,
            cpu_percent: 50.0,
            ram_used_bytes: 0,
            ram_total_bytes: 0,
            process_cpu_percent: 100.0,
            process_memory_bytes: 0,
            logical_cores: 2,
            cpu_power_w: 36.0,
            cpu_power_estimated: false,
            cpu_temperature_c: None,
            process_cpu_energy_wh: cpu_energy_wh,
            gpus: vec![],
        })
    }

    #[test]
    fn a_jobs_energy_counts_the_readings_it_overlaps_and_extrapolates_past_the_newest() {
        // Two readings of 0.01 Wh a second (36 W), at 1 s and 2 s.
        let samples = [reading(1_000, 0.01), reading(2_000, 0.01)];
        let latest = samples.last().map(AsRef::as_ref);
        // A job from 0.5 s to 1.5 s: half of each reading, measured.
        let (wh, estimated) = energy_over(&samples, latest, 500, 1_500).unwrap();
        assert!((wh - 0.01).abs() < 1e-9, "{wh}");
        assert!(!estimated);
        // A short job after the newest reading: at its power, and said to be estimated.
        let (wh, estimated) = energy_over(&samples[2..], latest, 2_100, 2_350).unwrap();
        assert!((wh - 0.0025).abs() < 1e-9, "{wh}");
        assert!(estimated);
        // Half covered, half after.
        let (wh, estimated) = energy_over(&samples[1..], latest, 1_500, 2_500).unwrap();
        assert!((wh - 0.01).abs() < 1e-9, "{wh}");
        assert!(estimated);
        // No reading yet: unknown, not zero.
        assert_eq!(energy_over(&[], None, 0, 100), None);
    }

    #[test]
    fn earnings_split_pending_from_payable_by_the_pools_settlement_time() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let now = now_unix_ms();
        let day = 24 * MS_PER_HOUR;
        ledger
            .import_jobs(&[
                paid("old", now - 3 * day, 700),
                paid("recent", now - 2 * MS_PER_HOUR, 40),
            ])
            .unwrap();
        let mut pool = PoolStatus::default();
        // No terms yet: nothing is known to be payable.
        let unknown = earnings(&ledger, &pool);
        assert_eq!(unknown.lifetime_micro_credits, 740);
        assert_eq!(
            (unknown.pending_micro_credits, unknown.payable_micro_credits),
            (740, 0)
        );
        pool.terms = Some(crate::status::PoolTerms {
            credit_value: 0.5,
            currency: "EUR".into(),
            settlement_ms: day,
        });
        let settled = earnings(&ledger, &pool);
        assert_eq!(
            (settled.pending_micro_credits, settled.payable_micro_credits),
            (40, 700)
        );
    }
}
