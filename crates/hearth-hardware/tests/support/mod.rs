//! Shared by the hardware tests: fixture paths and stand-ins for NVML.

#![allow(dead_code)] // each test file uses a part

use std::path::PathBuf;

use hearth_hardware::{
    GpuProcess, NvidiaError, NvidiaGpu, NvidiaReading, NvidiaSource, ProcessSource,
};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// NVML as a machine with one RTX 4090 reports it.
#[derive(Debug)]
pub struct OneRtx4090;

impl NvidiaSource for OneRtx4090 {
    fn gpus(&self) -> Result<Vec<NvidiaGpu>, NvidiaError> {
        Ok(vec![NvidiaGpu {
            name: "NVIDIA GeForce RTX 4090".into(),
            vram_total_bytes: 25_757_220_864,
            driver_version: "550.54.14".into(),
        }])
    }

    fn readings(&self) -> Result<Vec<NvidiaReading>, NvidiaError> {
        Ok(vec![NvidiaReading {
            index: 0,
            name: "NVIDIA GeForce RTX 4090".into(),
            utilisation_percent: Some(97),
            vram_used_bytes: Some(8 << 30),
            vram_total_bytes: Some(25_757_220_864),
            temperature_c: Some(71),
            power_mw: Some(412_000),
            power_limit_mw: Some(450_000),
            graphics_clock_mhz: Some(2520),
            memory_clock_mhz: Some(10501),
            fan_percent: Some(64),
        }])
    }

    fn processes(&self) -> Result<Vec<GpuProcess>, NvidiaError> {
        Ok(vec![GpuProcess {
            pid: 4242,
            name: "Cyberpunk2077.exe".into(),
            gpu: "nvml:0".into(),
            vram_bytes: Some(6 << 30),
            engine_busy_ns: None,
            source: ProcessSource::NvmlCompute,
        }])
    }
}

/// NVML on a machine without the NVIDIA driver.
#[derive(Debug)]
pub struct NoDriver;

impl NvidiaSource for NoDriver {
    fn gpus(&self) -> Result<Vec<NvidiaGpu>, NvidiaError> {
        Err(NvidiaError::Unavailable(
            "libnvidia-ml.so.1: cannot open shared object file".into(),
        ))
    }

    fn readings(&self) -> Result<Vec<NvidiaReading>, NvidiaError> {
        Err(NvidiaError::Unavailable(
            "libnvidia-ml.so.1: cannot open shared object file".into(),
        ))
    }

    fn processes(&self) -> Result<Vec<GpuProcess>, NvidiaError> {
        Err(NvidiaError::Unavailable(
            "libnvidia-ml.so.1: cannot open shared object file".into(),
        ))
    }
}
