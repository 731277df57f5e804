//! Windows' own list of display adapters (DXGI), read beside wgpu's: it tells what wgpu does
//! not, the dedicated video memory, and the driver's version as Windows numbers it
//! (`32.0.15.6094`). On other systems there is no DXGI and the list is "not available".

use serde::Serialize;

use crate::gpu::{GpuInfo, GpuKind, Vendor};

/// One adapter as DXGI describes it (`DXGI_ADAPTER_DESC1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DxgiAdapter {
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    /// Memory on the card itself; a few hundred MB carved out of RAM for integrated GPUs.
    pub dedicated_vram_bytes: u64,
    /// System memory the adapter may borrow.
    pub shared_memory_bytes: u64,
    /// Windows' software rasteriser ("Microsoft Basic Render Driver").
    pub software: bool,
    /// The user-mode driver's version, where the adapter answers for it.
    pub driver_version: Option<String>,
}

/// The user-mode driver version DXGI gives as one 64-bit number (four 16-bit parts, most
/// significant first), as Windows writes it: `32.0.15.6094`.
pub fn driver_version_string(umd_version: i64) -> String {
    let v = umd_version as u64;
    format!(
        "{}.{}.{}.{}",
        (v >> 48) & 0xffff,
        (v >> 32) & 0xffff,
        (v >> 16) & 0xffff,
        v & 0xffff
    )
}

/// Fill in what DXGI knows about the GPUs wgpu found (matched by vendor and device id):
/// dedicated memory where nothing better (NVML, sysfs) gave it, and the driver's version where
/// none is known. A hardware adapter wgpu did not list is added; software ones are not.
pub fn apply_dxgi(gpus: &mut Vec<GpuInfo>, adapters: &[DxgiAdapter]) {
    for adapter in adapters.iter().filter(|a| !a.software) {
        let same = gpus.iter_mut().find(|gpu| {
            gpu.device_id == Some(adapter.device_id)
                && gpu.vendor == Vendor::from_id(adapter.vendor_id)
        });
        match same {
            Some(gpu) => {
                if gpu.vram_total_bytes.is_none() && adapter.dedicated_vram_bytes > 0 {
                    gpu.vram_total_bytes = Some(adapter.dedicated_vram_bytes);
                }
                if gpu.driver_version.is_none() {
                    gpu.driver_version.clone_from(&adapter.driver_version);
                }
            }
            None => gpus.push(GpuInfo {
                name: adapter.name.clone(),
                vendor: Vendor::from_id(adapter.vendor_id),
                // DXGI does not say; a card of its own has far more than the few hundred MB
                // an integrated GPU is given.
                kind: if adapter.dedicated_vram_bytes >= 1 << 30 {
                    GpuKind::Discrete
                } else {
                    GpuKind::Other
                },
                device_id: Some(adapter.device_id),
                apis: Vec::new(),
                driver: "DXGI".into(),
                driver_version: adapter.driver_version.clone(),
                vram_total_bytes: (adapter.dedicated_vram_bytes > 0)
                    .then_some(adapter.dedicated_vram_bytes),
                sysfs_card: None,
            }),
        }
    }
}

/// The adapters DXGI lists on this computer.
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn local_adapters() -> Result<Vec<DxgiAdapter>, String> {
    use windows::Win32::Graphics::Dxgi::{
        CreateDXGIFactory1, DXGI_ADAPTER_FLAG_SOFTWARE, DXGI_ERROR_NOT_FOUND, IDXGIDevice,
        IDXGIFactory1,
    };
    use windows::core::Interface;

    // SAFETY: creates a COM object; no pointers of ours are involved.
    let factory: IDXGIFactory1 =
        unsafe { CreateDXGIFactory1() }.map_err(|e| format!("CreateDXGIFactory1: {e}"))?;
    let mut found = Vec::new();
    for index in 0.. {
        // SAFETY: a method call on a live factory.
        let adapter = match unsafe { factory.EnumAdapters1(index) } {
            Ok(adapter) => adapter,
            Err(e) if e.code() == DXGI_ERROR_NOT_FOUND => break,
            Err(e) => return Err(format!("EnumAdapters1({index}): {e}")),
        };
        // SAFETY: as above.
        let desc = unsafe { adapter.GetDesc1() }.map_err(|e| format!("GetDesc1: {e}"))?;
        // SAFETY: as above; the IID is a static GUID.
        let umd = unsafe { adapter.CheckInterfaceSupport(&IDXGIDevice::IID) }.ok();
        let name_end = desc
            .Description
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(desc.Description.len());
        found.push(DxgiAdapter {
            name: String::from_utf16_lossy(&desc.Description[..name_end]),
            vendor_id: desc.VendorId,
            device_id: desc.DeviceId,
            dedicated_vram_bytes: desc.DedicatedVideoMemory as u64,
            shared_memory_bytes: desc.SharedSystemMemory as u64,
            software: desc.Flags & (DXGI_ADAPTER_FLAG_SOFTWARE.0 as u32) != 0,
            driver_version: umd.map(driver_version_string),
        });
    }
    Ok(found)
}

/// There is no DXGI outside Windows.
#[cfg(not(windows))]
pub fn local_adapters() -> Result<Vec<DxgiAdapter>, String> {
    Err("DXGI is Windows' own".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{AdapterRecord, merge_adapters};

    /// A gaming PC in the form DXGI describes it: an RTX 4070 (12 GiB) through wgpu's Vulkan
    /// and DX12 adapters, the processor's Intel UHD 770 that wgpu did not list, and Windows'
    /// software renderer; NVIDIA driver 566.36 as Windows numbers it (32.0.15.6636). Typical
    /// figures for these parts, not read off a machine (there is no Windows machine here).
    fn gaming_pc() -> (Vec<GpuInfo>, Vec<DxgiAdapter>) {
        let record = |api: &str| AdapterRecord {
            name: "NVIDIA GeForce RTX 4070".into(),
            vendor_id: 0x10de,
            device_id: 0x2786,
            kind: GpuKind::Discrete,
            api: api.into(),
            driver: "NVIDIA".into(),
            driver_info: String::new(),
        };
        let gpus = merge_adapters(&[record("Vulkan"), record("Dx12")]);
        let adapters = vec![
            DxgiAdapter {
                name: "NVIDIA GeForce RTX 4070".into(),
                vendor_id: 0x10de,
                device_id: 0x2786,
                dedicated_vram_bytes: 12_585_009_152,
                shared_memory_bytes: 17_083_695_104,
                software: false,
                driver_version: Some(driver_version_string(0x0020_0000_000f_19ec)),
            },
            DxgiAdapter {
                name: "Intel(R) UHD Graphics 770".into(),
                vendor_id: 0x8086,
                device_id: 0x4680,
                dedicated_vram_bytes: 134_217_728,
                shared_memory_bytes: 17_083_695_104,
                software: false,
                driver_version: Some("31.0.101.4502".into()),
            },
            DxgiAdapter {
                name: "Microsoft Basic Render Driver".into(),
                vendor_id: 0x1414,
                device_id: 0x8c,
                dedicated_vram_bytes: 0,
                shared_memory_bytes: 17_083_695_104,
                software: true,
                driver_version: None,
            },
        ];
        (gpus, adapters)
    }

    #[test]
    fn the_driver_version_reads_as_windows_writes_it() {
        assert_eq!(driver_version_string(0x0020_0000_000f_19ec), "32.0.15.6636");
        assert_eq!(driver_version_string(-1), "65535.65535.65535.65535");
    }

    #[test]
    fn dxgi_gives_the_cards_memory_and_driver_and_the_gpu_wgpu_missed() {
        let (mut gpus, adapters) = gaming_pc();
        apply_dxgi(&mut gpus, &adapters);
        assert_eq!(gpus.len(), 2, "{gpus:?}");
        let rtx = &gpus[0];
        assert_eq!(rtx.name, "NVIDIA GeForce RTX 4070");
        assert_eq!(rtx.apis, ["Vulkan", "Dx12"]);
        assert_eq!(rtx.vram_total_bytes, Some(12_585_009_152));
        assert_eq!(rtx.driver_version.as_deref(), Some("32.0.15.6636"));
        let uhd = &gpus[1];
        assert_eq!(uhd.vendor, Vendor::Intel);
        assert_eq!(uhd.kind, GpuKind::Other, "128 MiB is no card of its own");
        assert_eq!(uhd.vram_total_bytes, Some(134_217_728));
        assert!(uhd.apis.is_empty());
    }

    #[test]
    fn what_nvml_measured_is_kept() {
        let (mut gpus, adapters) = gaming_pc();
        gpus[0].vram_total_bytes = Some(12_878_610_432);
        gpus[0].driver_version = Some("566.36".into());
        apply_dxgi(&mut gpus, &adapters);
        assert_eq!(gpus[0].vram_total_bytes, Some(12_878_610_432));
        assert_eq!(gpus[0].driver_version.as_deref(), Some("566.36"));
    }

    /// Run as a Windows program. Under Wine on Xvfb, DXGI answers with the adapter Wine
    /// makes up over its OpenGL renderer (here "NVIDIA GeForce GTX 470", its memory sized
    /// from the computer's, driver 8.21.13.9135): the calls and the reading of their answers
    /// are real, the card is not.
    #[cfg(windows)]
    #[test]
    fn on_windows_dxgi_lists_the_adapters_with_memory_and_driver() {
        let adapters = local_adapters().unwrap_or_else(|e| panic!("{e}"));
        let hardware: Vec<&DxgiAdapter> = adapters.iter().filter(|a| !a.software).collect();
        assert!(!hardware.is_empty(), "{adapters:?}");
        for adapter in hardware {
            assert!(
                !adapter.name.is_empty() && !adapter.name.contains('\0'),
                "{adapter:?}"
            );
            assert_ne!(adapter.vendor_id, 0, "{adapter:?}");
            assert!(adapter.dedicated_vram_bytes > 0, "{adapter:?}");
            let version = adapter.driver_version.as_deref().unwrap_or_default();
            assert_eq!(version.split('.').count(), 4, "{adapter:?}");
            assert!(
                version.split('.').all(|part| part.parse::<u16>().is_ok()),
                "{adapter:?}"
            );
        }
    }

    #[cfg(not(windows))]
    #[test]
    fn outside_windows_dxgi_is_not_available() {
        assert_eq!(local_adapters(), Err("DXGI is Windows' own".into()));
    }
}
