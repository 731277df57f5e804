//! GPUs as wgpu sees them, merged into one entry per physical device.

use serde::{Deserialize, Serialize};

use crate::nvidia::NvidiaGpu;

/// What kind of device an adapter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuKind {
    /// A graphics card of its own.
    Discrete,
    /// Part of the CPU package.
    Integrated,
    /// A GPU passed through to a virtual machine.
    Virtual,
    /// A software rasteriser running on the CPU (e.g. Mesa's llvmpipe/lavapipe).
    Software,
    /// The driver did not say.
    Other,
}

/// Who made it, from the PCI vendor id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Nvidia,
    Amd,
    Intel,
    Apple,
    /// Mesa's software drivers.
    Mesa,
    Other,
}

impl Vendor {
    /// From a PCI (or Khronos) vendor id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0x10de => Vendor::Nvidia,
            0x1002 | 0x1022 => Vendor::Amd,
            0x8086 => Vendor::Intel,
            0x106b => Vendor::Apple,
            0x10005 => Vendor::Mesa,
            _ => Vendor::Other,
        }
    }
}

/// One adapter as wgpu reports it (one per graphics API per device).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterRecord {
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub kind: GpuKind,
    /// Graphics API: Vulkan, Gl, Metal, Dx12.
    pub api: String,
    /// Driver name, e.g. "llvmpipe" or "NVIDIA".
    pub driver: String,
    /// Driver details, often its version.
    pub driver_info: String,
}

/// One physical GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub name: String,
    pub vendor: Vendor,
    pub kind: GpuKind,
    /// PCI device id, where known.
    pub device_id: Option<u32>,
    /// Graphics APIs it is reachable through, best first.
    pub apis: Vec<String>,
    pub driver: String,
    pub driver_version: Option<String>,
    /// Dedicated memory, where the platform tells it (NVML, AMD sysfs).
    pub vram_total_bytes: Option<u64>,
    /// `card0`, ... for GPUs found in sysfs.
    pub sysfs_card: Option<String>,
}

impl GpuInfo {
    /// An NVIDIA GPU that only NVML reported.
    pub fn from_nvml(gpu: &NvidiaGpu) -> Self {
        Self {
            name: gpu.name.clone(),
            vendor: Vendor::Nvidia,
            kind: GpuKind::Discrete,
            device_id: None,
            apis: Vec::new(),
            driver: "NVIDIA".into(),
            driver_version: Some(gpu.driver_version.clone()),
            vram_total_bytes: Some(gpu.vram_total_bytes),
            sysfs_card: None,
        }
    }

    /// True for real GPUs, false for software rasterisers.
    pub fn is_hardware(&self) -> bool {
        matches!(
            self.kind,
            GpuKind::Discrete | GpuKind::Integrated | GpuKind::Virtual
        )
    }
}

fn api_rank(api: &str) -> u8 {
    match api {
        "Vulkan" | "Metal" | "Dx12" => 0,
        _ => 1,
    }
}

/// One [`GpuInfo`] per physical device: adapters with the same vendor and device id (or, when
/// the driver gives no ids, the same name) are one GPU seen through several APIs. Hardware
/// first, then by name.
pub fn merge_adapters(adapters: &[AdapterRecord]) -> Vec<GpuInfo> {
    let mut sorted: Vec<&AdapterRecord> = adapters.iter().collect();
    sorted.sort_by_key(|a| api_rank(&a.api));
    let mut gpus: Vec<(GpuInfo, (u32, u32, String))> = Vec::new();
    for adapter in sorted {
        let key = if adapter.vendor_id != 0 && adapter.device_id != 0 {
            (adapter.vendor_id, adapter.device_id, String::new())
        } else {
            (0, 0, adapter.name.to_lowercase())
        };
        if let Some((gpu, _)) = gpus.iter_mut().find(|(_, k)| *k == key) {
            if !gpu.apis.contains(&adapter.api) {
                gpu.apis.push(adapter.api.clone());
            }
            continue;
        }
        let version = adapter.driver_info.trim();
        gpus.push((
            GpuInfo {
                name: adapter.name.clone(),
                vendor: Vendor::from_id(adapter.vendor_id),
                kind: adapter.kind,
                device_id: (adapter.device_id != 0).then_some(adapter.device_id),
                apis: vec![adapter.api.clone()],
                driver: adapter.driver.clone(),
                driver_version: (!version.is_empty()).then(|| version.to_owned()),
                vram_total_bytes: None,
                sysfs_card: None,
            },
            key,
        ));
    }
    let mut gpus: Vec<GpuInfo> = gpus.into_iter().map(|(gpu, _)| gpu).collect();
    gpus.sort_by(|a, b| {
        b.is_hardware()
            .cmp(&a.is_hardware())
            .then(a.name.cmp(&b.name))
    });
    gpus
}
