//! NVIDIA GPUs through NVML, loaded at run time: without the driver this is a clean "not
//! available", never a crash. Behind [`NvidiaSource`] so tests can stand in for the driver.

use serde::Serialize;

/// An NVIDIA GPU as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NvidiaGpu {
    pub name: String,
    pub vram_total_bytes: u64,
    pub driver_version: String,
}

/// Something that lists NVIDIA GPUs.
pub trait NvidiaSource: std::fmt::Debug {
    /// The GPUs, or why they cannot be listed.
    fn gpus(&self) -> Result<Vec<NvidiaGpu>, String>;
}

/// The real NVML (`libnvidia-ml.so.1`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Nvml;

impl NvidiaSource for Nvml {
    fn gpus(&self) -> Result<Vec<NvidiaGpu>, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| e.to_string())?;
        let driver_version = nvml.sys_driver_version().map_err(|e| e.to_string())?;
        let count = nvml.device_count().map_err(|e| e.to_string())?;
        (0..count)
            .map(|index| {
                let device = nvml.device_by_index(index).map_err(|e| e.to_string())?;
                Ok(NvidiaGpu {
                    name: device.name().map_err(|e| e.to_string())?,
                    vram_total_bytes: device.memory_info().map_err(|e| e.to_string())?.total,
                    driver_version: driver_version.clone(),
                })
            })
            .collect()
    }
}
