//! The node's observable state and the events that announce its changes.
//!
//! Every type here crosses the IPC boundary, so each derives [`TS`] and the UI's
//! TypeScript copy is generated from it (see [`crate::typescript_bindings`]).

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Who asked the node to change its state. Shown to the user ("Paused from the tray").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum ControlSource {
    /// A button in the window.
    Window,
    /// The tray icon's menu.
    Tray,
    /// The command line or the headless API.
    Cli,
}

/// Why the node is not taking work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PauseReason {
    /// The owner paused it by hand.
    User {
        /// Where the owner clicked.
        source: ControlSource,
        /// When the pause ends by itself (ms since the Unix epoch); `None`: until resumed.
        #[ts(type = "number | null")]
        until_ms: Option<u64>,
    },
    /// A game is running.
    Game {
        /// The game's program, e.g. "Cyberpunk2077.exe".
        name: String,
    },
    /// Another program is using the GPU.
    GpuProcess { name: String },
    /// A fullscreen window is in front.
    Fullscreen,
    /// The GPU is too hot.
    Temperature,
    /// Too little free GPU memory.
    VramPressure,
    /// Outside the owner's schedule.
    Schedule,
    /// "Only when I'm away" and the owner is at the computer.
    UserActive,
    /// A laptop runs on its battery.
    OnBattery,
    /// A game (or GPU program, or fullscreen window) just ended: waiting a little in case it
    /// comes back.
    CoolingDown {
        /// When work resumes, in milliseconds since the Unix epoch.
        #[ts(type = "number")]
        until_ms: u64,
    },
}

/// How the node's state reads, written once for every frontend: the tray and the CLI through
/// [`PauseReason::describe`] and [`PauseOverride::describe`], the window through the generated
/// bindings (`PAUSE_WORDING` in `bindings.ts`). Keys are the reasons' `kind`s; `override.*` are
/// the owner's "Resume anyway"; `place.*` where they clicked. Placeholders: `{name}` a
/// program, `{place}`, `{until}` a clock time, `{when}` when work resumes.
pub const PAUSE_WORDING: &[(&str, &str)] = &[
    ("running", "running"),
    (
        "throttled",
        "working {percent}% of the time while you use the computer",
    ),
    ("user", "paused from {place}"),
    ("user_until", "paused from {place} until {until}"),
    ("game", "{name} is running"),
    ("gpu_process", "{name} is using the GPU"),
    ("fullscreen", "a fullscreen window is open"),
    ("temperature", "the GPU is too hot"),
    ("vram_pressure", "GPU memory is short"),
    ("schedule", "outside your schedule"),
    ("user_active", "you are at the computer"),
    ("on_battery", "the computer is running on battery"),
    ("cooling_down", "your game ended; resuming {when}"),
    ("place.window", "the window"),
    ("place.tray", "the tray"),
    ("place.cli", "the command line"),
    ("override.game", "working while {name} runs"),
    ("override.gpu_process", "working while {name} uses the GPU"),
    (
        "override.fullscreen",
        "working behind the fullscreen window",
    ),
    ("override.schedule", "working outside your schedule"),
    ("override.on_battery", "working on battery"),
    (
        "override.user_active",
        "working while you are at the computer",
    ),
    (
        "override.cooling_down",
        "you skipped the wait after your game",
    ),
    ("override.until", "{what}, until {until}"),
    ("override.until_it_ends", "{what}, until it ends"),
];

/// The pauses (by `kind`) the owner may work through with "Resume anyway" or "Skip wait"; the
/// window gets the list through the generated bindings (`OVERRIDABLE`).
pub const OVERRIDABLE: &[&str] = &[
    "game",
    "gpu_process",
    "fullscreen",
    "schedule",
    "user_active",
    "on_battery",
    "cooling_down",
];

/// The wording for `key`, with `{placeholder}`s replaced by `values`.
fn worded(key: &str, values: &[(&str, &str)]) -> String {
    let template = PAUSE_WORDING
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(key, |(_, text)| text);
    values
        .iter()
        .fold(template.to_owned(), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), value)
        })
}

/// A clock time ("14:30") in the local time zone.
fn clock(unix_ms: u64) -> Option<String> {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_millis_opt(i64::try_from(unix_ms).ok()?)
        .single()
        .map(|at| at.format("%H:%M").to_string())
}

impl NodeStatus {
    /// The state in one line for the tray and the CLI: "running", "working 50% of the time
    /// while you use the computer", or why it is paused; the owner's override after a colon.
    pub fn describe(&self) -> String {
        let state = match &self.activity {
            ActivityState::Running => worded("running", &[]),
            ActivityState::Throttled { duty_percent } => {
                worded("throttled", &[("percent", &duty_percent.to_string())])
            }
            ActivityState::Paused { reason } => reason.describe(),
        };
        match &self.overriding {
            Some(o) => format!("{state}: {}", o.describe()),
            None => state,
        }
    }
}

impl ControlSource {
    fn key(self) -> &'static str {
        match self {
            ControlSource::Window => "place.window",
            ControlSource::Tray => "place.tray",
            ControlSource::Cli => "place.cli",
        }
    }
}

impl PauseReason {
    /// The reason's `kind`, as serialised (the wording's key).
    fn kind(&self) -> &'static str {
        match self {
            PauseReason::User { .. } => "user",
            PauseReason::Game { .. } => "game",
            PauseReason::GpuProcess { .. } => "gpu_process",
            PauseReason::Fullscreen => "fullscreen",
            PauseReason::Temperature => "temperature",
            PauseReason::VramPressure => "vram_pressure",
            PauseReason::Schedule => "schedule",
            PauseReason::UserActive => "user_active",
            PauseReason::OnBattery => "on_battery",
            PauseReason::CoolingDown { .. } => "cooling_down",
        }
    }

    /// A short sentence for a status line, e.g. "paused from the tray" (see [`PAUSE_WORDING`]).
    pub fn describe(&self) -> String {
        match self {
            PauseReason::User { source, until_ms } => {
                let place = worded(source.key(), &[]);
                match until_ms.and_then(clock) {
                    Some(until) => worded("user_until", &[("place", &place), ("until", &until)]),
                    None => worded("user", &[("place", &place)]),
                }
            }
            PauseReason::Game { name } | PauseReason::GpuProcess { name } => {
                worded(self.kind(), &[("name", name)])
            }
            PauseReason::CoolingDown { until_ms } => {
                let when =
                    clock(*until_ms).map_or_else(|| "shortly".to_owned(), |t| format!("at {t}"));
                worded("cooling_down", &[("when", &when)])
            }
            other => worded(other.kind(), &[]),
        }
    }

    /// Whether the owner may work through this pause with "Resume anyway" (or "Skip wait").
    /// Heat and short GPU memory are not theirs to override: working through them would harm
    /// the card or crash the game.
    pub fn can_override(&self) -> bool {
        OVERRIDABLE.contains(&self.kind())
    }

    /// True when an override of `self` also lifts `automatic`: the same pause, or the wait
    /// that follows a game, another GPU program or a fullscreen window that was overridden.
    pub fn covers(&self, automatic: &PauseReason) -> bool {
        let follows = matches!(automatic, PauseReason::CoolingDown { .. })
            && matches!(
                self,
                PauseReason::Game { .. }
                    | PauseReason::GpuProcess { .. }
                    | PauseReason::Fullscreen
                    | PauseReason::CoolingDown { .. }
            );
        follows || self == automatic
    }
}

/// The owner's "Resume anyway" (or "Skip wait"): Hearth works although `reason` would pause
/// it, until that reason ends or until `until_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct PauseOverride {
    /// The automatic pause being worked through.
    pub reason: PauseReason,
    /// When the override ends by itself (ms since the Unix epoch); `None`: when its reason
    /// ends (the game closes, the wait is over).
    #[ts(type = "number | null")]
    pub until_ms: Option<u64>,
    /// Where the owner asked.
    pub source: ControlSource,
}

impl PauseOverride {
    /// "working while Cyberpunk2077.exe runs, until it ends" (see [`PAUSE_WORDING`]).
    pub fn describe(&self) -> String {
        let name = match &self.reason {
            PauseReason::Game { name } | PauseReason::GpuProcess { name } => name.as_str(),
            _ => "",
        };
        let what = worded(
            &format!("override.{}", self.reason.kind()),
            &[("name", name)],
        );
        if matches!(self.reason, PauseReason::CoolingDown { .. }) {
            return what;
        }
        match self.until_ms.and_then(clock) {
            Some(until) => worded("override.until", &[("what", &what), ("until", &until)]),
            None => worded("override.until_it_ends", &[("what", &what)]),
        }
    }
}

/// Whether the node is lending its GPU right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivityState {
    /// Taking and running jobs.
    Running,
    /// Taking jobs but resting between them, so the owner's desktop stays smooth while they
    /// use the computer.
    Throttled {
        /// The share of the time spent working, in percent (1..=99).
        duty_percent: u8,
    },
    /// Not taking jobs.
    Paused {
        /// Why.
        reason: PauseReason,
    },
}

impl ActivityState {
    /// True when the node is paused for any reason.
    pub fn is_paused(&self) -> bool {
        matches!(self, ActivityState::Paused { .. })
    }

    /// The share of the time the worker may compute, in percent: 0 when paused, 100 when
    /// running flat out.
    pub fn duty_percent(&self) -> u8 {
        match self {
            ActivityState::Running => 100,
            ActivityState::Throttled { duty_percent } => *duty_percent,
            ActivityState::Paused { .. } => 0,
        }
    }
}

/// A snapshot of the node's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct NodeStatus {
    /// Running or paused, and why.
    pub activity: ActivityState,
    /// When `activity` last changed, in milliseconds since the Unix epoch.
    #[ts(type = "number")]
    pub changed_at_ms: u64,
    /// Grows by one with every change, so a frontend can drop a snapshot older than one it
    /// already shows (an event and a query answer may arrive in either order).
    #[ts(type = "number")]
    pub revision: u64,
    /// The owner's "Resume anyway" in force: an automatic pause they chose to work through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub overriding: Option<PauseOverride>,
}

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

/// Everything the overview page needs, in one answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct Overview {
    pub node_id: String,
    /// Where jobs run, in plain words: the graphics card's name, or "your processor".
    pub device: String,
    pub status: NodeStatus,
    pub pool: PoolStatus,
    pub earnings: Earnings,
    /// Newest first.
    pub jobs: Vec<JobSummary>,
    pub telemetry: Option<Telemetry>,
    /// The newest state changes (pauses, resumes), newest first, kept across restarts.
    pub changes: Vec<NodeStatus>,
}

/// Everything the node announces, in order, on its broadcast channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// The node started or stopped taking work.
    StatusChanged {
        /// The state after the change.
        status: NodeStatus,
    },
    /// A job was leased and started.
    JobStarted { job: JobSummary },
    /// A job ended (completed, failed, returned); already durable in the ledger.
    JobEnded { job: JobSummary },
    /// Credits changed (after a completed job or a receipt collected late).
    EarningsChanged { earnings: Earnings },
    /// The pool connection changed.
    PoolChanged { pool: PoolStatus },
    /// Live resource use.
    Telemetry { telemetry: Telemetry },
    /// The capability benchmark is running: how far (0..=1) and what it measures now.
    BenchmarkProgress { fraction: f32, message: String },
    /// The owner saved new settings (the desktop applies start at login and notifications).
    SettingsChanged { settings: crate::NodeConfig },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_with_tagged_unions() {
        let status = NodeStatus {
            activity: ActivityState::Paused {
                reason: PauseReason::User {
                    source: ControlSource::Tray,
                    until_ms: None,
                },
            },
            changed_at_ms: 1_700_000_000_000,
            revision: 3,
            overriding: None,
        };
        let json = serde_json::to_value(NodeEvent::StatusChanged { status }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "status_changed",
                "status": {
                    "activity": {"kind": "paused", "reason": {"kind": "user", "source": "tray", "until_ms": null}},
                    "changed_at_ms": 1_700_000_000_000_u64,
                    "revision": 3
                }
            })
        );
    }

    #[test]
    fn every_reason_and_override_has_its_wording() {
        let reasons = [
            PauseReason::Game {
                name: "g.exe".into(),
            },
            PauseReason::GpuProcess {
                name: "blender".into(),
            },
            PauseReason::Fullscreen,
            PauseReason::Temperature,
            PauseReason::VramPressure,
            PauseReason::Schedule,
            PauseReason::UserActive,
            PauseReason::OnBattery,
            PauseReason::CoolingDown { until_ms: 0 },
        ];
        let kinds: Vec<&str> = reasons.iter().map(PauseReason::kind).collect();
        assert!(
            OVERRIDABLE.iter().all(|k| kinds.contains(k)),
            "every overridable kind is a real one"
        );
        for reason in reasons {
            let text = reason.describe();
            assert!(!text.contains('{') && !text.contains('_'), "{text}");
            if reason.can_override() {
                let anyway = PauseOverride {
                    reason,
                    until_ms: None,
                    source: ControlSource::Tray,
                }
                .describe();
                // A missing key would read as the key itself.
                assert!(
                    !anyway.contains('{') && !anyway.starts_with("override."),
                    "{anyway}"
                );
            }
        }
        let game = PauseOverride {
            reason: PauseReason::Game {
                name: "Doom.exe".into(),
            },
            until_ms: None,
            source: ControlSource::Window,
        };
        assert_eq!(
            game.describe(),
            "working while Doom.exe runs, until it ends"
        );
    }

    #[test]
    fn pause_reason_reads_as_a_sentence() {
        let reason = PauseReason::User {
            source: ControlSource::Window,
            until_ms: None,
        };
        assert_eq!(reason.describe(), "paused from the window");
    }
}
