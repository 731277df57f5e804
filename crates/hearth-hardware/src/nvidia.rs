//! NVIDIA GPUs through NVML, loaded at run time: without the driver this is a clean "not
//! available", never a crash. Behind [`NvidiaSource`] so tests can stand in for the driver.

use std::sync::OnceLock;

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use serde::Serialize;

use crate::processes::{GpuProcess, ProcessSource};

/// NVIDIA's PCI vendor id.
pub const NVIDIA_VENDOR: u32 = 0x10de;

/// An NVIDIA GPU as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NvidiaGpu {
    pub name: String,
    pub vram_total_bytes: u64,
    pub driver_version: String,
}

/// One NVIDIA GPU's live figures; `None` where the board does not report one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NvidiaReading {
    pub index: u32,
    pub name: String,
    pub utilisation_percent: Option<u32>,
    pub vram_used_bytes: Option<u64>,
    pub vram_total_bytes: Option<u64>,
    pub temperature_c: Option<u32>,
    pub power_mw: Option<u32>,
    pub power_limit_mw: Option<u32>,
    pub graphics_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    /// The first fan's speed in percent of its maximum.
    pub fan_percent: Option<u32>,
}

/// Why NVML gave no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NvidiaError {
    /// The library did not load or start (no NVIDIA driver: the usual case on other GPUs).
    #[error("NVML is not available: {0}")]
    Unavailable(String),
    /// NVML is there but a call failed; names the call.
    #[error("NVML {call}: {reason}")]
    Call { call: &'static str, reason: String },
}

impl NvidiaError {
    fn call(call: &'static str) -> impl FnOnce(nvml_wrapper::error::NvmlError) -> Self {
        move |e| Self::Call {
            call,
            reason: e.to_string(),
        }
    }
}

/// Something that lists NVIDIA GPUs, reads their figures and the processes on them.
pub trait NvidiaSource: std::fmt::Debug + Send + Sync {
    /// The GPUs, or why they cannot be listed.
    fn gpus(&self) -> Result<Vec<NvidiaGpu>, NvidiaError>;
    /// Live figures of every GPU.
    fn readings(&self) -> Result<Vec<NvidiaReading>, NvidiaError>;
    /// Processes with work (compute or graphics) on any GPU.
    fn processes(&self) -> Result<Vec<GpuProcess>, NvidiaError>;
}

/// The real NVML (`libnvidia-ml.so.1`), loaded on first use and kept.
#[derive(Debug, Default)]
pub struct Nvml {
    handle: OnceLock<Result<nvml_wrapper::Nvml, NvidiaError>>,
}

impl Nvml {
    fn nvml(&self) -> Result<&nvml_wrapper::Nvml, NvidiaError> {
        self.handle
            .get_or_init(|| {
                nvml_wrapper::Nvml::init()
                    .or_else(|error| init_from_older_driver_folder().ok_or(error))
                    .map_err(|e| NvidiaError::Unavailable(e.to_string()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Drivers before R418 put `nvml.dll` in NVSMI under Program Files, not in System32 where
/// the loader looks.
#[cfg(windows)]
fn init_from_older_driver_folder() -> Option<nvml_wrapper::Nvml> {
    let program_files = std::env::var_os("ProgramFiles")?;
    let dll = std::path::Path::new(&program_files).join(r"NVIDIA Corporation\NVSMI\nvml.dll");
    nvml_wrapper::Nvml::builder()
        .lib_path(dll.as_os_str())
        .init()
        .ok()
}

#[cfg(not(windows))]
fn init_from_older_driver_folder() -> Option<nvml_wrapper::Nvml> {
    None
}

impl NvidiaSource for Nvml {
    fn gpus(&self) -> Result<Vec<NvidiaGpu>, NvidiaError> {
        let nvml = self.nvml()?;
        let driver_version = nvml
            .sys_driver_version()
            .map_err(NvidiaError::call("sys_driver_version"))?;
        let count = nvml
            .device_count()
            .map_err(NvidiaError::call("device_count"))?;
        (0..count)
            .map(|index| {
                let device = nvml
                    .device_by_index(index)
                    .map_err(NvidiaError::call("device_by_index"))?;
                Ok(NvidiaGpu {
                    name: device.name().map_err(NvidiaError::call("name"))?,
                    vram_total_bytes: device
                        .memory_info()
                        .map_err(NvidiaError::call("memory_info"))?
                        .total,
                    driver_version: driver_version.clone(),
                })
            })
            .collect()
    }

    fn readings(&self) -> Result<Vec<NvidiaReading>, NvidiaError> {
        let nvml = self.nvml()?;
        let count = nvml
            .device_count()
            .map_err(NvidiaError::call("device_count"))?;
        (0..count)
            .map(|index| {
                let device = nvml
                    .device_by_index(index)
                    .map_err(NvidiaError::call("device_by_index"))?;
                let memory = device.memory_info().ok();
                Ok(NvidiaReading {
                    index,
                    name: device.name().unwrap_or_default(),
                    utilisation_percent: device.utilization_rates().ok().map(|u| u.gpu),
                    vram_used_bytes: memory.as_ref().map(|m| m.used),
                    vram_total_bytes: memory.as_ref().map(|m| m.total),
                    temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
                    power_mw: device.power_usage().ok(),
                    power_limit_mw: device.enforced_power_limit().ok(),
                    graphics_clock_mhz: device.clock_info(Clock::Graphics).ok(),
                    memory_clock_mhz: device.clock_info(Clock::Memory).ok(),
                    fan_percent: device.fan_speed(0).ok(),
                })
            })
            .collect()
    }

    fn processes(&self) -> Result<Vec<GpuProcess>, NvidiaError> {
        let nvml = self.nvml()?;
        let count = nvml
            .device_count()
            .map_err(NvidiaError::call("device_count"))?;
        let mut found = Vec::new();
        for index in 0..count {
            let device = nvml
                .device_by_index(index)
                .map_err(NvidiaError::call("device_by_index"))?;
            let lists = [
                (
                    ProcessSource::NvmlCompute,
                    device.running_compute_processes().unwrap_or_default(),
                ),
                (
                    ProcessSource::NvmlGraphics,
                    device.running_graphics_processes().unwrap_or_default(),
                ),
            ];
            for (source, info) in lists
                .into_iter()
                .flat_map(|(source, list)| list.into_iter().map(move |info| (source, info)))
            {
                found.push(GpuProcess {
                    pid: info.pid,
                    name: crate::processes::process_name(info.pid),
                    gpu: format!("nvml:{index}"),
                    vram_bytes: match info.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes),
                        UsedGpuMemory::Unavailable => None,
                    },
                    engine_busy_ns: None,
                    source,
                });
            }
        }
        Ok(found)
    }
}
