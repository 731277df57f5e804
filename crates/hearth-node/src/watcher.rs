//! The host watcher: a thread that looks for games several times a second, feeds what it sees
//! to the pause [`Policy`], and sets the node's automatic pause from the policy's verdict. The
//! node's state drives the worker, which stops leasing and gives its job back at once.
//!
//! Sources wired here: game processes ([`ProcessScanner`]) and, on Linux with an X display, a
//! fullscreen window in front ([`crate::fullscreen`]). The policy also takes GPU processes,
//! activity, temperature, memory and schedule inputs.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::games::{GameList, ProcessScanner};
use crate::policy::{Blocker, Input, Policy, PolicyConfig, PolicyState};
use crate::{Node, PauseReason};

/// How the watcher runs.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Time between looks (the default, 250 ms, notices a game in about 125 ms on average).
    pub interval: Duration,
    pub policy: PolicyConfig,
    /// The game rules; `None` leaves processes alone.
    pub games: Option<GameList>,
    /// Normally `/proc`.
    pub procfs: PathBuf,
    /// Pause while a fullscreen window is in front (X11).
    pub fullscreen: bool,
    /// The X display to ask (`None`: `$DISPLAY`).
    pub display: Option<String>,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            policy: PolicyConfig::default(),
            games: Some(GameList::builtin()),
            procfs: PathBuf::from("/proc"),
            fullscreen: true,
            display: None,
        }
    }
}

/// A running watcher; dropping it stops the thread.
#[derive(Debug)]
pub struct Watcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Start watching for `node`.
    pub fn start(node: Node, config: WatcherConfig) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hearth-watcher".into())
            .spawn(move || run(&node, config, &stopped))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(node: &Node, config: WatcherConfig, stopped: &mpsc::Receiver<()>) {
    let mut scanner = config
        .games
        .map(|games| ProcessScanner::new(games, &config.procfs, std::process::id()));
    let mut policy = Policy::new(config.policy);
    let mut running_games = std::collections::BTreeSet::new();
    let mut last: Option<PauseReason> = None;
    let mut screen = config
        .fullscreen
        .then(|| fullscreen_source(config.display.as_deref()))
        .flatten();
    let mut was_fullscreen = false;
    loop {
        let now = Instant::now();
        if let Some(source) = &screen {
            match source.is_fullscreen() {
                Ok(on) if on != was_fullscreen => {
                    tracing::info!(fullscreen = on, "fullscreen window changed");
                    policy.handle(Input::Fullscreen(on), now);
                    was_fullscreen = on;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "lost the X display: fullscreen detection is off");
                    screen = None;
                    if was_fullscreen {
                        policy.handle(Input::Fullscreen(false), now);
                        was_fullscreen = false;
                    }
                }
            }
        }
        let seen: std::collections::BTreeSet<String> = match &mut scanner {
            Some(scanner) => scanner.scan(now).into_iter().map(|g| g.name).collect(),
            None => std::collections::BTreeSet::new(),
        };
        for name in seen.difference(&running_games) {
            tracing::info!(game = %name, "game started: pausing");
            policy.handle(Input::GameStarted { name: name.clone() }, now);
        }
        for name in running_games.difference(&seen) {
            tracing::info!(game = %name, "game ended");
            policy.handle(Input::GameEnded { name: name.clone() }, now);
        }
        running_games = seen;
        policy.tick(now);
        let reason = pause_reason(policy.state(), now);
        // A cooldown's end is worked out once, not restated (a little later) on every tick.
        let same = match (&last, &reason) {
            (Some(PauseReason::CoolingDown { .. }), Some(PauseReason::CoolingDown { .. })) => true,
            (a, b) => a == b,
        };
        if !same {
            node.set_automatic(reason.clone());
            last = reason;
        }
        match stopped.recv_timeout(config.interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Told to stop, or the watcher handle is gone.
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

#[cfg(target_os = "linux")]
type FullscreenSource = crate::fullscreen::X11Fullscreen;

#[cfg(target_os = "linux")]
fn fullscreen_source(display: Option<&str>) -> Option<FullscreenSource> {
    if display.is_none() && std::env::var_os("DISPLAY").is_none() {
        return None;
    }
    match crate::fullscreen::X11Fullscreen::connect(display) {
        Ok(source) => Some(source),
        Err(error) => {
            tracing::info!(%error, "no X display: fullscreen detection is off");
            None
        }
    }
}

/// Other platforms have no fullscreen source yet.
#[cfg(not(target_os = "linux"))]
struct FullscreenSource;

#[cfg(not(target_os = "linux"))]
impl FullscreenSource {
    fn is_fullscreen(&self) -> Result<bool, String> {
        Ok(false)
    }
}

#[cfg(not(target_os = "linux"))]
fn fullscreen_source(_display: Option<&str>) -> Option<FullscreenSource> {
    None
}

/// The node's automatic pause for a policy state (`None`: no automatic pause).
pub fn pause_reason(state: &PolicyState, now: Instant) -> Option<PauseReason> {
    let PolicyState::Paused { reason, until } = state else {
        return None;
    };
    Some(match reason {
        // The owner's pause is the node's own business, not the policy's.
        Blocker::User => return None,
        Blocker::Game(name) => PauseReason::Game { name: name.clone() },
        Blocker::GpuProcess(name) => PauseReason::GpuProcess { name: name.clone() },
        Blocker::Fullscreen => PauseReason::Fullscreen,
        Blocker::Temperature => PauseReason::Temperature,
        Blocker::VramPressure => PauseReason::VramPressure,
        Blocker::Schedule => PauseReason::Schedule,
        Blocker::UserActive => PauseReason::UserActive,
        Blocker::PoolDown => PauseReason::PoolDown,
        Blocker::CoolingDown => {
            let left = until.map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
            PauseReason::CoolingDown {
                until_ms: hearth_protocol::now_unix_ms() + left.as_millis() as u64,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_states_map_to_pause_reasons() {
        let now = Instant::now();
        assert_eq!(pause_reason(&PolicyState::Running, now), None);
        assert_eq!(
            pause_reason(&PolicyState::Throttled { duty_percent: 50 }, now),
            None
        );
        let game = PolicyState::Paused {
            reason: Blocker::Game("eldenring".into()),
            until: None,
        };
        assert_eq!(
            pause_reason(&game, now),
            Some(PauseReason::Game {
                name: "eldenring".into()
            })
        );
        let cooling = PolicyState::Paused {
            reason: Blocker::CoolingDown,
            until: Some(now + Duration::from_secs(30)),
        };
        let Some(PauseReason::CoolingDown { until_ms }) = pause_reason(&cooling, now) else {
            panic!("not cooling down");
        };
        let left = until_ms.saturating_sub(hearth_protocol::now_unix_ms());
        assert!((29_000..=30_000).contains(&left), "{left}");
    }
}
