//! The pause policy as a pure state machine: what the host is doing (games, other programs on
//! the GPU, a fullscreen window, activity, temperature, memory pressure, the schedule) goes in;
//! the automatic pause and the actions to take come out. The owner's own pause is not the
//! policy's: [`crate::Node`] keeps it (with their "Resume anyway"), over the policy's verdict. Time is
//! passed in, so every transition and every hysteresis is tested without waiting.
//!
//! Rules:
//! - Any blocker pauses at once: stop leasing, finish or return the job in flight, free GPU
//!   memory after [`PolicyConfig::free_memory_after`].
//! - After a game, another GPU program or a fullscreen window goes away, work resumes only when
//!   none has been seen for [`PolicyConfig::cooldown`] (a game restarting or loading a new level
//!   does not bounce the node in and out).
//! - Temperature has hysteresis: pause at [`PolicyConfig::temperature_stop_c`], resume at or
//!   below [`PolicyConfig::temperature_resume_c`].
//! - With nothing blocking: in idle-only mode an active user pauses the node; otherwise an active
//!   user throttles it to [`PolicyConfig::throttle_when_active`] (when set).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

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
    /// How long after pausing the models' GPU memory is released (a short pause keeps them).
    pub free_memory_after: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            cooldown: Duration::from_secs(30),
            temperature_stop_c: 83.0,
            temperature_resume_c: 70.0,
            idle_only: false,
            throttle_when_active: Some(50),
            free_memory_after: Duration::from_secs(60),
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
}

/// Why the node is paused, most important first.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocker {
    Game(String),
    GpuProcess(String),
    Fullscreen,
    Temperature,
    VramPressure,
    Schedule,
    /// Idle-only mode and the user is here.
    UserActive,
    /// Waiting out the cooldown after a game (or GPU program, or fullscreen window) ended.
    CoolingDown,
}

/// Where the node stands.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyState {
    Running,
    /// Working only this share of the time.
    Throttled {
        duty_percent: u8,
    },
    /// Not working, because of `reason`, until `until` where known.
    Paused {
        reason: Blocker,
        until: Option<Instant>,
    },
}

/// What the worker must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    StopLeasing,
    /// Finish the job in flight if it ends within the grace period, else give it back.
    FinishOrReturnJob,
    /// Release the models' GPU memory after this long, unless work resumes first.
    FreeGpuMemoryAfter(Duration),
    StartLeasing,
    /// Work this share of the time (100: no throttle).
    SetDutyCycle(u8),
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
    /// When the last game-like blocker went away, while the cooldown runs.
    quiet_since: Option<Instant>,
    state: PolicyState,
}

impl Policy {
    /// A running node with nothing blocking it.
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
            quiet_since: None,
            state: PolicyState::Running,
        }
    }

    /// The current state.
    pub fn state(&self) -> &PolicyState {
        &self.state
    }

    /// Take in one observation at `now`; the actions it calls for.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
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
        }
        match (had_game_like, self.game_like().is_some()) {
            (true, false) => self.quiet_since = Some(now),
            (_, true) => self.quiet_since = None,
            _ => {}
        }
        self.evaluate(now)
    }

    /// Let time pass: ends cooldowns.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.evaluate(now)
    }

    fn game_like(&self) -> Option<Blocker> {
        if let Some(game) = self.games.iter().next() {
            return Some(Blocker::Game(game.clone()));
        }
        if let Some(name) = self.gpu_processes.values().next() {
            return Some(Blocker::GpuProcess(name.clone()));
        }
        self.fullscreen.then_some(Blocker::Fullscreen)
    }

    /// The most important reason not to work now, and until when where known.
    fn blocker(&mut self, now: Instant) -> Option<(Blocker, Option<Instant>)> {
        if let Some(blocker) = self.game_like() {
            return Some((blocker, None));
        }
        let checks = [
            (self.hot, Blocker::Temperature),
            (self.vram_pressure, Blocker::VramPressure),
            (!self.schedule_allows, Blocker::Schedule),
            (
                self.config.idle_only && self.user_active,
                Blocker::UserActive,
            ),
        ];
        if let Some((_, blocker)) = checks.into_iter().find(|(on, _)| *on) {
            return Some((blocker, None));
        }
        if let Some(since) = self.quiet_since {
            let end = since + self.config.cooldown;
            if now < end {
                return Some((Blocker::CoolingDown, Some(end)));
            }
            self.quiet_since = None;
        }
        None
    }

    fn evaluate(&mut self, now: Instant) -> Vec<Action> {
        let was_paused = matches!(self.state, PolicyState::Paused { .. });
        let mut actions = Vec::new();
        match self.blocker(now) {
            Some((reason, until)) => {
                if !was_paused {
                    actions.extend([
                        Action::StopLeasing,
                        Action::FinishOrReturnJob,
                        Action::FreeGpuMemoryAfter(self.config.free_memory_after),
                    ]);
                }
                self.state = PolicyState::Paused { reason, until };
            }
            None => {
                let duty = match self.config.throttle_when_active {
                    Some(duty) if self.user_active => duty.clamp(1, 100),
                    _ => 100,
                };
                let next = if duty < 100 {
                    PolicyState::Throttled { duty_percent: duty }
                } else {
                    PolicyState::Running
                };
                if was_paused {
                    actions.push(Action::StartLeasing);
                }
                if was_paused || next != self.state {
                    actions.push(Action::SetDutyCycle(duty));
                }
                self.state = next;
            }
        }
        actions
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

    const PAUSE: [Action; 3] = [
        Action::StopLeasing,
        Action::FinishOrReturnJob,
        Action::FreeGpuMemoryAfter(Duration::from_secs(60)),
    ];

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    fn game(name: &str) -> Input {
        Input::GameStarted { name: name.into() }
    }

    #[test]
    fn a_game_pauses_at_once_and_work_resumes_after_the_cooldown() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert_eq!(p.handle(game("Cyberpunk2077.exe"), t0), PAUSE);
        assert_eq!(
            p.state(),
            &PolicyState::Paused {
                reason: Blocker::Game("Cyberpunk2077.exe".into()),
                until: None
            }
        );
        // A second game while paused: no new actions.
        assert!(p.handle(game("steam"), secs(t0, 1)).is_empty());
        assert!(
            p.handle(
                Input::GameEnded {
                    name: "steam".into()
                },
                secs(t0, 2)
            )
            .is_empty()
        );
        let ended = p.handle(
            Input::GameEnded {
                name: "Cyberpunk2077.exe".into(),
            },
            secs(t0, 100),
        );
        assert!(ended.is_empty(), "still cooling down");
        assert_eq!(
            p.state(),
            &PolicyState::Paused {
                reason: Blocker::CoolingDown,
                until: Some(secs(t0, 130))
            }
        );
        assert!(p.tick(secs(t0, 129)).is_empty());
        assert_eq!(
            p.tick(secs(t0, 130)),
            [Action::StartLeasing, Action::SetDutyCycle(100)]
        );
        assert_eq!(p.state(), &PolicyState::Running);
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
            p.tick(secs(t0, 41)).is_empty(),
            "30 s from the second end, not the first"
        );
        assert_eq!(p.tick(secs(t0, 55))[0], Action::StartLeasing);
    }

    #[test]
    fn other_gpu_programs_and_fullscreen_windows_count_like_games() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert_eq!(
            p.handle(
                Input::GpuProcessSeen {
                    pid: 7,
                    name: "blender".into()
                },
                t0
            ),
            PAUSE
        );
        p.handle(Input::Fullscreen(true), t0);
        p.handle(Input::GpuProcessGone { pid: 7 }, secs(t0, 1));
        assert_eq!(
            p.state(),
            &PolicyState::Paused {
                reason: Blocker::Fullscreen,
                until: None
            }
        );
        p.handle(Input::Fullscreen(false), secs(t0, 2));
        assert_eq!(p.tick(secs(t0, 32))[0], Action::StartLeasing);
    }

    #[test]
    fn temperature_pauses_with_hysteresis_and_no_cooldown() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert!(p.handle(Input::Temperature(82.9), t0).is_empty());
        assert_eq!(p.handle(Input::Temperature(83.0), t0), PAUSE);
        assert!(
            p.handle(Input::Temperature(75.0), t0).is_empty(),
            "not cool enough yet"
        );
        assert_eq!(
            p.handle(Input::Temperature(70.0), t0),
            [Action::StartLeasing, Action::SetDutyCycle(100)]
        );
    }

    #[test]
    fn an_active_user_throttles_or_in_idle_only_mode_pauses() {
        let t0 = Instant::now();
        let mut p = Policy::new(PolicyConfig::default());
        assert_eq!(
            p.handle(Input::UserActive(true), t0),
            [Action::SetDutyCycle(50)]
        );
        assert_eq!(p.state(), &PolicyState::Throttled { duty_percent: 50 });
        assert_eq!(
            p.handle(Input::UserActive(false), t0),
            [Action::SetDutyCycle(100)]
        );

        let mut idle_only = Policy::new(PolicyConfig {
            idle_only: true,
            ..PolicyConfig::default()
        });
        assert_eq!(idle_only.handle(Input::UserActive(true), t0), PAUSE);
        assert_eq!(
            idle_only.handle(Input::UserActive(false), t0),
            [Action::StartLeasing, Action::SetDutyCycle(100)]
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
            PolicyState::Paused { reason, .. } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(&p), Blocker::Game("g".into()));
        p.handle(Input::GameEnded { name: "g".into() }, t0);
        assert_eq!(reason(&p), Blocker::VramPressure);
        p.handle(Input::VramPressure(false), t0);
        assert_eq!(reason(&p), Blocker::Schedule);
        p.handle(Input::ScheduleAllows(true), t0);
        assert_eq!(reason(&p), Blocker::CoolingDown);
    }
}
