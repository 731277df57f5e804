//! The figures the pages show: jobs, earnings, the pool, and live resource use.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Where a job stands, as the ledger records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Running now.
    Running,
    /// Finished and accepted by the pool.
    Completed,
    /// Finished with an error.
    Failed,
    /// Given back to the pool (the owner needed the GPU, or the node was told to stop).
    Returned,
    /// Running when Hearth stopped; the pool ran it again.
    Interrupted,
}

impl From<hearth_ledger::JobStatus> for JobState {
    fn from(status: hearth_ledger::JobStatus) -> Self {
        use hearth_ledger::JobStatus as S;
        match status {
            S::Running => JobState::Running,
            S::Completed => JobState::Completed,
            S::Failed => JobState::Failed,
            S::Returned => JobState::Returned,
            S::Interrupted => JobState::Interrupted,
        }
    }
}

/// One job, for lists and notifications (the ledger's record without the receipt's bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct JobSummary {
    pub job_id: String,
    pub model: String,
    /// `embeddings`, `chat`, `image_classification` or `chat_score`.
    pub task: String,
    pub state: JobState,
    #[ts(type = "number")]
    pub started_unix_ms: u64,
    #[ts(type = "number | null")]
    pub ended_unix_ms: Option<u64>,
    /// Units billed (tokens or images).
    #[ts(type = "number")]
    pub units: u64,
    /// Credits earned, in millionths of a credit.
    #[ts(type = "number")]
    pub micro_credits: u64,
    /// Position of the pool's receipt in this node's chain, once paid.
    #[ts(type = "number | null")]
    pub receipt_sequence: Option<u64>,
    /// Why it failed or was returned.
    pub note: Option<String>,
}

impl From<&hearth_ledger::JobRecord> for JobSummary {
    fn from(record: &hearth_ledger::JobRecord) -> Self {
        Self {
            job_id: record.job_id.clone(),
            model: record.model.clone(),
            task: record.task.clone(),
            state: record.status.into(),
            started_unix_ms: record.started_unix_ms,
            ended_unix_ms: record.ended_unix_ms,
            units: record.units,
            micro_credits: record.micro_credits,
            receipt_sequence: record.receipt.as_ref().map(|r| r.receipt.sequence),
            note: record.note.clone(),
        }
    }
}

/// Earnings at a glance, from the ledger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
pub struct Earnings {
    /// Credits earned since local midnight, in millionths.
    #[ts(type = "number")]
    pub today_micro_credits: u64,
    /// Jobs completed since local midnight.
    #[ts(type = "number")]
    pub today_jobs: u64,
    /// Jobs failed since local midnight.
    #[ts(type = "number")]
    pub today_failed: u64,
    /// Credits earned over the last 60 minutes: the current rate per hour.
    #[ts(type = "number")]
    pub last_hour_micro_credits: u64,
    /// Credits earned since this node's first job (every receipt in the ledger).
    #[ts(type = "number")]
    pub lifetime_micro_credits: u64,
    /// Energy Hearth's jobs used since local midnight (GPU and its share of the processor).
    pub today_energy_wh: f64,
    /// Some of `today_energy_wh` was estimated rather than measured.
    pub today_energy_estimated: bool,
    /// Credits whose receipts are younger than the pool's settlement time: not payable yet
    /// (counted by the hour, so within an hour of exact). All are pending while the pool's
    /// terms are unknown.
    #[ts(type = "number")]
    pub pending_micro_credits: u64,
    /// Credits past the settlement time: payable to the payout address.
    #[ts(type = "number")]
    pub payable_micro_credits: u64,
    /// True when the pool pays demo credits (the embedded local pool).
    pub demo: bool,
}

/// The pool this node works for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
pub struct PoolStatus {
    pub url: String,
    /// The pool's own name, once it answered.
    pub name: Option<String>,
    pub connected: bool,
    /// The local demo pool: its credits are not money.
    pub demo: bool,
    /// The last error talking to it, while disconnected.
    pub error: Option<String>,
    /// What the pool pays, once it said (older pools do not).
    pub terms: Option<PoolTerms>,
    /// What keeps work from running as it should, in words: a model whose files were damaged
    /// being fetched again, jobs failing in a row. Empty when nothing does.
    #[serde(default)]
    pub notices: Vec<String>,
    /// Models being fetched from the pool (ones it sells that this computer lacks).
    #[serde(default)]
    pub downloads: Vec<ModelDownload>,
    /// A newer Hearth than this one, as the pool told when the node joined.
    #[serde(default)]
    pub new_version: Option<NewVersion>,
    /// The models this node offers the pool now (once joined): empty while the first ones are
    /// still being fetched.
    #[serde(default)]
    pub serving: Vec<String>,
}

/// A newer release of Hearth, which the owner may install (Hearth never installs it itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct NewVersion {
    /// E.g. `0.2.0`.
    pub version: String,
    /// Where to get it (always https).
    pub url: String,
    /// The first line of its release notes.
    pub headline: String,
}

impl NewVersion {
    /// What a pool's notice tells this node's owner: something only when the release is newer
    /// than `running` (this program's version) and its address is https (a pool's text is
    /// never made a link of another kind).
    pub fn from_notice(notice: &hearth_protocol::ReleaseNotice, running: &str) -> Option<Self> {
        (notice.is_newer_than(running) && notice.url.starts_with("https://")).then(|| Self {
            version: notice.version.trim().trim_start_matches('v').to_owned(),
            url: notice.url.clone(),
            headline: notice.headline().to_owned(),
        })
    }
}

/// A model being fetched from the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ModelDownload {
    pub model: String,
    /// Bytes of its files on disk (what an earlier attempt kept included).
    #[ts(type = "number")]
    pub done_bytes: u64,
    #[ts(type = "number")]
    pub total_bytes: u64,
    /// Bytes received per second in this attempt.
    pub bytes_per_second: f64,
    /// Why the last attempt stopped, while it waits to go on.
    pub error: Option<String>,
}

/// The pool's payout terms, as it told them when the node joined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct PoolTerms {
    /// One credit in `currency`, at the pool's rate.
    pub credit_value: f64,
    pub currency: String,
    /// How long after a receipt its credits become payable.
    #[ts(type = "number")]
    pub settlement_ms: u64,
}

/// One GPU's live readings; `None` where the board does not report a figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct GpuLive {
    /// Stable within this machine: `nvml:0`, `drm:card1`.
    pub id: String,
    pub name: String,
    /// Where the figures come from, in words: "NVIDIA driver (NVML)", "Linux amdgpu driver".
    pub source: String,
    pub utilisation_percent: Option<f32>,
    #[ts(type = "number | null")]
    pub vram_used_bytes: Option<u64>,
    #[ts(type = "number | null")]
    pub vram_total_bytes: Option<u64>,
    /// What Hearth's loaded models hold of `vram_used_bytes` (on the GPU they run on).
    #[ts(type = "number | null")]
    pub hearth_vram_bytes: Option<u64>,
    pub temperature_c: Option<f32>,
    /// Measured board power; `None` without a sensor.
    pub power_w: Option<f32>,
    pub fan_percent: Option<f32>,
    /// Energy over the last interval is an estimate (no power sensor).
    pub energy_estimated: bool,
}

/// Live resource use, once a second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct Telemetry {
    #[ts(type = "number")]
    pub at_unix_ms: u64,
    /// Whole machine, 0..=100.
    pub cpu_percent: f32,
    /// Hearth itself, in percent of the whole machine (0..=100).
    pub hearth_cpu_percent: f32,
    /// Logical cores (threads).
    pub logical_cores: u32,
    #[ts(type = "number")]
    pub ram_used_bytes: u64,
    #[ts(type = "number")]
    pub ram_total_bytes: u64,
    /// Hearth's own memory (resident set), part of `ram_used_bytes`.
    #[ts(type = "number")]
    pub hearth_ram_bytes: u64,
    /// The processor's package power.
    pub cpu_power_w: f32,
    /// True when `cpu_power_w` is CPU use × the processor's rated power, not measured.
    pub cpu_power_estimated: bool,
    pub cpu_temperature_c: Option<f32>,
    pub gpus: Vec<GpuLive>,
}

/// Where a GPU's figures come from, by the id the sampler gives it.
fn gpu_source(id: &str) -> &'static str {
    if id.starts_with("nvml:") {
        "NVIDIA driver (NVML)"
    } else if id.starts_with("drm:") {
        "Linux graphics driver (sysfs)"
    } else {
        "driver"
    }
}

impl From<&hearth_hardware::TelemetrySample> for Telemetry {
    fn from(sample: &hearth_hardware::TelemetrySample) -> Self {
        let cores = sample.logical_cores.max(1);
        Self {
            at_unix_ms: sample.at_unix_ms,
            cpu_percent: sample.cpu_percent,
            hearth_cpu_percent: (sample.process_cpu_percent / cores as f32).clamp(0.0, 100.0),
            logical_cores: u32::try_from(cores).unwrap_or(u32::MAX),
            ram_used_bytes: sample.ram_used_bytes,
            ram_total_bytes: sample.ram_total_bytes,
            hearth_ram_bytes: sample.process_memory_bytes,
            cpu_power_w: sample.cpu_power_w,
            cpu_power_estimated: sample.cpu_power_estimated,
            cpu_temperature_c: sample.cpu_temperature_c,
            gpus: sample
                .gpus
                .iter()
                .map(|g| GpuLive {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    source: gpu_source(&g.id).to_owned(),
                    utilisation_percent: g.utilisation_percent,
                    vram_used_bytes: g.vram_used_bytes,
                    vram_total_bytes: g.vram_total_bytes,
                    hearth_vram_bytes: None,
                    temperature_c: g.temperature_c,
                    power_w: g.power_w,
                    fan_percent: g.fan_percent,
                    energy_estimated: g.energy_estimated,
                })
                .collect(),
        }
    }
}
