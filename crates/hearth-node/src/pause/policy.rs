//! The pause policy as a pure state machine: what the host is doing (games, other programs on
//! the GPU, a fullscreen window, activity, temperature, memory pressure, the schedule) goes in;
//! the automatic part of the node's state comes out, in the node's own model
//! ([`ActivityState`] with its [`PauseReason`]). The owner's own pause is not the policy's:
//! [`crate::Node`] keeps it (with their "Resume anyway") over the policy's verdict, and the
//! running node acts on the state that results (stops leasing, frees GPU memory after a while, sets
//! the duty cycle). Time is passed in, so every transition and every hysteresis is tested
//! without waiting.
//!
//! Rules:
//! - Any reason to pause pauses at once.
//! - After a game, another GPU program or a fullscreen window goes away, work resumes only when
//!   none has been seen for [`PolicyConfig::cooldown`] (a game restarting or loading a new level
//!   does not bounce the node in and out).
//! - Temperature has hysteresis: pause at [`PolicyConfig::temperature_stop_c`], resume at or
//!   below [`PolicyConfig::temperature_resume_c`].
//! - With nothing pausing it: in idle-only mode an active user pauses the node; otherwise an
//!   active user throttles it to [`PolicyConfig::throttle_when_active`] (when set).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::status::{ActivityState, PauseReason};

/// Settings of the policy.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Quiet time after the last game/GPU program/fullscreen window before resuming.
    pub cooldown: Duration,
    /// Pause at or above this GPU temperature (°C).
    pub temperature_stop_c: f32,
    /// After a temperature pause, resume at or below this (°C).
    pub temperature_resume_c: f32,
    /// Work only while the user is away.
    pub idle_only: bool,
    /// Duty cycle (percent) while the user is active but not gaming; `None` runs flat out.
    pub throttle_when_active: Option<u8>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            cooldown: Duration::from_secs(30),
            temperature_stop_c: 83.0,
            temperature_resume_c: 70.0,
            idle_only: false,
            throttle_when_active: Some(50),
        }
    }
}

/// Something that happened on the host.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    GameStarted {
        name: String,
    },
    GameEnded {
        name: String,
    },
    GpuProcessSeen {
        pid: u32,
        name: String,
    },
    GpuProcessGone {
        pid: u32,
    },
    Fullscreen(bool),
    /// The user is at the machine (keyboard/mouse recently used).
    UserActive(bool),
    /// GPU temperature in °C.
    Temperature(f32),
    /// Free GPU memory is below the budget.
    VramPressure(bool),
    /// The weekly schedule allows work now.
    ScheduleAllows(bool),
    /// The computer runs on its battery (no mains power).
    OnBattery(bool),
}

/// The policy.
#[derive(Debug)]
pub struct Policy {
    config: PolicyConfig,
    games: BTreeSet<String>,
    gpu_processes: BTreeMap<u32, String>,
    fullscreen: bool,
    user_active: bool,
    hot: bool,
    vram_pressure: bool,
    schedule_allows: bool,
    on_battery: bool,
    /// When the last game-like reason went away, while the cooldown runs.
    quiet_since: Option<Instant>,
    state: ActivityState,
    /// An instant and the wall-clock time then, to state a cooldown's end as a clock time.
    clock: (Instant, u64),
}

impl Policy {
    /// A running node with nothing pausing it.
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            games: BTreeSet::new(),
            gpu_processes: BTreeMap::new(),
            fullscreen: false,
            user_active: false,
            hot: false,
            vram_pressure: false,
            schedule_allows: true,
            on_battery: false,
            quiet_since: None,
            state: ActivityState::Running,
            clock: (Instant::now(), hearth_protocol::now_unix_ms()),
        }
    }

    /// The automatic part of the node's state now.
    pub fn state(&self) -> &ActivityState {
        &self.state
    }

    /// `at` as milliseconds since the Unix epoch (the wall clock the node's state speaks).
    pub fn unix_ms(&self, at: Instant) -> u64 {
        let (anchor, anchor_ms) = self.clock;
        match at.checked_duration_since(anchor) {
            Some(after) => anchor_ms.saturating_add(after.as_millis() as u64),
            None => anchor_ms.saturating_sub(anchor.duration_since(at).as_millis() as u64),
        }
    }

    /// Take in one observation at `now`; whether the state changed.
    pub fn handle(&mut self, input: Input, now: Instant) -> bool {
        let had_game_like = self.game_like().is_some();
        match input {
            Input::GameStarted { name } => {
                self.games.insert(name);
            }
            Input::GameEnded { name } => {
                self.games.remove(&name);
            }
            Input::GpuProcessSeen { pid, name } => {
                self.gpu_processes.insert(pid, name);
            }
            Input::GpuProcessGone { pid } => {
                self.gpu_processes.remove(&pid);
            }
            Input::Fullscreen(on) => self.fullscreen = on,
            Input::UserActive(active) => self.user_active = active,
            Input::Temperature(c) => {
                if c >= self.config.temperature_stop_c {
                    self.hot = true;
                } else if c <= self.config.temperature_resume_c {
                    self.hot = false;
                }
            }
            Input::VramPressure(on) => self.vram_pressure = on,
            Input::ScheduleAllows(yes) => self.schedule_allows = yes,
            Input::OnBattery(yes) => self.on_battery = yes,
        }
        match (had_game_like, self.game_like().is_some()) {
            (true, false) => self.quiet_since = Some(now),
            (_, true) => self.quiet_since = None,
            _ => {}
        }
        self.evaluate(now)
    }

    /// Let time pass (ends cooldowns); whether the state changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        self.evaluate(now)
    }

    fn game_like(&self) -> Option<PauseReason> {
        if let Some(game) = self.games.iter().next() {
            return Some(PauseReason::Game { name: game.clone() });
        }
        if let Some(name) = self.gpu_processes.values().next() {
            return Some(PauseReason::GpuProcess { name: name.clone() });
        }
        self.fullscreen.then_some(PauseReason::Fullscreen)
    }

    /// The most important reason not to work now.
    fn reason(&mut self, now: Instant) -> Option<PauseReason> {
        if let Some(reason) = self.game_like() {
            return Some(reason);
        }
        let checks = [
            (self.hot, PauseReason::Temperature),
            (self.vram_pressure, PauseReason::VramPressure),
            (!self.schedule_allows, PauseReason::Schedule),
            (self.on_battery, PauseReason::OnBattery),
            (
                self.config.idle_only && self.user_active,
                PauseReason::UserActive,
            ),
        ];
        if let Some((_, reason)) = checks.into_iter().find(|(on, _)| *on) {
            return Some(reason);
        }
        if let Some(since) = self.quiet_since {
            let end = since + self.config.cooldown;
            if now < end {
                return Some(PauseReason::CoolingDown {
                    until_ms: self.unix_ms(end),
                });
            }
            self.quiet_since = None;
        }
        None
    }

    fn evaluate(&mut self, now: Instant) -> bool {
        let next = match self.reason(now) {
            Some(reason) => ActivityState::Paused { reason },
            None => match self.config.throttle_when_active {
                Some(duty) if self.user_active && duty < 100 => ActivityState::Throttled {
                    duty_percent: duty.max(1),
                },
                _ => ActivityState::Running,
            },
        };
        let changed = next != self.state;
        self.state = next;
        changed
    }
}

/// Decides "GPU memory is short" from a GPU's memory figures, with hysteresis.
///
/// What matters is the room other programs leave Hearth: total minus what they hold (used
/// minus Hearth's own models). It is short when that room is below what Hearth's models have
/// needed at most plus `min_free`, and no longer short once it exceeds that by another
/// `min_free`. Hearth freeing its own models during a pause changes neither side, so the node
/// does not bounce between pausing and loading.
#[derive(Clone, Debug)]
pub struct VramGuard {
    min_free: u64,
    peak_ours: u64,
    short: bool,
}

impl VramGuard {
    /// A guard that keeps `min_free` bytes free for other programs.
    pub fn new(min_free: u64) -> Self {
        Self {
            min_free,
            peak_ours: 0,
            short: false,
        }
    }

    /// Take one reading (`ours`: what Hearth's loaded models hold); whether memory is short.
    pub fn observe(&mut self, total: u64, used: u64, ours: u64) -> bool {
        self.peak_ours = self.peak_ours.max(ours);
        let others = used.saturating_sub(ours);
        let room = total.saturating_sub(others);
        let need = self.peak_ours.saturating_add(self.min_free);
        if self.short {
            self.short = room < need.saturating_add(self.min_free);
        } else {
            self.short = room < need;
        }
        self.short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vram_is_short_when_others_crowd_us_out_and_freeing_ours_does_not_bounce() {
        const MIB: u64 = 1 << 20;
        let mut guard = VramGuard::new(512 * MIB);
        // 8 GiB card, desktop holds 1 GiB, our models 1 GiB.
        assert!(!guard.observe(8192 * MIB, 2048 * MIB, 1024 * MIB));
        // A game takes 6 GiB: 1 GiB of room left for 1 GiB of models + 512 MiB spare.
        assert!(guard.observe(8192 * MIB, 8192 * MIB, 1024 * MIB));
        // We free our models: the game still leaves too little room.
        assert!(guard.observe(8192 * MIB, 7168 * MIB, 0));
        // The game shrinks to 5.5 GiB: room 1.5 GiB = need, but not need + spare yet.
        assert!(guard.observe(8192 * MIB, 6656 * MIB, 0));
        // The game ends.
        assert!(!guard.observe(8192 * MIB, 1024 * MIB, 0));
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    fn game(name: &str) -> Input {
        Input::GameStarted { name: name.into() }
    }

    fn paused(reason: PauseReason) -> ActivityState {
        ActivityState::Paused { reason }
    }

    #[test]
    fn a_game_pauses_at_once_and_work_resumes_after_the_cooldown() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert!(p.handle(game("Cyberpunk2077.exe"), t0));
        assert_eq!(
            p.state(),
            &paused(PauseReason::Game {
                name: "Cyberpunk2077.exe".into()
            })
        );
        // A second game while paused: nothing changes.
        assert!(!p.handle(game("steam"), secs(t0, 1)));
        assert!(!p.handle(
            Input::GameEnded {
                name: "steam".into()
            },
            secs(t0, 2)
        ));
        let ended = p.handle(
            Input::GameEnded {
                name: "Cyberpunk2077.exe".into(),
            },
            secs(t0, 100),
        );
        assert!(ended, "from the game to the cooldown");
        assert_eq!(
            p.state(),
            &paused(PauseReason::CoolingDown {
                until_ms: p.unix_ms(secs(t0, 130))
            })
        );
        assert!(!p.tick(secs(t0, 129)), "the cooldown's end is stated once");
        assert!(p.tick(secs(t0, 130)));
        assert_eq!(p.state(), &ActivityState::Running);
    }

    #[test]
    fn a_game_back_during_the_cooldown_starts_it_again() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        p.handle(game("g"), t0);
        p.handle(Input::GameEnded { name: "g".into() }, secs(t0, 10));
        p.handle(game("g"), secs(t0, 20));
        p.handle(Input::GameEnded { name: "g".into() }, secs(t0, 25));
        assert!(
            !p.tick(secs(t0, 41)),
            "30 s from the second end, not the first"
        );
        assert!(p.tick(secs(t0, 55)));
        assert_eq!(p.state(), &ActivityState::Running);
    }

    #[test]
    fn other_gpu_programs_and_fullscreen_windows_count_like_games() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert!(p.handle(
            Input::GpuProcessSeen {
                pid: 7,
                name: "blender".into()
            },
            t0
        ));
        assert_eq!(
            p.state(),
            &paused(PauseReason::GpuProcess {
                name: "blender".into()
            })
        );
        p.handle(Input::Fullscreen(true), t0);
        p.handle(Input::GpuProcessGone { pid: 7 }, secs(t0, 1));
        assert_eq!(p.state(), &paused(PauseReason::Fullscreen));
        p.handle(Input::Fullscreen(false), secs(t0, 2));
        assert!(p.tick(secs(t0, 32)));
        assert_eq!(p.state(), &ActivityState::Running);
    }

    #[test]
    fn temperature_pauses_with_hysteresis_and_no_cooldown() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert!(!p.handle(Input::Temperature(82.9), t0));
        assert!(p.handle(Input::Temperature(83.0), t0));
        assert_eq!(p.state(), &paused(PauseReason::Temperature));
        assert!(
            !p.handle(Input::Temperature(75.0), t0),
            "not cool enough yet"
        );
        assert!(p.handle(Input::Temperature(70.0), t0));
        assert_eq!(p.state(), &ActivityState::Running);
    }

    #[test]
    fn an_active_user_throttles_or_in_idle_only_mode_pauses() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert!(p.handle(Input::UserActive(true), t0));
        assert_eq!(p.state(), &ActivityState::Throttled { duty_percent: 50 });
        assert!(p.handle(Input::UserActive(false), t0));
        assert_eq!(p.state(), &ActivityState::Running);

        let mut idle_only = Policy::new(PolicyConfig {
            idle_only: true,
            ..PolicyConfig::default()
        });
        assert!(idle_only.handle(Input::UserActive(true), t0));
        assert_eq!(idle_only.state(), &paused(PauseReason::UserActive));
        assert!(idle_only.handle(Input::UserActive(false), t0));
        assert_eq!(idle_only.state(), &ActivityState::Running);
    }

    #[test]
    fn a_laptop_on_battery_pauses_until_it_is_plugged_in() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert!(p.handle(Input::OnBattery(true), t0));
        assert_eq!(p.state(), &paused(PauseReason::OnBattery));
        assert!(p.handle(Input::OnBattery(false), secs(t0, 5)));
        assert_eq!(
            p.state(),
            &ActivityState::Running,
            "no cooldown after power returns"
        );
    }

    #[test]
    fn the_most_important_reason_is_shown() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        p.handle(Input::ScheduleAllows(false), t0);
        p.handle(Input::VramPressure(true), t0);
        p.handle(game("g"), t0);
        let reason = |p: &Policy| match p.state() {
            ActivityState::Paused { reason } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(&p), PauseReason::Game { name: "g".into() });
        p.handle(Input::GameEnded { name: "g".into() }, t0);
        assert_eq!(reason(&p), PauseReason::VramPressure);
        p.handle(Input::VramPressure(false), t0);
        assert_eq!(reason(&p), PauseReason::Schedule);
        p.handle(Input::ScheduleAllows(true), t0);
        assert!(matches!(reason(&p), PauseReason::CoolingDown { .. }));
    }
}
