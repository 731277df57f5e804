//! "Another program is using the GPU": which processes besides Hearth keep a GPU busy.
//!
//! Sources: on Linux the DRM fdinfo every open `/dev/dri` file publishes (amdgpu, i915, xe and
//! other drivers: engine busy time in ns), on Windows the GPU Engine performance counters
//! (what Task Manager's GPU column reads), and on NVIDIA NVML's running compute processes
//! (CUDA/OpenCL work). Having a GPU open is not enough: the desktop, a browser and most apps
//! hold one all day. A process counts when its engines were busy for at least
//! [`GpuUseConfig::busy_share`] of the time over two samples in a row, or when it runs compute
//! work on an NVIDIA GPU. Hearth and its own children (the webview) never count, nor do the
//! display servers and compositors in [`DESKTOP_PROCESSES`].
//!
//! Cost: reading every process's descriptors each second would cost more than the watcher's
//! whole budget, so a sample re-reads only the processes known to have a GPU open, looks at
//! new processes (for their first [`YOUNG`], every sample), and re-checks the rest a slice
//! at a time, each once per [`RECHECK_EVERY`] samples; `/proc` itself is listed once per
//! [`LIST_EVERY`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_hardware::{NvidiaSource, ProcessSource};

/// Display servers and compositors: they draw the desktop, which is not a reason to pause.
pub const DESKTOP_PROCESSES: &[&str] = &[
    "Xorg",
    "Xwayland",
    "gnome-shell",
    "kwin_x11",
    "kwin_wayland",
    "mutter",
    "sway",
    "Hyprland",
    "weston",
    "picom",
    "compton",
    "cinnamon",
    "xfwm4",
    "marco",
    "labwc",
    "wayfire",
];

/// Windows' compositor and session manager draw the desktop (compared without case).
pub const WINDOWS_DESKTOP_PROCESSES: &[&str] = &["dwm.exe", "csrss.exe"];

/// New processes are looked at on every sample for this long (a program opens its GPU a
/// little after it starts).
pub const YOUNG: Duration = Duration::from_secs(10);
/// Every other process without a GPU open is re-checked once per this many samples.
pub const RECHECK_EVERY: u64 = 30;
/// `/proc` is listed (new processes found, ended ones forgotten) once per this many samples.
pub const LIST_EVERY: u64 = 3;

/// How the monitor decides.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuUseConfig {
    /// A process is using the GPU when its engines were busy at least this share of the time.
    pub busy_share: f64,
    /// Normally `/proc`.
    pub procfs: PathBuf,
    /// Hearth itself; it and its descendants never count.
    pub exclude_pid: u32,
}

impl Default for GpuUseConfig {
    fn default() -> Self {
        Self {
            busy_share: 0.10,
            procfs: PathBuf::from("/proc"),
            exclude_pid: std::process::id(),
        }
    }
}

/// Samples in a row a process was busy; it counts as using the GPU from the second on (one
/// busy sample may be a program's start or a window being drawn).
#[derive(Debug, Default)]
struct BusyStreak(u32);

impl BusyStreak {
    /// Record one sample; whether the process now counts as using the GPU.
    fn observe(&mut self, busy: bool) -> bool {
        self.0 = if busy { self.0.saturating_add(1) } else { 0 };
        self.0 >= 2
    }
}

/// What the monitor remembers of a process.
#[derive(Debug)]
struct Tracked {
    first_seen: Instant,
    /// Hearth or one of its children, or a compositor: never counts.
    ignored: bool,
    /// Whether it had a GPU open when last checked.
    has_gpu: bool,
    /// Engine busy time at the last sample, and when.
    last_busy: Option<(u64, Instant)>,
    busy_streak: BusyStreak,
    name: String,
}

/// Samples GPU use by other processes; call [`GpuUseMonitor::sample`] about once a second.
#[derive(Debug)]
pub struct GpuUseMonitor {
    config: GpuUseConfig,
    nvidia: Option<Arc<dyn NvidiaSource>>,
    tracked: HashMap<u32, Tracked>,
    samples: u64,
    #[cfg(windows)]
    engines: windows_engines::Engines,
}

impl GpuUseMonitor {
    /// A monitor over `config.procfs`, asking `nvidia` (NVML) too where given.
    pub fn new(config: GpuUseConfig, nvidia: Option<Arc<dyn NvidiaSource>>) -> Self {
        Self {
            config,
            nvidia,
            tracked: HashMap::new(),
            samples: 0,
            #[cfg(windows)]
            engines: windows_engines::Engines::default(),
        }
    }

    /// The processes using a GPU now: pid → name.
    pub fn sample(&mut self, now: Instant) -> BTreeMap<u32, String> {
        self.samples += 1;
        // Listing `/proc` is the dearest part: new and ended processes are found every few
        // samples; in between only the processes already known are looked at.
        let pids: Vec<u32> = if self.samples % LIST_EVERY == 1 {
            let pids = crate::pause::games::process_ids(&self.config.procfs);
            let alive: std::collections::HashSet<u32> = pids.iter().copied().collect();
            self.tracked.retain(|pid, _| alive.contains(pid));
            pids
        } else {
            self.tracked.keys().copied().collect()
        };
        let mut busy = BTreeMap::new();
        // The first sample looks at everything once; what runs already is not new.
        let first = self.samples == 1;
        for pid in pids {
            if !self.tracked.contains_key(&pid) {
                let mut tracked = self.first_look(pid, now);
                if first {
                    tracked.first_seen = now.checked_sub(YOUNG).unwrap_or(now);
                }
                self.tracked.insert(pid, tracked);
            }
            let Some(tracked) = self.tracked.get_mut(&pid) else {
                continue;
            };
            if tracked.ignored {
                continue;
            }
            let young = now.duration_since(tracked.first_seen) < YOUNG;
            let due = u64::from(pid) % RECHECK_EVERY == self.samples % RECHECK_EVERY;
            if !(first || tracked.has_gpu || young || due) {
                continue;
            }
            let clients = hearth_hardware::drm_process(&self.config.procfs, pid);
            tracked.has_gpu = !clients.is_empty();
            let total: Option<u64> = clients
                .iter()
                .filter_map(|c| c.engine_busy_ns)
                .reduce(u64::saturating_add);
            let share = match (tracked.last_busy, total) {
                (Some((before, at)), Some(now_ns)) => {
                    let wall = now.duration_since(at).as_nanos() as f64;
                    (wall > 0.0).then(|| now_ns.saturating_sub(before) as f64 / wall)
                }
                _ => None,
            };
            tracked.last_busy = total.map(|ns| (ns, now));
            let busy_now = share.is_some_and(|s| s >= self.config.busy_share);
            if tracked.busy_streak.observe(busy_now) {
                busy.insert(pid, tracked.name.clone());
            }
        }
        #[cfg(windows)]
        busy.extend(self.engines.busy(&self.config));
        if let Some(nvidia) = &self.nvidia {
            match nvidia.processes() {
                Ok(processes) => {
                    for process in processes {
                        if process.source != ProcessSource::NvmlCompute {
                            continue;
                        }
                        let ignored = self
                            .tracked
                            .get(&process.pid)
                            .is_none_or(|tracked| tracked.ignored);
                        if !ignored {
                            busy.insert(process.pid, process.name);
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "NVML does not answer: its processes are not watched");
                    self.nvidia = None;
                }
            }
        }
        busy
    }

    fn first_look(&self, pid: u32, now: Instant) -> Tracked {
        let name = std::fs::read_to_string(self.config.procfs.join(format!("{pid}/comm")))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let ignored = pid == self.config.exclude_pid
            || DESKTOP_PROCESSES.contains(&name.as_str())
            || self.descends_from_us(pid);
        Tracked {
            first_seen: now,
            ignored,
            has_gpu: false,
            last_busy: None,
            busy_streak: BusyStreak::default(),
            name,
        }
    }

    /// Whether `pid`'s parents lead to Hearth (a few generations up).
    fn descends_from_us(&self, pid: u32) -> bool {
        let mut current = pid;
        for _ in 0..8 {
            match parent_of(&self.config.procfs, current) {
                Some(parent) if parent == self.config.exclude_pid => return true,
                Some(parent) if parent > 1 => current = parent,
                _ => return false,
            }
        }
        false
    }
}

/// Windows has no `/proc`: the GPU Engine counters tell each process's busiest engine.
#[cfg(windows)]
mod windows_engines {
    use std::collections::{BTreeMap, HashMap};

    use hearth_hardware::gpu_engines::{GpuEngineCounters, busiest_engine_by_process};

    use super::{BusyStreak, GpuUseConfig, WINDOWS_DESKTOP_PROCESSES};

    /// What the monitor remembers of a process with a GPU engine.
    #[derive(Debug, Default)]
    struct Seen {
        streak: BusyStreak,
        /// Its name, and whether it never counts (Hearth's own child, or the desktop's
        /// compositor): looked up once, when it first counts as busy.
        identity: Option<(String, bool)>,
    }

    #[derive(Debug, Default)]
    pub(super) struct Engines {
        counters: Option<GpuEngineCounters>,
        /// The system has no counters (Wine, old Windows): not asked again.
        unavailable: bool,
        /// Every process the counters list, kept while they list it.
        seen: HashMap<u32, Seen>,
    }

    impl Engines {
        /// The processes busy at least `config.busy_share` on a shader engine for two
        /// readings in a row: pid → name.
        pub(super) fn busy(&mut self, config: &GpuUseConfig) -> BTreeMap<u32, String> {
            let mut busy = BTreeMap::new();
            if self.unavailable {
                return busy;
            }
            let Some(counters) = self.counters.as_mut() else {
                match GpuEngineCounters::open() {
                    // The first reading is only where the next one counts from.
                    Ok(counters) => self.counters = Some(counters),
                    Err(error) => {
                        tracing::info!(%error, "GPU use of other programs is not watched");
                        self.unavailable = true;
                    }
                }
                return busy;
            };
            let readings = match counters.read() {
                Ok(readings) => readings,
                Err(error) => {
                    tracing::debug!(%error, "the GPU Engine counters did not answer");
                    return busy;
                }
            };
            let threshold = config.busy_share * 100.0;
            let busiest = busiest_engine_by_process(&readings, config.exclude_pid);
            self.seen.retain(|pid, _| busiest.contains_key(pid));
            // The system's processes, listed at most once a sample and only when a process
            // newly counts (to tell Hearth's own children).
            let mut processes = None;
            for (pid, percent) in busiest {
                let seen = self.seen.entry(pid).or_default();
                if !seen.streak.observe(percent >= threshold) {
                    continue;
                }
                let (name, ignored) = seen.identity.get_or_insert_with(|| {
                    let name = hearth_hardware::processes::process_name(pid);
                    let ignored = WINDOWS_DESKTOP_PROCESSES
                        .iter()
                        .any(|desktop| desktop.eq_ignore_ascii_case(&name))
                        || descends_from(pid, config.exclude_pid, &mut processes);
                    (name, ignored)
                });
                if !*ignored {
                    busy.insert(pid, name.clone());
                }
            }
            busy
        }
    }

    /// Whether `pid`'s parents lead to `ancestor` (a few generations up), from `processes`,
    /// the system's process list, made on first use.
    fn descends_from(
        pid: u32,
        ancestor: u32,
        processes: &mut Option<Option<sysinfo::System>>,
    ) -> bool {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
        let listed = processes.get_or_insert_with(|| {
            let mut system = System::new().ok()?;
            system.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                ProcessRefreshKind::nothing(),
            );
            Some(system)
        });
        let Some(system) = listed else {
            return false;
        };
        let mut current = Pid::from_u32(pid);
        for _ in 0..8 {
            match system.process(current).and_then(|p| p.parent()) {
                Some(parent) if parent.as_u32() == ancestor => return true,
                Some(parent) => current = parent,
                None => return false,
            }
        }
        false
    }
}

/// The parent process id from `procfs/<pid>/stat` (the field after the name in parentheses,
/// which may itself hold spaces and parentheses).
fn parent_of(procfs: &std::path::Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(procfs.join(format!("{pid}/stat"))).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// A fake `/proc` for tests: processes with a name, a parent and a DRM descriptor.
#[cfg(test)]
pub(crate) mod fake_procfs {
    use std::path::Path;

    /// A fake `/proc` entry: name, parent, and optionally one DRM descriptor with busy time.
    pub(crate) fn process(procfs: &Path, pid: u32, name: &str, parent: u32, busy_ns: Option<u64>) {
        let dir = procfs.join(pid.to_string());
        std::fs::create_dir_all(dir.join("fd")).unwrap();
        std::fs::create_dir_all(dir.join("fdinfo")).unwrap();
        std::fs::write(dir.join("comm"), format!("{name}\n")).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} ({name}) S {parent} 1 1 0 -1\n"),
        )
        .unwrap();
        if let Some(ns) = busy_ns {
            set_busy(procfs, pid, ns);
        }
    }

    pub(crate) fn set_busy(procfs: &Path, pid: u32, ns: u64) {
        let dir = procfs.join(pid.to_string());
        let link = dir.join("fd/5");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("/dev/dri/renderD128", &link).unwrap();
        }
        std::fs::write(
            dir.join("fdinfo/5"),
            format!(
                "pos:\t0\nflags:\t02100002\ndrm-driver:\tamdgpu\ndrm-pdev:\t0000:03:00.0\n\
                 drm-client-id:\t{pid}\ndrm-engine-gfx:\t{ns} ns\ndrm-engine-compute:\t0 ns\n"
            ),
        )
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::fake_procfs::{process, set_busy};
    use super::*;

    #[test]
    fn a_streak_counts_from_its_second_busy_sample_and_an_idle_one_ends_it() {
        let mut streak = BusyStreak::default();
        let seen: Vec<bool> = [true, true, true, false, true, true]
            .into_iter()
            .map(|busy| streak.observe(busy))
            .collect();
        assert_eq!(seen, [false, true, true, false, false, true]);
    }

    #[test]
    fn a_busy_process_counts_after_two_busy_samples_and_idle_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = dir.path();
        process(procfs, 100, "hearth", 1, Some(0));
        process(procfs, 101, "WebKitWebProcess", 100, Some(0));
        process(procfs, 200, "blender", 1, Some(0));
        process(procfs, 300, "firefox", 1, Some(0));
        process(procfs, 400, "Xorg", 1, Some(0));
        process(procfs, 500, "bash", 1, None);
        let mut monitor = GpuUseMonitor::new(
            GpuUseConfig {
                procfs: procfs.to_path_buf(),
                exclude_pid: 100,
                ..GpuUseConfig::default()
            },
            None,
        );
        let t0 = Instant::now();
        assert!(monitor.sample(t0).is_empty(), "one reading is no rate");
        // In one second: blender busy 600 ms, firefox 20 ms, the others flat out.
        for (pid, ns) in [(100, 1e9), (101, 1e9), (200, 6e8), (300, 2e7), (400, 1e9)] {
            set_busy(procfs, pid, ns as u64);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert!(monitor.sample(t1).is_empty(), "one busy second is a blip");
        for (pid, ns) in [(200, 12e8), (300, 4e7)] {
            set_busy(procfs, pid, ns as u64);
        }
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            monitor.sample(t2),
            BTreeMap::from([(200, "blender".to_owned())])
        );
        // Blender goes idle, then exits.
        let t3 = t2 + Duration::from_secs(1);
        assert!(monitor.sample(t3).is_empty());
        std::fs::remove_dir_all(procfs.join("200")).unwrap();
        for i in 1..=LIST_EVERY {
            assert!(monitor.sample(t3 + Duration::from_secs(i)).is_empty());
        }
        assert!(
            !monitor.tracked.contains_key(&200),
            "gone processes are forgotten"
        );
    }

    #[derive(Debug)]
    struct FakeNvml(Vec<hearth_hardware::GpuProcess>);

    impl NvidiaSource for FakeNvml {
        fn gpus(&self) -> Result<Vec<hearth_hardware::NvidiaGpu>, hearth_hardware::NvidiaError> {
            Ok(Vec::new())
        }
        fn readings(
            &self,
        ) -> Result<Vec<hearth_hardware::NvidiaReading>, hearth_hardware::NvidiaError> {
            Ok(Vec::new())
        }
        fn processes(
            &self,
        ) -> Result<Vec<hearth_hardware::GpuProcess>, hearth_hardware::NvidiaError> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn nvidia_compute_processes_count_at_once_and_graphics_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = dir.path();
        process(procfs, 100, "hearth", 1, None);
        process(procfs, 700, "python3", 1, None);
        process(procfs, 800, "steamwebhelper", 1, None);
        let entry = |pid: u32, name: &str, source| hearth_hardware::GpuProcess {
            pid,
            name: name.into(),
            gpu: "nvml:0".into(),
            vram_bytes: Some(1 << 30),
            engine_busy_ns: None,
            source,
        };
        let nvml = FakeNvml(vec![
            entry(100, "hearth", ProcessSource::NvmlCompute),
            entry(700, "python3", ProcessSource::NvmlCompute),
            entry(800, "steamwebhelper", ProcessSource::NvmlGraphics),
        ]);
        let mut monitor = GpuUseMonitor::new(
            GpuUseConfig {
                procfs: procfs.to_path_buf(),
                exclude_pid: 100,
                ..GpuUseConfig::default()
            },
            Some(Arc::new(nvml)),
        );
        assert_eq!(
            monitor.sample(Instant::now()),
            BTreeMap::from([(700, "python3".to_owned())])
        );
    }

    #[test]
    fn parents_are_read_past_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        process(dir.path(), 42, "a (b) c", 7, None);
        assert_eq!(parent_of(dir.path(), 42), Some(7));
        assert_eq!(parent_of(dir.path(), 43), None);
    }
}
