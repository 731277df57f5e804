//! Live telemetry: a sampler thread (1 Hz by default) reading GPU utilisation, VRAM,
//! temperature, power and clocks where the platform tells them, CPU and RAM of the machine,
//! and Hearth's own CPU and memory. Samples go to a ring buffer (the last hour, for charts)
//! and to every subscriber of a broadcast stream.
//!
//! Energy per interval is integrated from measured power where there is a power sensor, and
//! estimated as utilisation × board power where there is not; estimated figures say so. The
//! processor counts too ([`CpuPower`]): Hearth's share of its energy is its share of the CPU
//! time, so a machine without a supported GPU still sees what its work costs.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::{broadcast, watch};

use crate::amd;
use crate::cpu_power::CpuPower;
use crate::nvidia::{NvidiaReading, NvidiaSource};

/// Samples kept in the ring buffer: one hour at 1 Hz.
pub const HISTORY_LEN: usize = 3600;

/// Board power assumed for estimates when the GPU reports no power limit, by kind.
const DISCRETE_BOARD_POWER_W: f32 = 150.0;

/// One GPU at one moment: what its driver reports, and the energy worked out from it over the
/// interval before the moment ([`GpuSample::with_energy`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GpuSample {
    /// Stable name of the GPU within this machine: `nvml:0`, `drm:card1`.
    pub id: String,
    pub name: String,
    /// Busy share of the last interval, 0..=100.
    pub utilisation_percent: Option<f32>,
    pub vram_used_bytes: Option<u64>,
    pub vram_total_bytes: Option<u64>,
    pub temperature_c: Option<f32>,
    /// Measured board power.
    pub power_w: Option<f32>,
    /// The most the board may draw, for energy estimates.
    pub power_limit_w: Option<f32>,
    pub core_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    /// Fan speed in percent, where the board reports it.
    pub fan_percent: Option<f32>,
    /// Energy used over the interval before this sample.
    pub energy_wh: Option<f64>,
    /// True when `energy_wh` is utilisation × board power rather than measured power.
    pub energy_estimated: bool,
}

/// Everything sampled at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TelemetrySample {
    /// Wall-clock time of the sample, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Seconds since the previous sample (the interval energy covers).
    pub interval_s: f64,
    /// Whole-machine CPU use, 0..=100 (all cores together).
    pub cpu_percent: f32,
    pub ram_used_bytes: u64,
    pub ram_total_bytes: u64,
    /// Hearth's own CPU use, in percent of one core.
    pub process_cpu_percent: f32,
    /// Hearth's own resident memory.
    pub process_memory_bytes: u64,
    /// Logical cores (threads), the scale of `process_cpu_percent`.
    pub logical_cores: usize,
    /// The processor's package power over the interval.
    pub cpu_power_w: f32,
    /// True when `cpu_power_w` is CPU use × the processor's rated power, not measured.
    pub cpu_power_estimated: bool,
    /// The processor's temperature, where a sensor reports it.
    pub cpu_temperature_c: Option<f32>,
    /// Hearth's share of the processor's energy over the interval (its share of the CPU time).
    pub process_cpu_energy_wh: f64,
    pub gpus: Vec<GpuSample>,
}

impl TelemetrySample {
    /// Energy over this sample's interval that Hearth accounts for: every GPU's (while Hearth
    /// works nothing else may use them) and its share of the processor's; whether any part
    /// was estimated.
    pub fn hearth_energy_wh(&self) -> (f64, bool) {
        self.gpus.iter().fold(
            (self.process_cpu_energy_wh, self.cpu_power_estimated),
            |(sum, est), g| (sum + g.energy_wh.unwrap_or(0.0), est || g.energy_estimated),
        )
    }
}

/// Hearth's share of the processor's energy: its CPU time over the machine's, of the package
/// power (the machine's share of idle power is not Hearth's).
fn process_cpu_energy_wh(
    power_w: f32,
    machine_percent: f32,
    process_percent_of_core: f32,
    cores: usize,
    interval_s: f64,
) -> f64 {
    let ours = (process_percent_of_core / cores.max(1) as f32).clamp(0.0, 100.0);
    let machine = machine_percent.clamp(ours, 100.0);
    if machine <= 0.0 {
        return 0.0;
    }
    f64::from(power_w * ours / machine) * interval_s / 3600.0
}

impl GpuSample {
    /// With the energy over `interval_s`: measured where power is known, else estimated from
    /// utilisation and the board's power limit (or a typical discrete board's).
    fn with_energy(self, interval_s: f64) -> GpuSample {
        let hours = interval_s / 3600.0;
        let (energy_wh, energy_estimated) = match (self.power_w, self.utilisation_percent) {
            (Some(power), _) => (Some(f64::from(power) * hours), false),
            (None, Some(busy)) => {
                let board = self.power_limit_w.unwrap_or(DISCRETE_BOARD_POWER_W);
                (Some(f64::from(board * busy / 100.0) * hours), true)
            }
            (None, None) => (None, false),
        };
        GpuSample {
            energy_wh,
            energy_estimated,
            ..self
        }
    }
}

/// An NVIDIA GPU's figures, in the units every GPU's are kept in.
impl From<NvidiaReading> for GpuSample {
    fn from(reading: NvidiaReading) -> Self {
        GpuSample {
            id: format!("nvml:{}", reading.index),
            name: reading.name,
            utilisation_percent: reading.utilisation_percent.map(|u| u as f32),
            vram_used_bytes: reading.vram_used_bytes,
            vram_total_bytes: reading.vram_total_bytes,
            temperature_c: reading.temperature_c.map(|t| t as f32),
            power_w: reading.power_mw.map(|p| p as f32 / 1000.0),
            power_limit_w: reading.power_limit_mw.map(|p| p as f32 / 1000.0),
            core_clock_mhz: reading.graphics_clock_mhz,
            memory_clock_mhz: reading.memory_clock_mhz,
            fan_percent: reading.fan_percent.map(|f| f as f32),
            ..GpuSample::default()
        }
    }
}

/// Where GPU readings come from; tests use fixtures and fakes.
pub trait GpuReadings: Send + std::fmt::Debug {
    /// Current readings of every GPU this source knows.
    fn read(&mut self) -> Vec<GpuSample>;
}

/// GPUs in sysfs (AMD's amdgpu publishes the most) and NVIDIA GPUs through NVML.
#[derive(Debug)]
pub struct PlatformGpus {
    sysfs: PathBuf,
    nvidia: Box<dyn NvidiaSource + Send>,
    nvidia_failed: bool,
}

impl PlatformGpus {
    /// Read sysfs under `sysfs` and NVIDIA GPUs from `nvidia`.
    pub fn new(sysfs: impl Into<PathBuf>, nvidia: Box<dyn NvidiaSource + Send>) -> Self {
        Self {
            sysfs: sysfs.into(),
            nvidia,
            nvidia_failed: false,
        }
    }
}

impl GpuReadings for PlatformGpus {
    fn read(&mut self) -> Vec<GpuSample> {
        let mut readings: Vec<GpuSample> = amd::read_cards(&self.sysfs)
            .into_iter()
            // NVIDIA's driver publishes little in sysfs; NVML below covers those cards.
            .filter(|card| card.vendor_id != crate::nvidia::NVIDIA_VENDOR)
            .map(|card| GpuSample {
                id: format!("drm:{}", card.name),
                // sysfs gives no marketing name: the maker, then the card and its PCI ids.
                name: format!(
                    "{} ({}, {:04x}:{:04x})",
                    match card.vendor_id {
                        0x1002 => "AMD Radeon graphics",
                        0x8086 => "Intel graphics",
                        _ => "Graphics card",
                    },
                    card.name,
                    card.vendor_id,
                    card.device_id
                ),
                utilisation_percent: card.busy_percent.map(f32::from),
                vram_used_bytes: card.vram_used_bytes,
                vram_total_bytes: card.vram_total_bytes,
                temperature_c: card.temperature_c,
                power_w: card.power_w,
                power_limit_w: card.power_cap_w,
                core_clock_mhz: card.core_clock_mhz,
                memory_clock_mhz: card.memory_clock_mhz,
                fan_percent: card.fan_percent,
                ..GpuSample::default()
            })
            .collect();
        // A machine without NVML stays without it: one failed load is not retried every second.
        if !self.nvidia_failed {
            match self.nvidia.readings() {
                Ok(nvidia) => readings.extend(nvidia.into_iter().map(GpuSample::from)),
                Err(reason) => {
                    tracing::debug!(%reason, "no NVML telemetry");
                    self.nvidia_failed = true;
                }
            }
        }
        readings
    }
}

/// CPU and memory of the machine and of this process.
#[derive(Debug)]
struct HostReader {
    system: Option<System>,
    pid: Option<Pid>,
    /// The machine's busy and idle times at the last reading.
    #[cfg(windows)]
    cpu_times: CpuTimes,
}

struct HostReading {
    cpu_percent: f32,
    ram_used_bytes: u64,
    ram_total_bytes: u64,
    process_cpu_percent: f32,
    process_memory_bytes: u64,
    logical_cores: usize,
}

impl HostReader {
    fn new() -> Self {
        #[cfg_attr(not(windows), allow(unused_mut))]
        let mut system = System::new().ok();
        // Windows: the processors are listed without sysinfo's usage counters (see CpuTimes).
        #[cfg(windows)]
        if let Some(system) = system.as_mut() {
            system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        }
        let mut reader = Self {
            system,
            pid: sysinfo::get_current_pid().ok(),
            #[cfg(windows)]
            cpu_times: CpuTimes::default(),
        };
        // CPU use is a difference between two readings: take the first now.
        reader.read();
        reader
    }

    fn read(&mut self) -> HostReading {
        let Some(system) = self.system.as_mut() else {
            return HostReading {
                cpu_percent: 0.0,
                ram_used_bytes: 0,
                ram_total_bytes: 0,
                process_cpu_percent: 0.0,
                process_memory_bytes: 0,
                logical_cores: 1,
            };
        };
        #[cfg(not(windows))]
        system.refresh_cpu_usage();
        #[cfg(not(windows))]
        let cpu_percent = system.global_cpu_usage();
        #[cfg(windows)]
        let cpu_percent = self.cpu_times.percent();
        system.refresh_memory();
        let (process_cpu_percent, process_memory_bytes) = match self.pid {
            Some(pid) => {
                system.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    false,
                    ProcessRefreshKind::nothing().with_cpu().with_memory(),
                );
                system
                    .process(pid)
                    .map_or((0.0, 0), |p| (p.cpu_usage(), p.memory()))
            }
            None => (0.0, 0),
        };
        HostReading {
            cpu_percent,
            ram_used_bytes: system.used_memory(),
            ram_total_bytes: system.total_memory(),
            process_cpu_percent,
            process_memory_bytes,
            logical_cores: system.cpus().len().max(1),
        }
    }
}

/// The whole machine's CPU use between two readings, from the system's idle and busy times.
/// (sysinfo reads it on Windows through a performance-counter query, which is slow to open and
/// which Wine does not implement: the node would stop there.)
#[cfg(windows)]
#[derive(Debug, Default)]
struct CpuTimes {
    /// (idle, idle + busy) in 100 ns ticks.
    last: Option<(u64, u64)>,
}

#[cfg(windows)]
impl CpuTimes {
    /// Percent busy since the last call (0 the first time).
    #[allow(unsafe_code)]
    fn percent(&mut self) -> f32 {
        use windows_sys::Win32::Foundation::FILETIME;
        use windows_sys::Win32::System::Threading::GetSystemTimes;
        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let (mut idle, mut kernel, mut user) = (zero, zero, zero);
        // SAFETY: three valid places for the three times the call writes.
        if unsafe { GetSystemTimes(&mut idle, &mut kernel, &mut user) } == 0 {
            return 0.0;
        }
        let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
        // Kernel time includes the idle time.
        let (idle, total) = (ticks(idle), ticks(kernel).saturating_add(ticks(user)));
        let percent = match self.last {
            Some((last_idle, last_total)) if total > last_total => {
                let busy =
                    1.0 - idle.saturating_sub(last_idle) as f64 / (total - last_total) as f64;
                (busy * 100.0).clamp(0.0, 100.0) as f32
            }
            _ => 0.0,
        };
        self.last = Some((idle, total));
        percent
    }
}

/// The last hour of samples, oldest first.
#[derive(Debug)]
pub struct TelemetryHistory {
    samples: VecDeque<Arc<TelemetrySample>>,
    capacity: usize,
}

impl TelemetryHistory {
    /// An empty buffer holding up to `capacity` samples.
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(capacity.min(HISTORY_LEN)),
            capacity: capacity.max(1),
        }
    }

    /// Add a sample, dropping the oldest when full.
    pub fn push(&mut self, sample: Arc<TelemetrySample>) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Samples taken at or after `since_unix_ms`, oldest first.
    pub fn since(&self, since_unix_ms: u64) -> Vec<Arc<TelemetrySample>> {
        let start = self
            .samples
            .partition_point(|s| s.at_unix_ms < since_unix_ms);
        self.samples.range(start..).cloned().collect()
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when nothing was sampled yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Energy of every GPU and of Hearth's share of the processor over the samples held, and
    /// whether any part of it was estimated.
    pub fn energy_wh(&self) -> (f64, bool) {
        self.samples.iter().fold((0.0, false), |(sum, est), s| {
            let (wh, estimated) = s.hearth_energy_wh();
            (sum + wh, est || estimated)
        })
    }
}

/// A running sampler. Dropping it stops the thread.
#[derive(Debug)]
pub struct Sampler {
    history: Arc<Mutex<TelemetryHistory>>,
    stream: broadcast::Sender<Arc<TelemetrySample>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Start sampling `gpus`, the processor's power from `cpu` and the host every `interval`.
    pub fn start(
        gpus: Box<dyn GpuReadings>,
        cpu: CpuPower,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let history = Arc::new(Mutex::new(TelemetryHistory::new(HISTORY_LEN)));
        let (stream, _) = broadcast::channel(64);
        let (stop, mut stopped) = watch::channel(false);
        let thread = {
            let history = Arc::clone(&history);
            let stream = stream.clone();
            std::thread::Builder::new()
                .name("hearth-telemetry".into())
                .spawn(move || {
                    run(gpus, cpu, interval, &history, &stream, &mut stopped);
                })?
        };
        Ok(Self {
            history,
            stream,
            stop,
            thread: Some(thread),
        })
    }

    /// New samples as they are taken. A slow subscriber skips samples rather than holding
    /// anyone up (it sees `Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TelemetrySample>> {
        self.stream.subscribe()
    }

    /// Samples taken at or after `since_unix_ms` (0: the whole last hour).
    pub fn history_since(&self, since_unix_ms: u64) -> Vec<Arc<TelemetrySample>> {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since(since_unix_ms)
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Arc<TelemetrySample>> {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .samples
            .back()
            .cloned()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!("the telemetry thread had panicked (its panic was logged)");
            }
        }
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn run(
    mut gpus: Box<dyn GpuReadings>,
    mut cpu: CpuPower,
    interval: Duration,
    history: &Mutex<TelemetryHistory>,
    stream: &broadcast::Sender<Arc<TelemetrySample>>,
    stopped: &mut watch::Receiver<bool>,
) {
    let mut host = HostReader::new();
    let mut last = Instant::now();
    let mut next = last + interval;
    loop {
        // Sleep until the next tick, waking at once when asked to stop.
        let wait = next.saturating_duration_since(Instant::now());
        let stop = stopped.has_changed().unwrap_or(true) || {
            std::thread::park_timeout(wait);
            stopped.has_changed().unwrap_or(true)
        };
        if stop {
            return;
        }
        if Instant::now() < next {
            continue;
        }
        let now = Instant::now();
        let interval_s = now.duration_since(last).as_secs_f64();
        last = now;
        next += interval;
        if next < now {
            // Fell behind (a suspended laptop): start the schedule again from now.
            next = now + interval;
        }
        let h = host.read();
        let power = cpu.read(now, h.cpu_percent);
        let sample = Arc::new(TelemetrySample {
            at_unix_ms: now_unix_ms(),
            interval_s,
            cpu_percent: h.cpu_percent,
            ram_used_bytes: h.ram_used_bytes,
            ram_total_bytes: h.ram_total_bytes,
            process_cpu_percent: h.process_cpu_percent,
            process_memory_bytes: h.process_memory_bytes,
            logical_cores: h.logical_cores,
            cpu_power_w: power.watts,
            cpu_power_estimated: power.estimated,
            cpu_temperature_c: cpu.temperature_c(),
            process_cpu_energy_wh: process_cpu_energy_wh(
                power.watts,
                h.cpu_percent,
                h.process_cpu_percent,
                h.logical_cores,
                interval_s,
            ),
            gpus: gpus
                .read()
                .into_iter()
                .map(|r| r.with_energy(interval_s))
                .collect(),
        });
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&sample));
        let _ = stream.send(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64) -> Arc<TelemetrySample> {
        Arc::new(TelemetrySample {
            at_unix_ms: at,
            interval_s: 1.0,
            cpu_percent: 0.0,
            ram_used_bytes: 0,
            ram_total_bytes: 0,
            process_cpu_percent: 0.0,
            process_memory_bytes: 0,
            logical_cores: 1,
            cpu_power_w: 0.0,
            cpu_power_estimated: true,
            cpu_temperature_c: None,
            process_cpu_energy_wh: 0.0,
            gpus: vec![],
        })
    }

    #[test]
    fn hearth_pays_for_its_share_of_the_processor() {
        // 4 cores, the machine 50 % busy, Hearth using two cores' worth of it (200 % of one
        // core = 50 % of the machine): all of the 60 W over an hour is Hearth's.
        let all = process_cpu_energy_wh(60.0, 50.0, 200.0, 4, 3600.0);
        assert!((all - 60.0).abs() < 1e-6, "{all}");
        // Hearth half of the busy time: half the energy.
        let half = process_cpu_energy_wh(60.0, 50.0, 100.0, 4, 3600.0);
        assert!((half - 30.0).abs() < 1e-6, "{half}");
        // Idle Hearth pays nothing; an idle machine gives no division by zero.
        assert_eq!(process_cpu_energy_wh(60.0, 10.0, 0.0, 4, 3600.0), 0.0);
        assert_eq!(process_cpu_energy_wh(0.0, 0.0, 0.0, 4, 3600.0), 0.0);
    }

    #[test]
    fn history_keeps_the_newest_and_finds_by_time() {
        let mut history = TelemetryHistory::new(3);
        for at in [10, 20, 30, 40] {
            history.push(sample(at));
        }
        assert_eq!(history.len(), 3);
        let times: Vec<u64> = history.since(0).iter().map(|s| s.at_unix_ms).collect();
        assert_eq!(times, vec![20, 30, 40]);
        let times: Vec<u64> = history.since(25).iter().map(|s| s.at_unix_ms).collect();
        assert_eq!(times, vec![30, 40]);
        assert!(history.since(41).is_empty());
    }

    #[test]
    fn energy_is_measured_from_power_or_estimated_from_utilisation() {
        let measured = GpuSample {
            power_w: Some(200.0),
            utilisation_percent: Some(50.0),
            ..GpuSample::default()
        }
        .with_energy(36.0);
        assert_eq!(measured.energy_wh, Some(2.0));
        assert!(!measured.energy_estimated);

        let estimated = GpuSample {
            utilisation_percent: Some(50.0),
            power_limit_w: Some(300.0),
            ..GpuSample::default()
        }
        .with_energy(3600.0);
        assert_eq!(estimated.energy_wh, Some(150.0));
        assert!(estimated.energy_estimated);

        let unknown = GpuSample::default().with_energy(1.0);
        assert_eq!(unknown.energy_wh, None);
    }
}
