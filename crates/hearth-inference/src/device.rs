//! Which hardware runs the models: burn's wgpu backend on a real GPU, else the CPU (Hearth's
//! own forward passes on the host; burn-ndarray with system OpenBLAS, the fastest burn CPU
//! backend measured on these machines, holds the weights while they load).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use burn::tensor::wgpu::WgpuBackend;
use burn::tensor::{Device, DeviceKind};
use hearth_hardware::GpuKind;

use crate::error::{InferenceError, Result};

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendPreference {
    /// A real GPU when there is one, else the CPU.
    #[default]
    Auto,
    /// Always the CPU backend.
    Cpu,
    /// Always wgpu, even on a software adapter (useful for tests on machines without a GPU).
    Wgpu,
}

impl FromStr for BackendPreference {
    type Err = InferenceError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(InferenceError::BackendUnavailable {
                backend: "unknown",
                reason: format!("{other:?} is not one of auto, cpu, wgpu"),
            }),
        }
    }
}

/// The backend a model runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeBackend {
    /// The CPU: Hearth's own forward passes on the host for every model (burn-ndarray with
    /// OpenBLAS holds the weights while they load, and serves the capability checks).
    Cpu,
    /// burn's wgpu backend (CubeCL, WGSL kernels).
    Wgpu,
}

impl fmt::Display for ComputeBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputeBackend::Cpu => "cpu",
            ComputeBackend::Wgpu => "wgpu",
        })
    }
}

/// A wgpu adapter as the models see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name, e.g. "NVIDIA GeForce RTX 4070" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Graphics API it was found through.
    pub api: String,
    /// True for discrete, integrated and virtual GPUs; false for software rasterisers.
    pub is_hardware: bool,
    /// The driver and its version as wgpu reports them (empty where it reports none).
    pub driver: String,
}

/// A device chosen for running models.
#[derive(Clone, Debug)]
pub struct ComputeDevice {
    /// Which backend.
    pub backend: ComputeBackend,
    /// The burn device to put modules and tensors on.
    pub device: Device,
    /// The adapter behind a wgpu device.
    pub adapter: Option<AdapterSummary>,
}

impl ComputeDevice {
    /// The CPU backend.
    #[allow(deprecated)] // burn-ndarray is deprecated upstream but is still the fastest CPU backend here
    pub fn cpu() -> Self {
        Self {
            backend: ComputeBackend::Cpu,
            device: Device::ndarray(),
            adapter: None,
        }
    }

    /// burn's wgpu backend on its default adapter. Fails when wgpu finds no adapter at all.
    pub fn wgpu() -> Result<Self> {
        let adapters = wgpu_adapters();
        let Some(best) = best_adapter(&adapters) else {
            return Err(InferenceError::BackendUnavailable {
                backend: "wgpu",
                reason: "wgpu found no adapter (install a GPU driver, or Mesa's lavapipe)".into(),
            });
        };
        Ok(Self {
            backend: ComputeBackend::Wgpu,
            device: wgpu_device(best)?,
            adapter: Some(best.clone()),
        })
    }

    /// Pick per `preference`: `Auto` takes wgpu only on a hardware adapter.
    pub fn select(preference: BackendPreference) -> Result<Self> {
        match preference {
            BackendPreference::Cpu => Ok(Self::cpu()),
            BackendPreference::Wgpu => Self::wgpu(),
            BackendPreference::Auto => {
                let adapters = wgpu_adapters();
                match best_adapter(&adapters) {
                    Some(adapter) if adapter.is_hardware => Ok(Self {
                        backend: ComputeBackend::Wgpu,
                        device: wgpu_device(adapter)?,
                        adapter: Some(adapter.clone()),
                    }),
                    _ => Ok(Self::cpu()),
                }
            }
        }
    }

    /// Wait for queued work to finish (for timing).
    pub fn sync(&self) -> Result<()> {
        self.device
            .sync()
            .map_err(|e| InferenceError::Execution(format!("{e:?}")))
    }

    /// "wgpu (NVIDIA GeForce RTX 4070, Vulkan)" or "cpu".
    pub fn describe(&self) -> String {
        match &self.adapter {
            Some(adapter) => format!("{} ({}, {})", self.backend, adapter.name, adapter.api),
            None => self.backend.to_string(),
        }
    }
}

/// The burn device for `adapter`: pinned to Vulkan when the adapter is a Vulkan one (so a test
/// proves it runs there, rather than on a GL fallback), else wgpu's own choice. burn's runtime
/// is initialised once per process; later calls reuse it.
fn wgpu_device(adapter: &AdapterSummary) -> Result<Device> {
    static VULKAN: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    if adapter.api != "Vulkan" {
        return Ok(Device::wgpu(DeviceKind::DefaultDevice));
    }
    VULKAN
        .get_or_init(|| {
            Device::wgpu_options()
                .graphics_api(WgpuBackend::Vulkan)
                .init()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|reason| InferenceError::BackendUnavailable {
            backend: "wgpu",
            reason,
        })
}

/// Every adapter wgpu can see, on every backend (hearth-hardware's probe).
pub fn wgpu_adapters() -> Vec<AdapterSummary> {
    hearth_hardware::wgpu_adapters()
        .into_iter()
        .map(|record| AdapterSummary {
            is_hardware: matches!(
                record.kind,
                GpuKind::Discrete | GpuKind::Integrated | GpuKind::Virtual
            ),
            name: record.name,
            api: record.api,
            driver: format!("{} {}", record.driver, record.driver_info)
                .trim()
                .to_owned(),
        })
        .collect()
}

/// Hardware before software, Vulkan before the rest.
fn best_adapter(adapters: &[AdapterSummary]) -> Option<&AdapterSummary> {
    adapters
        .iter()
        .max_by_key(|a| (a.is_hardware, a.api == "Vulkan"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(name: &str, api: &str, is_hardware: bool) -> AdapterSummary {
        AdapterSummary {
            name: name.into(),
            api: api.into(),
            is_hardware,
            driver: String::new(),
        }
    }

    #[test]
    fn prefers_hardware_then_vulkan() {
        let list = [
            adapter("llvmpipe", "Vulkan", false),
            adapter("RTX", "Gl", true),
            adapter("RTX", "Vulkan", true),
        ];
        assert_eq!(best_adapter(&list), Some(&list[2]));
        assert_eq!(best_adapter(&list[..1]), Some(&list[0]));
        assert_eq!(best_adapter(&[]), None);
    }

    #[test]
    fn parses_preferences() {
        assert_eq!(
            "CPU".parse::<BackendPreference>().unwrap(),
            BackendPreference::Cpu
        );
        assert_eq!(
            "gpu".parse::<BackendPreference>().unwrap(),
            BackendPreference::Wgpu
        );
        assert!("tpu".parse::<BackendPreference>().is_err());
    }
}
