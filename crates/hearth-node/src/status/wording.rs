//! Every state in words, written once: the tray and the CLI read them through `describe`, the
//! window through the generated bindings.

use super::{ActivityState, ControlSource, NodeStatus, PauseOverride, PauseReason};

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
    (
        "disk_full",
        "the disk is full: {needed} more free space is needed; Hearth resumes by itself",
    ),
    (
        "disk_full_unsized",
        "the disk is full; Hearth resumes by itself once it can save again",
    ),
    (
        "storage_failing",
        "Hearth cannot save its data: {error}; it resumes by itself once it can",
    ),
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

/// "120 MB": a size as the owner reads it (decimal megabytes, as file managers show them).
fn megabytes(bytes: u64) -> String {
    format!("{} MB", bytes.div_ceil(1_000_000))
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
    pub(super) fn kind(&self) -> &'static str {
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
            PauseReason::DiskFull { .. } => "disk_full",
            PauseReason::StorageFailing { .. } => "storage_failing",
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
            PauseReason::DiskFull { needed_bytes: 0 } => worded("disk_full_unsized", &[]),
            PauseReason::DiskFull { needed_bytes } => {
                worded("disk_full", &[("needed", &megabytes(*needed_bytes))])
            }
            PauseReason::StorageFailing { error } => worded("storage_failing", &[("error", error)]),
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
