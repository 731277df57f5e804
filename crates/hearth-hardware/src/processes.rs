//! Which processes have work on a GPU, for the pause policy ("another program is using the
//! GPU"): NVML's running compute and graphics processes on NVIDIA, and on Linux the DRM fdinfo
//! of every open `/dev/dri` file (`drm-engine-*` busy time, `drm-memory-*`), which the amdgpu,
//! i915, xe, msm, panfrost and other drivers publish.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// Where a process entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessSource {
    /// NVML's running compute processes (CUDA, OpenCL): real GPU work.
    NvmlCompute,
    /// NVML's running graphics processes (anything with a GL/Vulkan context, the desktop too).
    NvmlGraphics,
    DrmFdinfo,
}

/// A process with a GPU open or in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    /// Short name (`/proc/<pid>/comm`), empty when it could not be read.
    pub name: String,
    /// Which GPU: `nvml:<index>` or `drm:<PCI address or driver>`.
    pub gpu: String,
    /// GPU memory the process holds, where reported.
    pub vram_bytes: Option<u64>,
    /// Total busy time over all engines since the process opened the GPU (DRM only): two
    /// readings apart tell whether it is actually doing work.
    pub engine_busy_ns: Option<u64>,
    pub source: ProcessSource,
}

/// A process's short name: `/proc/<pid>/comm` on Linux, the program's file name
/// (`eldenring.exe`) on Windows; empty when it cannot be read.
#[cfg(not(windows))]
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(windows)]
#[allow(unsafe_code)]
pub fn process_name(pid: u32) -> String {
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION,
        QueryFullProcessImageNameW,
    };
    // SAFETY: asks for a handle with the least right there is; checked before use.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return String::new();
    }
    let mut path = [0u16; 1024];
    let mut length = path.len() as u32;
    // SAFETY: the buffer and its length in characters; the handle is live until closed below.
    let ok = unsafe {
        QueryFullProcessImageNameW(process, PROCESS_NAME_WIN32, path.as_mut_ptr(), &mut length)
    };
    // SAFETY: the handle opened above, closed once.
    unsafe { CloseHandle(process) };
    if ok == 0 {
        return String::new();
    }
    let path = String::from_utf16_lossy(&path[..length as usize]);
    path.rsplit(['\\', '/'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Every process under `procfs` (normally `/proc`) with a DRM device open, one entry per
/// process and GPU, `exclude_pid` (Hearth itself) left out. Processes that vanish or cannot be
/// read (another user's, without privileges) are skipped.
pub fn drm_processes(procfs: &Path, exclude_pid: u32) -> Vec<GpuProcess> {
    let Ok(entries) = std::fs::read_dir(procfs) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == exclude_pid {
            continue;
        }
        found.extend(process_drm_clients(&entry.path(), pid));
    }
    found.sort_by(|a, b| (a.pid, &a.gpu).cmp(&(b.pid, &b.gpu)));
    found
}

/// The DRM clients of one process (`procfs/<pid>`), one entry per GPU; empty when it has no
/// GPU open, has gone, or cannot be read.
pub fn drm_process(procfs: &Path, pid: u32) -> Vec<GpuProcess> {
    process_drm_clients(&procfs.join(pid.to_string()), pid)
}

/// One DRM client (an open device, possibly behind several file descriptors).
#[derive(Default)]
struct Client {
    busy_ns: u64,
    vram_bytes: Option<u64>,
}

fn process_drm_clients(process_dir: &Path, pid: u32) -> Vec<GpuProcess> {
    let Ok(fds) = std::fs::read_dir(process_dir.join("fd")) else {
        return Vec::new();
    };
    // Clients by (gpu, client id): duplicated descriptors of one client are counted once.
    let mut clients: BTreeMap<(String, String), Client> = BTreeMap::new();
    for fd in fds.filter_map(Result::ok) {
        // Only descriptors of DRM devices: a readlink is far cheaper than reading fdinfo.
        let is_drm = std::fs::read_link(fd.path())
            .map(|target| target.starts_with("/dev/dri"))
            .unwrap_or(false);
        if !is_drm {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(process_dir.join("fdinfo").join(fd.file_name()))
        else {
            continue;
        };
        let mut driver = None;
        let mut pdev = None;
        let mut client_id = None;
        let mut busy_ns = 0u64;
        let mut vram = None;
        for line in info.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "drm-driver" => driver = Some(value.to_owned()),
                "drm-pdev" => pdev = Some(value.to_owned()),
                "drm-client-id" => client_id = Some(value.to_owned()),
                k if k.starts_with("drm-engine-") && !k.starts_with("drm-engine-capacity") => {
                    if let Some(ns) = value
                        .strip_suffix("ns")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                    {
                        busy_ns = busy_ns.saturating_add(ns);
                    }
                }
                k if k == "drm-memory-vram" || k.starts_with("drm-resident-vram") => {
                    if let Some(bytes) = parse_size(value) {
                        vram = Some(vram.unwrap_or(0u64).saturating_add(bytes));
                    }
                }
                _ => {}
            }
        }
        let Some(driver) = driver else {
            continue;
        };
        let gpu = format!("drm:{}", pdev.unwrap_or(driver));
        let key = (
            gpu,
            client_id.unwrap_or_else(|| fd.file_name().to_string_lossy().into_owned()),
        );
        let client = clients.entry(key).or_default();
        client.busy_ns = client.busy_ns.max(busy_ns);
        client.vram_bytes = match (client.vram_bytes, vram) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    // One entry per GPU: the process's clients on it summed.
    let mut per_gpu: BTreeMap<String, Client> = BTreeMap::new();
    for ((gpu, _), client) in clients {
        let total = per_gpu.entry(gpu).or_default();
        total.busy_ns = total.busy_ns.saturating_add(client.busy_ns);
        total.vram_bytes = match (total.vram_bytes, client.vram_bytes) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
    }
    let name = std::fs::read_to_string(process_dir.join("comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    per_gpu
        .into_iter()
        .map(|(gpu, client)| GpuProcess {
            pid,
            name: name.clone(),
            gpu,
            vram_bytes: client.vram_bytes,
            engine_busy_ns: Some(client.busy_ns),
            source: ProcessSource::DrmFdinfo,
        })
        .collect()
}

/// `123456 KiB`, `12 MiB`, `4096` (bytes) → bytes.
fn parse_size(value: &str) -> Option<u64> {
    let mut parts = value.split_whitespace();
    let number: u64 = parts.next()?.parse().ok()?;
    let unit = match parts.next() {
        None => 1,
        Some("KiB") => 1 << 10,
        Some("MiB") => 1 << 20,
        Some("GiB") => 1 << 30,
        Some(_) => return None,
    };
    number.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run as a Windows program: a process's name is its program's file name.
    #[cfg(windows)]
    #[test]
    fn on_windows_a_process_is_named_by_its_program_file() {
        let name = process_name(std::process::id());
        assert!(
            name.starts_with("hearth_hardware-") && name.ends_with(".exe"),
            "{name}"
        );
        assert_eq!(process_name(u32::MAX - 1), "", "no such process");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2 KiB"), Some(2048));
        assert_eq!(parse_size("3 MiB"), Some(3 << 20));
        assert_eq!(parse_size("1 parsec"), None);
        assert_eq!(parse_size("lots"), None);
    }
}
