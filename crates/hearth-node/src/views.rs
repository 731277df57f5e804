//! What the window's pages show beyond the overview: earnings over time (Earnings page), the
//! job history a page at a time (History page) and the machine with its benchmark (Hardware
//! page). Every type crosses the IPC boundary, so
//! each derives [`TS`] like those in [`crate::status`].

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::status::{JobState, JobSummary};

/// One hour's totals, for the charts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct HourEarnings {
    /// Start of the hour, ms since the Unix epoch.
    #[ts(type = "number")]
    pub at_ms: u64,
    #[ts(type = "number")]
    pub micro_credits: u64,
    #[ts(type = "number")]
    pub jobs_completed: u64,
    #[ts(type = "number")]
    pub jobs_failed: u64,
    /// GPU energy spent on jobs (Wh).
    pub energy_wh: f64,
    /// Some of the energy was estimated (no power sensor), not measured.
    pub energy_estimated: bool,
}

/// Totals over the last `days`, with electricity and what is left after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct PeriodEarnings {
    pub days: u32,
    #[ts(type = "number")]
    pub micro_credits: u64,
    #[ts(type = "number")]
    pub jobs_completed: u64,
    pub energy_wh: f64,
    pub energy_estimated: bool,
    /// Earnings in the owner's currency (credits × the value of one credit).
    pub value: f64,
    /// Electricity for the jobs, in the owner's currency.
    pub electricity_cost: f64,
    /// `value − electricity_cost`.
    pub net: f64,
}

/// One model's share of the earnings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ModelEarnings {
    pub model: String,
    #[ts(type = "number")]
    pub jobs: u64,
    #[ts(type = "number")]
    pub micro_credits: u64,
}

/// Everything the Earnings page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct EarningsReport {
    /// Every hour of the last 30 days that had work, oldest first.
    pub hours: Vec<HourEarnings>,
    /// The last 1, 7 and 30 days.
    pub periods: Vec<PeriodEarnings>,
    /// Completed jobs of the last 30 days by model, most credits first.
    pub by_model: Vec<ModelEarnings>,
    /// The owner's electricity price per kWh and currency (from the settings).
    pub price_per_kwh: f64,
    pub currency: String,
    /// What one credit is worth in `currency` (from the settings).
    pub credit_value: f64,
    /// Credits from the local demo pool are not money.
    pub demo: bool,
    #[ts(type = "number")]
    pub now_ms: u64,
}

/// Which jobs the History page asks for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
#[serde(default)]
pub struct JobQuery {
    /// Rows to skip, newest first.
    #[ts(type = "number")]
    pub offset: u64,
    /// Rows wanted (at most [`JobQuery::MAX_LIMIT`]).
    pub limit: u32,
    pub state: Option<JobState>,
    pub model: Option<String>,
    /// Jobs whose id starts with this (the search box).
    pub id_prefix: Option<String>,
    /// Jobs started in `[from_ms, to_ms)`.
    #[ts(type = "number | null")]
    pub from_ms: Option<u64>,
    #[ts(type = "number | null")]
    pub to_ms: Option<u64>,
}

impl JobQuery {
    /// The most rows one page may hold.
    pub const MAX_LIMIT: u32 = 500;
}

/// One page of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct JobPage {
    /// Jobs matching the query in all.
    #[ts(type = "number")]
    pub total: u64,
    #[ts(type = "number")]
    pub offset: u64,
    pub jobs: Vec<JobSummary>,
}

/// One GPU as the Hardware page lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct GpuView {
    pub name: String,
    /// `nvidia`, `amd`, `intel`, `apple`, `mesa` or `other`.
    pub vendor: String,
    /// `discrete`, `integrated`, `virtual`, `software` or `other`.
    pub kind: String,
    /// Graphics APIs it is reachable through, best first.
    pub apis: Vec<String>,
    pub driver: String,
    pub driver_version: Option<String>,
    #[ts(type = "number | null")]
    pub vram_total_bytes: Option<u64>,
}

/// One backend's benchmark figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct BackendView {
    /// `cpu` or `wgpu`.
    pub backend: String,
    pub device: String,
    pub matmul_gflops: f64,
    pub bandwidth_gb_per_s: f64,
    #[ts(type = "number | null")]
    pub memory_bytes: Option<u64>,
}

/// Whether a model fits each backend's memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ModelFitView {
    pub model: String,
    #[ts(type = "number")]
    pub needs_bytes: u64,
    pub fits: Vec<String>,
}

/// The capability benchmark's result for this hardware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct BenchmarkView {
    /// When it was measured (seconds since the Unix epoch).
    #[ts(type = "number")]
    pub measured_at_unix: u64,
    pub seconds: f64,
    pub backends: Vec<BackendView>,
    pub models: Vec<ModelFitView>,
}

/// What this machine earns per hour of work, from the jobs it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ExpectedEarnings {
    /// Credits (millionths) per hour spent computing, over `jobs` recent completed jobs.
    #[ts(type = "number")]
    pub micro_credits_per_busy_hour: u64,
    #[ts(type = "number")]
    pub jobs: u64,
    /// Time those jobs computed, in seconds.
    pub busy_s: f64,
}

/// Everything the Hardware page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct HardwareView {
    /// Where Hearth works, in plain words: "NVIDIA GeForce RTX 3060, 12 GB: Hearth runs on
    /// it" or "No supported GPU found: Hearth uses your processor (slower, earns less)".
    pub summary: String,
    /// True when Hearth's models run on a graphics card.
    pub runs_on_gpu: bool,
    pub gpus: Vec<GpuView>,
    pub cpu_model: String,
    pub cpu_threads: u32,
    #[ts(type = "number | null")]
    pub memory_total_bytes: Option<u64>,
    /// Whether NVML answered, or why not.
    pub nvml: String,
    /// Where Hearth runs its models now, e.g. "cpu" or "wgpu (…)".
    pub compute_device: String,
    /// The stored benchmark for this hardware, if it has been run.
    pub benchmark: Option<BenchmarkView>,
    /// From the jobs run so far (none yet: `None`).
    pub expected: Option<ExpectedEarnings>,
}

impl HardwareView {
    /// The view of `report` with its stored `benchmark` (when it is for this hardware).
    pub fn new(
        report: &hearth_hardware::HardwareReport,
        benchmark: Option<&hearth_inference::capability::CapabilityReport>,
        device: &hearth_inference::ComputeDevice,
        expected: Option<ExpectedEarnings>,
    ) -> Self {
        let word = |value: &dyn std::fmt::Debug| format!("{value:?}").to_lowercase();
        let (summary, runs_on_gpu) = hardware_summary(device, report);
        let compute_device = device.describe();
        Self {
            summary,
            runs_on_gpu,
            gpus: report
                .gpus
                .iter()
                .map(|g| GpuView {
                    name: g.name.clone(),
                    vendor: word(&g.vendor),
                    kind: word(&g.kind),
                    apis: g.apis.clone(),
                    driver: g.driver.clone(),
                    driver_version: g.driver_version.clone(),
                    vram_total_bytes: g.vram_total_bytes,
                })
                .collect(),
            cpu_model: report.cpu.model.clone(),
            cpu_threads: u32::try_from(report.cpu.logical_cores).unwrap_or(u32::MAX),
            memory_total_bytes: report.memory.total_bytes,
            nvml: match &report.nvml {
                hearth_hardware::SourceStatus::Available => "available".into(),
                hearth_hardware::SourceStatus::NotAvailable { reason } => reason.clone(),
            },
            compute_device,
            benchmark: benchmark.map(|b| BenchmarkView {
                measured_at_unix: b.measured_at_unix,
                seconds: b.seconds,
                backends: b
                    .backends
                    .iter()
                    .map(|f| BackendView {
                        backend: f.backend.clone(),
                        device: f.device.clone(),
                        matmul_gflops: f.matmul_gflops,
                        bandwidth_gb_per_s: f.bandwidth_gb_per_s,
                        memory_bytes: f.memory_bytes,
                    })
                    .collect(),
                models: b
                    .models
                    .iter()
                    .map(|m| ModelFitView {
                        model: m.model.clone(),
                        needs_bytes: m.needs_bytes,
                        fits: m.fits.clone(),
                    })
                    .collect(),
            }),
            expected,
        }
    }
}

/// One entry of the built-in game list, with the owner's switch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct GameEntryView {
    /// The entry as the list and the setting `games_off` spell it (a folder or a name).
    pub entry: String,
    /// In words: "Steam games (native and Proton)", or the program's name.
    pub label: String,
    pub enabled: bool,
}

/// A game that paused Hearth lately.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct SeenGame {
    pub name: String,
    /// When it last paused Hearth (ms since the Unix epoch).
    #[ts(type = "number")]
    pub paused_at_ms: u64,
}

/// What the Settings page shows about games.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct GamesView {
    /// Game library folders of launchers (Steam, Epic, GOG, …).
    pub launchers: Vec<GameEntryView>,
    /// Games known by their program's name.
    pub names: Vec<GameEntryView>,
    /// The owner's own entries.
    pub yours: Vec<String>,
    /// Games that paused Hearth lately, newest first (at most 10).
    pub recent: Vec<SeenGame>,
}

impl GamesView {
    /// The view of the built-in `list` with `config`'s switches and own entries, and the games
    /// among `changes` (state changes, any order).
    pub fn new(
        list: &crate::pause::games::GameList,
        config: &crate::NodeConfig,
        changes: &[crate::NodeStatus],
    ) -> Self {
        let off = |entry: &str| {
            config
                .games_off
                .iter()
                .any(|o| o.eq_ignore_ascii_case(entry))
        };
        let launchers = list
            .path_markers
            .iter()
            .map(|m| GameEntryView {
                entry: m.clone(),
                label: list
                    .launcher_names
                    .get(m)
                    .cloned()
                    .unwrap_or_else(|| m.clone()),
                enabled: !off(m),
            })
            .collect();
        let names = list
            .names
            .iter()
            .map(|n| GameEntryView {
                entry: n.clone(),
                label: n.clone(),
                enabled: !off(n),
            })
            .collect();
        let mut latest = std::collections::BTreeMap::<String, u64>::new();
        for change in changes {
            if let crate::ActivityState::Paused {
                reason: crate::PauseReason::Game { name },
            } = &change.activity
            {
                let at = latest.entry(name.clone()).or_default();
                *at = (*at).max(change.changed_at_ms);
            }
        }
        let mut recent: Vec<SeenGame> = latest
            .into_iter()
            .map(|(name, paused_at_ms)| SeenGame { name, paused_at_ms })
            .collect();
        recent.sort_by_key(|seen| std::cmp::Reverse(seen.paused_at_ms));
        recent.truncate(10);
        Self {
            launchers,
            names,
            yours: config.games.clone(),
            recent,
        }
    }
}

/// The graphics card Hearth's models run on, if they run on one (not a software rasteriser).
fn gpu_in_use(device: &hearth_inference::ComputeDevice) -> Option<&str> {
    device
        .adapter
        .as_ref()
        .filter(|a| a.is_hardware && device.backend == hearth_inference::ComputeBackend::Wgpu)
        .map(|a| a.name.as_str())
}

/// Where Hearth runs its models, as a gamer would say it: the card's name, or "your processor".
pub fn plain_device(device: &hearth_inference::ComputeDevice) -> String {
    gpu_in_use(device).map_or_else(|| "your processor".to_owned(), str::to_owned)
}

/// The Hardware page's headline and whether Hearth runs on a graphics card.
pub fn hardware_summary(
    device: &hearth_inference::ComputeDevice,
    report: &hearth_hardware::HardwareReport,
) -> (String, bool) {
    let gib = |bytes: u64| (bytes as f64 / f64::from(1u32 << 30)).round();
    if let Some(name) = gpu_in_use(device) {
        let memory = report
            .gpus
            .iter()
            .find(|g| g.name == name)
            .and_then(|g| g.vram_total_bytes)
            .map(|bytes| format!(", {} GB", gib(bytes)))
            .unwrap_or_default();
        return (format!("{name}{memory}: Hearth runs on it"), true);
    }
    let unused: Vec<&str> = report
        .gpus
        .iter()
        .filter(|g| {
            matches!(
                g.kind,
                hearth_hardware::GpuKind::Discrete | hearth_hardware::GpuKind::Integrated
            )
        })
        .map(|g| g.name.as_str())
        .collect();
    let summary = match unused.as_slice() {
        [] => "No supported GPU found: Hearth uses your processor (slower, earns less)".to_owned(),
        names => format!(
            "{} found, but Hearth cannot use it yet: Hearth uses your processor (slower, earns less)",
            names.join(" and ")
        ),
    };
    (summary, false)
}
