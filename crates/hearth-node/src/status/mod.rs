//! The node's observable state and the events that announce its changes.
//!
//! Every type here crosses the IPC boundary, so each derives [`TS`] and the UI's
//! TypeScript copy is generated from it (see [`crate::typescript_bindings`]).
//!
//! [`wording`] says every state in words, once; [`reports`] holds the figures the pages show
//! (jobs, earnings, the pool, live resource use).

mod reports;
mod wording;

pub use reports::{
    Earnings, GpuLive, JobState, JobSummary, ModelDownload, NewVersion, PoolStatus, PoolTerms,
    Telemetry,
};
pub use wording::{OVERRIDABLE, PAUSE_WORDING};

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
    /// The disk holding Hearth's data is full: nothing could be recorded, so nothing is taken.
    /// Work resumes by itself once a write succeeds.
    DiskFull {
        /// Free space still wanted (Hearth's headroom less what is free); 0 when the disk
        /// shows room but refuses anyway (a quota).
        #[ts(type = "number")]
        needed_bytes: u64,
    },
    /// Writing Hearth's data fails (a read-only or failing disk). Work resumes by itself once
    /// a write succeeds.
    StorageFailing {
        /// What is wrong, in words.
        error: String,
    },
    /// A game (or GPU program, or fullscreen window) just ended: waiting a little in case it
    /// comes back.
    CoolingDown {
        /// When work resumes, in milliseconds since the Unix epoch.
        #[ts(type = "number")]
        until_ms: u64,
    },
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
    fn an_owner_hears_only_of_a_newer_release_at_an_https_address() {
        let notice = |version: &str, url: &str| hearth_protocol::ReleaseNotice {
            version: version.into(),
            url: url.into(),
            notes: "Faster chat on CPUs.\nAnd more.".into(),
        };
        assert_eq!(
            NewVersion::from_notice(&notice("v0.2.0", "https://example.org/0.2"), "0.1.0"),
            Some(NewVersion {
                version: "0.2.0".into(),
                url: "https://example.org/0.2".into(),
                headline: "Faster chat on CPUs.".into(),
            })
        );
        assert_eq!(
            NewVersion::from_notice(&notice("0.1.0", "https://example.org/0.1"), "0.1.0"),
            None,
            "the version it runs"
        );
        for hostile in [
            "javascript:alert(1)",
            "http://example.org",
            "file:///etc/passwd",
        ] {
            assert_eq!(
                NewVersion::from_notice(&notice("9.0.0", hostile), "0.1.0"),
                None,
                "{hostile}"
            );
        }
    }

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
