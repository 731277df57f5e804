//! Live telemetry: a sampler thread (1 Hz by default) reading GPU utilisation, VRAM,
//! temperature, power and clocks where the platform tells them, CPU and RAM of the machine,
//! and Hearth's own CPU and memory. Samples go to a ring buffer (the last hour, for charts)
//! and to every subscriber of a broadcast stream.
//!
//! Energy per interval is integrated from measured power where there is a power sensor, and
//! estimated as utilisation × board power where there is not; estimated figures say so.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::{broadcast, watch};

use crate::amd;
use crate::nvidia::{NvidiaReading, NvidiaSource};

/// Samples kept in the ring buffer: one hour at 1 Hz.
pub const HISTORY_LEN: usize = 3600;

/// Board power assumed for estimates when the GPU reports no power limit, by kind.
const DISCRETE_BOARD_POWER_W: f32 = 150.0;

/// One GPU at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    pub core_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
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
    pub gpus: Vec<GpuSample>,
}

/// A GPU reading before energy is worked out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuReading {
    pub id: String,
    pub name: String,
    pub utilisation_percent: Option<f32>,
    pub vram_used_bytes: Option<u64>,
    pub vram_total_bytes: Option<u64>,
    pub temperature_c: Option<f32>,
    pub power_w: Option<f32>,
    /// The most the board may draw, for energy estimates.
    pub power_limit_w: Option<f32>,
    pub core_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
}

impl GpuReading {
    /// Energy over `interval_s`: measured where power is known, else estimated from
    /// utilisation and the board's power limit (or a typical discrete board's).
    fn into_sample(self, interval_s: f64) -> GpuSample {
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
            id: self.id,
            name: self.name,
            utilisation_percent: self.utilisation_percent,
            vram_used_bytes: self.vram_used_bytes,
            vram_total_bytes: self.vram_total_bytes,
            temperature_c: self.temperature_c,
            power_w: self.power_w,
            core_clock_mhz: self.core_clock_mhz,
            memory_clock_mhz: self.memory_clock_mhz,
            energy_wh,
            energy_estimated,
        }
    }
}

/// Where GPU readings come from; tests use fixtures and fakes.
pub trait GpuReadings: Send + std::fmt::Debug {
    /// Current readings of every GPU this source knows.
    fn read(&mut self) -> Vec<GpuReading>;
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
    fn read(&mut self) -> Vec<GpuReading> {
        let mut readings: Vec<GpuReading> = amd::read_cards(&self.sysfs)
            .into_iter()
            // NVIDIA's driver publishes little in sysfs; NVML below covers those cards.
            .filter(|card| card.vendor_id != crate::nvidia::NVIDIA_VENDOR)
            .map(|card| GpuReading {
                id: format!("drm:{}", card.name),
                name: format!(
                    "{} {:04x}:{:04x}",
                    card.name, card.vendor_id, card.device_id
                ),
                utilisation_percent: card.busy_percent.map(f32::from),
                vram_used_bytes: card.vram_used_bytes,
                vram_total_bytes: card.vram_total_bytes,
                temperature_c: card.temperature_c,
                power_w: card.power_w,
                power_limit_w: card.power_cap_w,
                core_clock_mhz: card.core_clock_mhz,
                memory_clock_mhz: card.memory_clock_mhz,
            })
            .collect();
        // A machine without NVML stays without it: one failed load is not retried every second.
        if !self.nvidia_failed {
            match self.nvidia.readings() {
                Ok(nvidia) => readings.extend(nvidia.into_iter().map(NvidiaReading::into_reading)),
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
}

struct HostReading {
    cpu_percent: f32,
    ram_used_bytes: u64,
    ram_total_bytes: u64,
    process_cpu_percent: f32,
    process_memory_bytes: u64,
}

impl HostReader {
    fn new() -> Self {
        let mut reader = Self {
            system: System::new().ok(),
            pid: sysinfo::get_current_pid().ok(),
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
            };
        };
        system.refresh_cpu_usage();
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
            cpu_percent: system.global_cpu_usage(),
            ram_used_bytes: system.used_memory(),
            ram_total_bytes: system.total_memory(),
            process_cpu_percent,
            process_memory_bytes,
        }
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

    /// Energy of every GPU over the samples held, and whether any part of it was estimated.
    pub fn energy_wh(&self) -> (f64, bool) {
        self.samples
            .iter()
            .flat_map(|s| &s.gpus)
            .fold((0.0, false), |(sum, est), g| {
                (sum + g.energy_wh.unwrap_or(0.0), est || g.energy_estimated)
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
    /// Start sampling `gpus` and the host every `interval`.
    pub fn start(gpus: Box<dyn GpuReadings>, interval: Duration) -> std::io::Result<Self> {
        let history = Arc::new(Mutex::new(TelemetryHistory::new(HISTORY_LEN)));
        let (stream, _) = broadcast::channel(64);
        let (stop, mut stopped) = watch::channel(false);
        let thread = {
            let history = Arc::clone(&history);
            let stream = stream.clone();
            std::thread::Builder::new()
                .name("hearth-telemetry".into())
                .spawn(move || {
                    run(gpus, interval, &history, &stream, &mut stopped);
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
            let _ = thread.join();
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
        let sample = Arc::new(TelemetrySample {
            at_unix_ms: now_unix_ms(),
            interval_s,
            cpu_percent: h.cpu_percent,
            ram_used_bytes: h.ram_used_bytes,
            ram_total_bytes: h.ram_total_bytes,
            process_cpu_percent: h.process_cpu_percent,
            process_memory_bytes: h.process_memory_bytes,
            gpus: gpus
                .read()
                .into_iter()
                .map(|r| r.into_sample(interval_s))
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
            gpus: vec![],
        })
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
        let measured = GpuReading {
            power_w: Some(200.0),
            utilisation_percent: Some(50.0),
            ..GpuReading::default()
        }
        .into_sample(36.0);
        assert_eq!(measured.energy_wh, Some(2.0));
        assert!(!measured.energy_estimated);

        let estimated = GpuReading {
            utilisation_percent: Some(50.0),
            power_limit_w: Some(300.0),
            ..GpuReading::default()
        }
        .into_sample(3600.0);
        assert_eq!(estimated.energy_wh, Some(150.0));
        assert!(estimated.energy_estimated);

        let unknown = GpuReading::default().into_sample(1.0);
        assert_eq!(unknown.energy_wh, None);
    }
}
