//! CPU and memory, through sysinfo.

use serde::Serialize;
use sysinfo::System;

/// The processor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    /// Model name, e.g. "AMD Ryzen 7 7800X3D 8-Core Processor".
    pub model: String,
    /// Logical cores (threads).
    pub logical_cores: usize,
    /// Physical cores, where known.
    pub physical_cores: Option<usize>,
}

/// System memory; `None` where the platform would not say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryInfo {
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

fn system() -> Option<System> {
    match System::new() {
        Ok(system) => Some(system),
        Err(error) => {
            tracing::warn!(%error, "sysinfo cannot read this system");
            None
        }
    }
}

pub(crate) fn cpu() -> CpuInfo {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let Some(mut system) = system() else {
        return CpuInfo {
            model: "unknown CPU".into(),
            logical_cores: threads,
            physical_cores: None,
        };
    };
    // Windows: the list without sysinfo's usage counters, which Wine lacks (see telemetry).
    #[cfg(windows)]
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing().with_frequency());
    #[cfg(not(windows))]
    system.refresh_cpu_all();
    let cpus = system.cpus();
    CpuInfo {
        model: cpus
            .first()
            .map(|c| c.brand().trim().to_owned())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "unknown CPU".into()),
        logical_cores: if cpus.is_empty() { threads } else { cpus.len() },
        physical_cores: System::physical_core_count().ok(),
    }
}

pub(crate) fn memory() -> MemoryInfo {
    let Some(mut system) = system() else {
        return MemoryInfo {
            total_bytes: None,
            available_bytes: None,
        };
    };
    system.refresh_memory();
    MemoryInfo {
        total_bytes: Some(system.total_memory()),
        available_bytes: Some(system.available_memory()),
    }
}
