//! What hardware Hearth runs on.
//!
//! [`detect`] lists every GPU — wgpu adapters on all graphics APIs, merged when one physical GPU
//! shows up through several — and fills in what the platform tells beyond wgpu: NVIDIA through
//! NVML (loaded at run time; no driver is a clean "not available"), AMD through sysfs, and on
//! Windows DXGI's adapter list. CPU and memory come from sysinfo.
//!
//! [`Sampler`] takes live [`TelemetrySample`]s (1 Hz by default) into an hour-long ring buffer
//! and a broadcast stream; [`drm_processes`] and [`NvidiaSource::processes`] tell which
//! processes are using a GPU.

pub mod amd;
pub mod cpu_power;
pub mod dxgi;
mod gpu;
pub mod gpu_engines;
pub mod nvidia;
pub mod probe;
pub mod processes;
mod system;
mod table;
pub mod telemetry;

use std::path::PathBuf;

use serde::Serialize;

pub use cpu_power::{CpuPower, CpuPowerReading, TYPICAL_CPU_WATTS};
pub use gpu::{AdapterRecord, GpuInfo, GpuKind, Vendor, merge_adapters};
pub use nvidia::{NvidiaError, NvidiaGpu, NvidiaReading, NvidiaSource, Nvml};
pub use probe::wgpu_adapters;
pub use processes::{GpuProcess, ProcessSource, drm_process, drm_processes};
pub use system::{CpuInfo, MemoryInfo};
pub use table::render_table;
pub use telemetry::{
    GpuReadings, GpuSample, PlatformGpus, Sampler, TelemetryHistory, TelemetrySample,
};

/// Whether an optional source of information could be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SourceStatus {
    /// Used.
    Available,
    /// Not on this machine, with the reason (e.g. no NVIDIA driver).
    NotAvailable { reason: String },
}

impl std::fmt::Display for SourceStatus {
    /// "available", or "not available (the reason)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Available => f.write_str("available"),
            Self::NotAvailable { reason } => write!(f, "not available ({reason})"),
        }
    }
}

/// Everything [`detect`] found.
#[derive(Clone, Debug, Serialize)]
pub struct HardwareReport {
    /// One entry per physical GPU (software rasterisers included, marked as such).
    pub gpus: Vec<GpuInfo>,
    /// The processor.
    pub cpu: CpuInfo,
    /// Installed and available memory.
    pub memory: MemoryInfo,
    /// Whether NVML answered.
    pub nvml: SourceStatus,
    /// Whether DXGI (Windows' adapter list) answered.
    pub dxgi: SourceStatus,
}

/// Where [`detect`] looks. Tests point these at fixtures and fakes.
#[derive(Debug)]
pub struct Sources<'a> {
    /// The sysfs root, normally `/sys`.
    pub sysfs: PathBuf,
    /// NVIDIA's management library, or a stand-in.
    pub nvidia: &'a dyn NvidiaSource,
    /// wgpu adapters; `None` asks wgpu.
    pub adapters: Option<Vec<AdapterRecord>>,
}

/// Detect GPUs, CPU and memory.
pub fn detect(sources: &Sources<'_>) -> HardwareReport {
    let adapters = match &sources.adapters {
        Some(adapters) => adapters.clone(),
        None => wgpu_adapters(),
    };
    let mut gpus = merge_adapters(&adapters);
    let amd_cards = amd::read_cards(&sources.sysfs);
    for gpu in gpus.iter_mut().filter(|g| g.vendor == Vendor::Amd) {
        if let Some(card) = amd_cards
            .iter()
            .find(|c| Some(c.device_id) == gpu.device_id)
        {
            gpu.vram_total_bytes = card.vram_total_bytes;
            gpu.sysfs_card = Some(card.name.clone());
        }
    }
    let nvml = match sources.nvidia.gpus() {
        Ok(nvidia) => {
            for found in nvidia {
                let matching = gpus
                    .iter_mut()
                    .find(|g| g.vendor == Vendor::Nvidia && g.name == found.name);
                match matching {
                    Some(gpu) => {
                        gpu.vram_total_bytes = Some(found.vram_total_bytes);
                        gpu.driver_version = Some(found.driver_version.clone());
                    }
                    // NVML sees it but wgpu does not (no Vulkan driver installed, say).
                    None => gpus.push(GpuInfo::from_nvml(&found)),
                }
            }
            SourceStatus::Available
        }
        Err(reason) => SourceStatus::NotAvailable {
            reason: reason.to_string(),
        },
    };
    // Windows' own list: dedicated memory and driver versions wgpu does not give.
    let dxgi = match dxgi::local_adapters() {
        Ok(adapters) => {
            dxgi::apply_dxgi(&mut gpus, &adapters);
            SourceStatus::Available
        }
        Err(reason) => SourceStatus::NotAvailable { reason },
    };
    HardwareReport {
        gpus,
        cpu: system::cpu(),
        memory: system::memory(),
        nvml,
        dxgi,
    }
}

/// [`detect`] on this machine: `/sys`, the real NVML, real wgpu adapters.
pub fn detect_local() -> HardwareReport {
    detect(&Sources {
        sysfs: PathBuf::from("/sys"),
        nvidia: &Nvml::default(),
        adapters: None,
    })
}
