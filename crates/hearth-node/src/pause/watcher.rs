//! The host watcher: a thread that looks for games several times a second, feeds what it sees
//! to the pause [`Policy`], and sets the node's automatic pause from the policy's verdict. The
//! node's state drives the worker, which stops leasing and gives its job back at once.
//!
//! Sources wired here: game processes ([`ProcessScanner`]), other programs keeping the GPU busy
//! ([`GpuUseMonitor`], once a second), on Linux with an X display a fullscreen window in front
//! and the owner's input (`hearth-desktop`), the owner's weekly schedule, and observations
//! sent from elsewhere ([`PolicyInputs`]: the running node sends GPU temperature and memory).

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::pause::games::{GameList, ProcessScanner};
use crate::pause::gpu_use::{GpuUseConfig, GpuUseMonitor};
use crate::pause::policy::{Input, Policy, PolicyConfig};
use crate::{ActivityState, Node};

/// How the watcher runs.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Time between looks (the default, 250 ms, notices a game in about 125 ms on average).
    pub interval: Duration,
    /// Time between looks while the node is paused (default 500 ms): nothing then needs a
    /// quick answer (a game's end starts a 30 s cooldown), and a paused, hidden Hearth should
    /// cost its owner next to nothing.
    pub paused_interval: Duration,
    pub policy: PolicyConfig,
    /// The game rules; `None` leaves processes alone.
    pub games: Option<GameList>,
    /// Normally `/proc`.
    pub procfs: PathBuf,
    /// Pause while a fullscreen window is in front (X11).
    pub fullscreen: bool,
    /// The X display to ask (`None`: `$DISPLAY`).
    pub display: Option<String>,
    /// When work is allowed.
    pub schedule: crate::pause::schedule::Schedule,
    /// Watch keyboard and mouse (X11): the user counts as active until this long after their
    /// last input. `None`: not watched.
    pub active_for: Option<Duration>,
    /// Watch for other programs keeping the GPU busy; `None`: not watched.
    pub gpu_use: Option<GpuUseConfig>,
    /// NVML, for NVIDIA compute processes (with `gpu_use`).
    pub nvidia: Option<std::sync::Arc<dyn hearth_hardware::NvidiaSource>>,
    /// Pause on battery: the power supplies' folder (`/sys/class/power_supply`); `None`: not
    /// watched.
    pub power_supply: Option<PathBuf>,
}

/// How often other programs' GPU use is sampled.
const GPU_USE_EVERY: Duration = Duration::from_secs(1);

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            paused_interval: Duration::from_millis(500),
            policy: PolicyConfig::default(),
            games: Some(GameList::builtin()),
            procfs: PathBuf::from("/proc"),
            fullscreen: true,
            display: None,
            schedule: crate::pause::schedule::Schedule::default(),
            active_for: None,
            gpu_use: Some(GpuUseConfig::default()),
            nvidia: None,
            power_supply: None,
        }
    }
}

/// What the watcher thread hears besides its own looking.
#[derive(Debug)]
enum Message {
    /// An observation made elsewhere (GPU temperature from telemetry, …).
    Observed(Input),
    Stop,
}

/// Feeds observations made elsewhere into the watcher's policy (cloneable). It follows the
/// watcher through [`Watcher::reconfigure`].
#[derive(Clone, Debug)]
pub struct PolicyInputs(std::sync::Arc<std::sync::Mutex<mpsc::Sender<Message>>>);

impl PolicyInputs {
    /// Tell the policy; acted on at once. Ignored once the watcher has stopped.
    pub fn send(&self, input: Input) {
        let sender = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = sender.send(Message::Observed(input));
    }
}

/// A running watcher; dropping it stops the thread.
#[derive(Debug)]
pub struct Watcher {
    node: Node,
    messages: PolicyInputs,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Start watching for `node`.
    pub fn start(node: Node, config: WatcherConfig) -> std::io::Result<Self> {
        let (sender, inbox) = mpsc::channel();
        let thread = spawn(node.clone(), config, inbox)?;
        Ok(Self {
            node,
            messages: PolicyInputs(std::sync::Arc::new(std::sync::Mutex::new(sender))),
            thread: Some(thread),
        })
    }

    /// A handle for feeding the policy observations (temperature, …).
    pub fn inputs(&self) -> PolicyInputs {
        self.messages.clone()
    }

    /// Watch by `config` from now on (the owner changed a setting): the old thread stops, a
    /// new one starts and takes over the inputs. What the old one had seen (a running game,
    /// a cooldown) is looked at afresh; observations sent from elsewhere arrive again within
    /// their period (telemetry: a second).
    pub fn reconfigure(&mut self, config: WatcherConfig) -> std::io::Result<()> {
        // Observations from now on wait for the new thread; the old one is stopped before the
        // new one starts, so the two never both set the node's state.
        let (sender, inbox) = mpsc::channel();
        let old = std::mem::replace(
            &mut *self.messages.0.lock().unwrap_or_else(|e| e.into_inner()),
            sender,
        );
        let _ = old.send(Message::Stop);
        if let Some(previous) = self.thread.take()
            && previous.join().is_err()
        {
            tracing::error!("the pause watcher had panicked (its panic was logged); starting anew");
        }
        self.thread = Some(spawn(self.node.clone(), config, inbox)?);
        tracing::info!("pause rules changed: watching by the new settings");
        Ok(())
    }
}

fn spawn(
    node: Node,
    config: WatcherConfig,
    inbox: mpsc::Receiver<Message>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hearth-watcher".into())
        .spawn(move || run(&node, config, &inbox))
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.messages.send_stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the pause watcher had panicked (its panic was logged)");
        }
    }
}

impl PolicyInputs {
    fn send_stop(&self) {
        let sender = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = sender.send(Message::Stop);
    }
}

fn run(node: &Node, config: WatcherConfig, inbox: &mpsc::Receiver<Message>) {
    let mut scanner = config
        .games
        .map(|games| ProcessScanner::new(games, &config.procfs, std::process::id()));
    let mut policy = Policy::new(config.policy);
    let mut running_games = std::collections::BTreeSet::new();
    // Nothing published yet: the first look's verdict is published whatever it is (a watcher
    // started by new settings replaces the old one's verdict).
    let mut last: Option<ActivityState> = None;
    let screen = (config.fullscreen || config.active_for.is_some())
        .then(|| desktop_source(config.display.as_deref()))
        .flatten();
    let mut watch_fullscreen = config.fullscreen;
    let mut gpu_use = config
        .gpu_use
        .map(|gpu_use| GpuUseMonitor::new(gpu_use, config.nvidia.clone()));
    let mut gpu_users = std::collections::BTreeMap::<u32, String>::new();
    let mut next_gpu_sample = Instant::now();
    let mut user_active = false;
    let mut was_fullscreen = false;
    let mut schedule_allowed = true;
    let mut was_on_battery = false;
    loop {
        let now = Instant::now();
        let allowed = config.schedule.allows_now();
        if allowed != schedule_allowed {
            tracing::info!(allowed, "schedule window changed");
            policy.handle(Input::ScheduleAllows(allowed), now);
            schedule_allowed = allowed;
        }
        if let Some(folder) = &config.power_supply {
            let battery = on_battery(folder);
            if battery != was_on_battery {
                tracing::info!(on_battery = battery, "mains power changed");
                policy.handle(Input::OnBattery(battery), now);
                was_on_battery = battery;
            }
        }
        if let (Some(source), Some(active_for)) = (&screen, config.active_for) {
            match source.idle() {
                Ok(idle) if (idle < active_for) != user_active => {
                    user_active = idle < active_for;
                    tracing::info!(user_active, "the user came or went");
                    policy.handle(Input::UserActive(user_active), now);
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "no idle time from the X server"),
            }
        }
        if let Some(source) = screen.as_ref().filter(|_| watch_fullscreen) {
            match source.is_fullscreen() {
                Ok(on) if on != was_fullscreen => {
                    tracing::info!(fullscreen = on, "fullscreen window changed");
                    policy.handle(Input::Fullscreen(on), now);
                    was_fullscreen = on;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "fullscreen detection is off");
                    watch_fullscreen = false;
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
        if let Some(monitor) = gpu_use.as_mut().filter(|_| now >= next_gpu_sample) {
            next_gpu_sample = now + GPU_USE_EVERY;
            let busy = monitor.sample(now);
            for (pid, name) in &busy {
                if !gpu_users.contains_key(pid) {
                    tracing::info!(pid, program = %name, "another program is using the GPU: pausing");
                    policy.handle(
                        Input::GpuProcessSeen {
                            pid: *pid,
                            name: name.clone(),
                        },
                        now,
                    );
                }
            }
            for pid in gpu_users.keys().filter(|pid| !busy.contains_key(pid)) {
                tracing::info!(pid, "the other program left the GPU");
                policy.handle(Input::GpuProcessGone { pid: *pid }, now);
            }
            gpu_users = busy;
        }
        policy.tick(now);
        publish(node, &policy, &mut last);
        // Wait for the next look, acting on observations from elsewhere as they come.
        let interval = if node.status().activity.is_paused() {
            config.interval.max(config.paused_interval)
        } else {
            config.interval
        };
        let next_look = now + interval;
        loop {
            let left = next_look.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(left) {
                Ok(Message::Observed(input)) => {
                    let now = Instant::now();
                    policy.handle(input, now);
                    publish(node, &policy, &mut last);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Set the node's automatic pause and throttle from the policy's state, when it changed.
fn publish(node: &Node, policy: &Policy, last: &mut Option<ActivityState>) {
    let state = policy.state();
    if last.as_ref() == Some(state) {
        return;
    }
    let (reason, duty) = match state {
        ActivityState::Paused { reason } => (Some(reason.clone()), 100),
        ActivityState::Throttled { duty_percent } => (None, *duty_percent),
        ActivityState::Running => (None, 100),
    };
    node.set_policy(reason, duty);
    *last = Some(state.clone());
}

/// True when the computer has a mains adapter (`type` Mains) and none is `online`: a laptop
/// on its battery. A desktop without adapters in `folder` never is.
fn on_battery(folder: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return false;
    };
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    let mains: Vec<bool> = entries
        .filter_map(Result::ok)
        .filter(|e| read(e.path().join("type")).trim() == "Mains")
        .map(|e| read(e.path().join("online")).trim() == "1")
        .collect();
    !mains.is_empty() && !mains.contains(&true)
}

type DesktopSource = hearth_desktop::Desktop;

/// The desktop to ask about fullscreen windows and input; `None` without one (on Linux: no
/// X display, e.g. a headless server or a Wayland session without Xwayland).
fn desktop_source(display: Option<&str>) -> Option<DesktopSource> {
    if cfg!(target_os = "linux") && display.is_none() && std::env::var_os("DISPLAY").is_none() {
        return None;
    }
    match hearth_desktop::Desktop::connect(display) {
        Ok(source) => Some(source),
        Err(error) => {
            tracing::info!(%error, "no desktop to ask: fullscreen and idle detection are off");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PauseReason;

    fn wait_until(node: &Node, accept: impl Fn(&crate::ActivityState) -> bool) -> Duration {
        let started = Instant::now();
        while !accept(&node.status().activity) {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                node.status()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        started.elapsed()
    }

    #[test]
    fn observations_from_elsewhere_act_at_once_with_hysteresis() {
        let node = Node::new();
        let watcher = Watcher::start(
            node.clone(),
            WatcherConfig {
                interval: Duration::from_secs(10),
                games: None,
                fullscreen: false,
                ..WatcherConfig::default()
            },
        )
        .unwrap();
        let inputs = watcher.inputs();
        inputs.send(Input::Temperature(86.0));
        // Well before the next look (10 s away).
        let took = wait_until(&node, |a| {
            *a == crate::ActivityState::Paused {
                reason: PauseReason::Temperature,
            }
        });
        assert!(took < Duration::from_millis(500), "{took:?}");
        inputs.send(Input::Temperature(75.0));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            node.status().activity.is_paused(),
            "75 °C is above the resume point"
        );
        inputs.send(Input::Temperature(69.0));
        wait_until(&node, |a| *a == crate::ActivityState::Running);
        drop(watcher);
        inputs.send(Input::Temperature(99.0));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !node.status().activity.is_paused(),
            "a stopped watcher does nothing"
        );
    }

    #[test]
    fn a_program_keeping_the_gpu_busy_pauses_the_node_until_it_goes_idle() {
        use crate::pause::gpu_use::fake_procfs::{process, set_busy};
        let dir = tempfile::tempdir().unwrap();
        let procfs = dir.path().to_path_buf();
        process(&procfs, 4242, "blender", 1, Some(0));
        // Blender renders: its engines are busy 60% of the wall time.
        let rendering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let renderer = std::thread::spawn({
            let (procfs, rendering) = (procfs.clone(), std::sync::Arc::clone(&rendering));
            move || {
                let (start, mut busy) = (Instant::now(), 0u64);
                while rendering.load(std::sync::atomic::Ordering::SeqCst) {
                    busy = (start.elapsed().as_nanos() as f64 * 0.6) as u64;
                    set_busy(&procfs, 4242, busy);
                    std::thread::sleep(Duration::from_millis(50));
                }
                busy
            }
        });
        let node = Node::new();
        let _watcher = Watcher::start(
            node.clone(),
            WatcherConfig {
                games: None,
                fullscreen: false,
                policy: PolicyConfig {
                    cooldown: Duration::from_millis(500),
                    ..PolicyConfig::default()
                },
                gpu_use: Some(GpuUseConfig {
                    procfs: procfs.clone(),
                    ..GpuUseConfig::default()
                }),
                ..WatcherConfig::default()
            },
        )
        .unwrap();
        // Two busy samples a second apart, after the first reading.
        let started = Instant::now();
        while node.status().activity
            != (crate::ActivityState::Paused {
                reason: PauseReason::GpuProcess {
                    name: "blender".into(),
                },
            })
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                node.status()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        rendering.store(false, std::sync::atomic::Ordering::SeqCst);
        renderer.join().unwrap();
        let idle_since = Instant::now();
        while node.status().activity != crate::ActivityState::Running {
            assert!(
                idle_since.elapsed() < Duration::from_secs(5),
                "{:?}",
                node.status()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn unplugging_a_laptop_pauses_and_plugging_it_in_resumes() {
        let supplies = tempfile::tempdir().unwrap();
        let adapter = supplies.path().join("AC");
        std::fs::create_dir_all(&adapter).unwrap();
        std::fs::write(adapter.join("type"), "Mains\n").unwrap();
        std::fs::write(adapter.join("online"), "1\n").unwrap();
        let battery = supplies.path().join("BAT0");
        std::fs::create_dir_all(&battery).unwrap();
        std::fs::write(battery.join("type"), "Battery\n").unwrap();
        let node = Node::new();
        let _watcher = Watcher::start(
            node.clone(),
            WatcherConfig {
                games: None,
                fullscreen: false,
                gpu_use: None,
                power_supply: Some(supplies.path().to_owned()),
                ..WatcherConfig::default()
            },
        )
        .unwrap();
        std::fs::write(adapter.join("online"), "0\n").unwrap();
        wait_until(&node, |a| {
            *a == crate::ActivityState::Paused {
                reason: PauseReason::OnBattery,
            }
        });
        std::fs::write(adapter.join("online"), "1\n").unwrap();
        wait_until(&node, |a| *a == crate::ActivityState::Running);
        // A desktop (no adapter) is never on battery.
        assert!(!on_battery(&supplies.path().join("none")));
    }

    #[test]
    fn new_settings_take_effect_without_a_restart_and_inputs_follow() {
        use chrono::Timelike;
        let node = Node::new();
        let quiet = WatcherConfig {
            games: None,
            fullscreen: false,
            gpu_use: None,
            ..WatcherConfig::default()
        };
        let mut watcher = Watcher::start(node.clone(), quiet.clone()).unwrap();
        let inputs = watcher.inputs();
        assert_eq!(node.status().activity, crate::ActivityState::Running);
        // The owner sets a schedule that does not include now.
        let now = chrono::Local::now();
        let start = (now.hour() * 60 + now.minute() + 120) % 1440;
        let window = format!(
            "daily {:02}:{:02}-{:02}:{:02}",
            start / 60,
            start % 60,
            (start + 60) % 1440 / 60,
            (start + 60) % 1440 % 60
        );
        watcher
            .reconfigure(WatcherConfig {
                schedule: crate::pause::schedule::Schedule::parse(&[window]).unwrap(),
                ..quiet.clone()
            })
            .unwrap();
        wait_until(&node, |a| {
            *a == crate::ActivityState::Paused {
                reason: PauseReason::Schedule,
            }
        });
        // Back to any time; an input sent through the old handle reaches the new watcher.
        watcher.reconfigure(quiet).unwrap();
        wait_until(&node, |a| *a == crate::ActivityState::Running);
        inputs.send(Input::Temperature(90.0));
        wait_until(&node, |a| {
            *a == crate::ActivityState::Paused {
                reason: PauseReason::Temperature,
            }
        });
    }

    #[test]
    fn outside_the_schedule_the_node_pauses() {
        use chrono::Timelike;
        let now = chrono::Local::now();
        let start = (now.hour() * 60 + now.minute() + 120) % 1440;
        let end = (start + 60) % 1440;
        let entry = format!(
            "daily {:02}:{:02}-{:02}:{:02}",
            start / 60,
            start % 60,
            end / 60,
            end % 60
        );
        let node = Node::new();
        let _watcher = Watcher::start(
            node.clone(),
            WatcherConfig {
                games: None,
                fullscreen: false,
                schedule: crate::pause::schedule::Schedule::parse(&[entry]).unwrap(),
                ..WatcherConfig::default()
            },
        )
        .unwrap();
        wait_until(&node, |a| {
            *a == crate::ActivityState::Paused {
                reason: PauseReason::Schedule,
            }
        });
    }
}
