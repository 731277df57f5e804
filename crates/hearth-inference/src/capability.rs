//! The capability benchmark: what this machine can do for Hearth, measured in well under 20 s.
//!
//! Per usable backend, matrix-product speed (GFLOP/s on 1024² f32) and memory bandwidth
//! (GB/s reading and writing a 64 MiB tensor in place), then which of Hearth's models fit in the memory
//! each backend has. The result is stored with a fingerprint of the hardware and drivers and
//! re-measured only when that changes.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burn::tensor::{Distribution, Tensor};
use hearth_hardware::HardwareReport;
use serde::{Deserialize, Serialize};

use crate::cpu_kernels::{self, MatRef, Threads};
use crate::device::{ComputeBackend, ComputeDevice};
use crate::error::{InferenceError, Result};
use crate::store::ModelStore;

/// Bumped when what is measured changes, so old results are measured again.
pub const BENCHMARK_VERSION: u32 = 2;
/// Side of the square matrices multiplied.
const MATMUL_SIDE: usize = 1024;
/// Elements of the bandwidth tensor (64 MiB of f32).
const BANDWIDTH_ELEMENTS: usize = 16 << 20;
/// Time spent on repetitions of each measurement, after its warm-up.
const MEASURE_BUDGET: Duration = Duration::from_millis(1000);

/// One backend's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendFigures {
    /// `cpu` or `wgpu`.
    pub backend: String,
    /// What it ran on, e.g. "wgpu (NVIDIA GeForce RTX 4070, Vulkan)".
    pub device: String,
    /// Median f32 matrix-product speed.
    pub matmul_gflops: f64,
    /// Median bytes read and written per second by an element-wise pass.
    pub bandwidth_gb_per_s: f64,
    /// Memory this backend's models live in (VRAM, or RAM for the CPU and software adapters).
    pub memory_bytes: Option<u64>,
}

/// Whether a model fits each backend's memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFit {
    pub model: String,
    /// Memory the model needs when loaded and running (from its manifest).
    pub needs_bytes: u64,
    /// Backends (`cpu`, `wgpu`) whose memory holds it with room to spare.
    pub fits: Vec<String>,
}

/// Everything the benchmark found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityReport {
    pub version: u32,
    /// Hardware and drivers the figures belong to.
    pub fingerprint: String,
    pub measured_at_unix: u64,
    /// How long the benchmark took.
    pub seconds: f64,
    pub backends: Vec<BackendFigures>,
    pub models: Vec<ModelFit>,
}

/// A step of the benchmark, for progress bars.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// 0.0 ..= 1.0.
    pub fraction: f32,
    pub message: String,
}

/// What identifies the hardware and drivers: CPU model and core count, RAM, each GPU with its
/// driver and version. A change in any of them means measuring again.
pub fn fingerprint(report: &HardwareReport) -> String {
    let mut parts = vec![format!(
        "cpu={} x{}",
        report.cpu.model, report.cpu.logical_cores
    )];
    if let Some(total) = report.memory.total_bytes {
        // Rounded to GiB: the reported total moves by a few pages between boots.
        parts.push(format!("ram={}GiB", total >> 30));
    }
    for gpu in &report.gpus {
        parts.push(format!(
            "gpu={} driver={} {}",
            gpu.name,
            gpu.driver,
            gpu.driver_version.as_deref().unwrap_or("")
        ));
    }
    parts.push(format!("hearth={}", env!("CARGO_PKG_VERSION")));
    parts.join("; ")
}

fn seconds_of(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

/// Warm up once, then repeat `run` within [`MEASURE_BUDGET`] (3 to 20 times); the median.
fn median_seconds(mut run: impl FnMut() -> Result<f64>) -> Result<f64> {
    run()?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || (start.elapsed() < MEASURE_BUDGET && times.len() < 20) {
        times.push(run()?);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Read a result back to the host. burn's wgpu backend hands out the data lazily (measured:
/// `try_into_data` returns in 0.2 ms for a 1024² product that takes 130 ms), so the values are
/// taken out here to include the work.
fn read_back<const D: usize>(t: Tensor<D>) -> Result<()> {
    crate::weights::tensor_values(t).map(drop)
}

/// Matrix-product speed and bandwidth of one device.
pub fn measure_backend(device: &ComputeDevice) -> Result<BackendFigures> {
    let dev = &device.device;
    let n = MATMUL_SIDE;
    let matmul = match device.backend {
        // The product the CPU models run on (their own forward passes), not burn's.
        ComputeBackend::Cpu => {
            let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
            let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
            let mut out = vec![0.0; n * n];
            median_seconds(|| {
                seconds_of(|| {
                    cpu_kernels::matmul(
                        &mut out,
                        n,
                        MatRef::row_major(&a, n, n),
                        MatRef::row_major(&b, n, n),
                        Threads::Pool,
                    );
                    Ok(())
                })
            })?
        }
        ComputeBackend::Wgpu => median_seconds(|| {
            // Fresh operands each time, read back, so nothing is reused or left queued.
            let a = Tensor::<2>::random([n, n], Distribution::Default, dev);
            let b = Tensor::<2>::random([n, n], Distribution::Default, dev);
            device.sync()?;
            seconds_of(|| read_back(a.matmul(b)))
        })?,
    };
    // One tensor updated in place (it has a single owner), so each pass reads and writes
    // 64 MiB without allocating: allocation and first-touch page faults are not bandwidth.
    let mut x = Some(Tensor::<1>::random(
        [BANDWIDTH_ELEMENTS],
        Distribution::Default,
        dev,
    ));
    let pass = median_seconds(|| {
        device.sync()?;
        seconds_of(|| {
            x = x.take().map(|t| t.add_scalar(1.0));
            device.sync()
        })
    })?;
    Ok(BackendFigures {
        backend: device.backend.to_string(),
        device: device.describe(),
        matmul_gflops: 2.0 * (n as f64).powi(3) / matmul / 1e9,
        bandwidth_gb_per_s: 2.0 * 4.0 * BANDWIDTH_ELEMENTS as f64 / pass / 1e9,
        memory_bytes: None,
    })
}

/// Memory a backend's models live in: the GPU's VRAM for a hardware adapter, else the RAM
/// available now.
fn backend_memory(device: &ComputeDevice, hardware: &HardwareReport) -> Option<u64> {
    match &device.adapter {
        Some(adapter) if adapter.is_hardware => hardware
            .gpus
            .iter()
            .find(|g| g.name == adapter.name)
            .and_then(|g| g.vram_total_bytes),
        _ => hardware.memory.available_bytes,
    }
}

/// Which models fit which backend, keeping a fifth of the memory for everything else.
pub fn model_fits(store: &ModelStore, backends: &[BackendFigures]) -> Result<Vec<ModelFit>> {
    let mut fits = Vec::new();
    for manifest in store.list()? {
        let Some(needs_bytes) = manifest.memory_mib.map(|m| m << 20) else {
            continue;
        };
        fits.push(ModelFit {
            model: manifest.id.clone(),
            needs_bytes,
            fits: backends
                .iter()
                .filter(|b| b.memory_bytes.is_some_and(|m| needs_bytes <= m / 5 * 4))
                .map(|b| b.backend.clone())
                .collect(),
        });
    }
    Ok(fits)
}

/// Run the whole benchmark on `devices`, telling `progress` as it goes.
pub fn run(
    store: &ModelStore,
    hardware: &HardwareReport,
    devices: &[ComputeDevice],
    progress: &mut dyn FnMut(Progress),
) -> Result<CapabilityReport> {
    let started = Instant::now();
    let mut backends = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        progress(Progress {
            fraction: i as f32 / (devices.len() + 1) as f32,
            message: format!("measuring {}", device.describe()),
        });
        let mut figures = measure_backend(device)?;
        figures.memory_bytes = backend_memory(device, hardware);
        backends.push(figures);
    }
    progress(Progress {
        fraction: devices.len() as f32 / (devices.len() + 1) as f32,
        message: "checking which models fit".into(),
    });
    let models = model_fits(store, &backends)?;
    progress(Progress {
        fraction: 1.0,
        message: "done".into(),
    });
    Ok(CapabilityReport {
        version: BENCHMARK_VERSION,
        fingerprint: fingerprint(hardware),
        measured_at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        seconds: started.elapsed().as_secs_f64(),
        backends,
        models,
    })
}

/// The stored result at `path` if it belongs to this hardware (same fingerprint and benchmark
/// version); else run the benchmark and store the new result. Returns whether it was measured
/// now. A missing, unreadable or corrupt file just means measuring.
pub fn load_or_run(
    path: &Path,
    store: &ModelStore,
    hardware: &HardwareReport,
    devices: &[ComputeDevice],
    force: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(CapabilityReport, bool)> {
    if !force
        && let Some(stored) = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CapabilityReport>(&bytes).ok())
        && stored.version == BENCHMARK_VERSION
        && stored.fingerprint == fingerprint(hardware)
    {
        return Ok((stored, false));
    }
    let report = run(store, hardware, devices, progress)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| InferenceError::io(parent, e))?;
    }
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| InferenceError::Execution(e.to_string()))?;
    // Write then rename, so a crash never leaves half a file.
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, json).map_err(|e| InferenceError::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| InferenceError::io(path, e))?;
    Ok((report, true))
}

/// [`load_or_run`] on this machine: its hardware as detected now, every usable device.
pub fn load_or_run_here(
    path: &Path,
    store: &ModelStore,
    force: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(CapabilityReport, bool)> {
    let hardware = hearth_hardware::detect_local();
    load_or_run(path, store, &hardware, &usable_devices(), force, progress)
}

/// Devices the benchmark measures: always the CPU, and wgpu where an adapter exists.
pub fn usable_devices() -> Vec<ComputeDevice> {
    let mut devices = vec![ComputeDevice::cpu()];
    match ComputeDevice::wgpu() {
        Ok(device) => devices.push(device),
        Err(error) => tracing::info!(%error, "no wgpu device to measure"),
    }
    devices
}

/// A one-screen summary.
pub fn render(report: &CapabilityReport) -> String {
    let mut out = String::new();
    for b in &report.backends {
        out.push_str(&format!(
            "{:<48} {:>8.1} GFLOP/s  {:>7.1} GB/s  memory {}\n",
            b.device,
            b.matmul_gflops,
            b.bandwidth_gb_per_s,
            b.memory_bytes.map_or("unknown".into(), |m| format!(
                "{:.1} GiB",
                m as f64 / f64::from(1 << 30)
            ))
        ));
    }
    for m in &report.models {
        out.push_str(&format!(
            "{:<24} needs {:>5} MiB  fits: {}\n",
            m.model,
            m.needs_bytes >> 20,
            if m.fits.is_empty() {
                "nowhere".to_owned()
            } else {
                m.fits.join(", ")
            }
        ));
    }
    out.push_str(&format!("measured in {:.1} s\n", report.seconds));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(backend: &str, memory: Option<u64>) -> BackendFigures {
        BackendFigures {
            backend: backend.into(),
            device: backend.into(),
            matmul_gflops: 1.0,
            bandwidth_gb_per_s: 1.0,
            memory_bytes: memory,
        }
    }

    #[test]
    fn models_fit_where_four_fifths_of_the_memory_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join("big");
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::write(
            model_dir.join("manifest.toml"),
            "id = \"big\"\ntask = \"embeddings\"\narchitecture = \"bert\"\nname = \"Big\"\nlicence = \"MIT\"\nmemory_mib = 800\n\
             [source]\nregistry = \"pypi\"\npackage = \"p\"\nversion = \"1\"\n\
             [[files]]\nname = \"w\"\npath_in_package = \"w\"\nsize = 1\nsha256 = \"{}\"\n"
                .replace("{}", &"0".repeat(64)),
        )
        .unwrap();
        let store = ModelStore::new(dir.path());
        let backends = [
            figures("cpu", Some(1000 << 20)),
            figures("wgpu", Some(900 << 20)),
        ];
        let fits = model_fits(&store, &backends).unwrap();
        assert_eq!(fits.len(), 1);
        assert_eq!(fits[0].needs_bytes, 800 << 20);
        assert_eq!(fits[0].fits, vec!["cpu".to_owned()]);
    }
}
