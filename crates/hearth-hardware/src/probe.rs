//! Asking the graphics drivers which adapters there are, in a child process.
//!
//! Enumerating wgpu adapters loads every installed Vulkan/GL driver into the process that
//! asks, and they stay mapped: Mesa's lavapipe brings LLVM (43 MiB resident here) into an app
//! that may never run a model on a GPU, and a broken driver that crashes while being asked
//! takes the asker with it. A long-running Hearth binary therefore calls
//! [`serve_probe_if_asked`] first thing in `main`; from then on [`wgpu_adapters`] runs
//! the same binary with [`PROBE_ARG`], reads the list as JSON and keeps it for the life of the
//! process. The drivers are loaded in-process only when a model actually runs on a GPU.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::gpu::{AdapterRecord, GpuKind};

/// The argument that makes a Hearth binary print its wgpu adapters as JSON and exit.
pub const PROBE_ARG: &str = "--probe-gpu-adapters";

/// Longest a probe may take (a hung driver must not hang Hearth).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Set by [`serve_probe_if_asked`]: this binary answers [`PROBE_ARG`].
static CAN_PROBE_IN_CHILD: AtomicBool = AtomicBool::new(false);

/// In a child started with [`PROBE_ARG`]: print the adapters as JSON and exit. Otherwise note
/// that this binary can probe in a child, and return. Call before anything else in `main`.
pub fn serve_probe_if_asked() {
    if std::env::args().nth(1).as_deref() == Some(PROBE_ARG) {
        let adapters = wgpu_adapters_here();
        match serde_json::to_string(&adapters) {
            Ok(json) => {
                println!("{json}");
                std::process::exit(0);
            }
            Err(error) => {
                eprintln!("cannot write the adapter list: {error}");
                std::process::exit(1);
            }
        }
    }
    CAN_PROBE_IN_CHILD.store(true, Ordering::SeqCst);
}

/// Every adapter wgpu finds, on every graphics API. Asked once per process, in a child
/// process where the binary serves probes (see this module).
pub fn wgpu_adapters() -> Vec<AdapterRecord> {
    adapters()
}

/// Ask wgpu in this process (loads the drivers here).
pub(crate) fn wgpu_adapters_here() -> Vec<AdapterRecord> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|adapter| {
            let info = adapter.get_info();
            AdapterRecord {
                kind: match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => GpuKind::Discrete,
                    wgpu::DeviceType::IntegratedGpu => GpuKind::Integrated,
                    wgpu::DeviceType::VirtualGpu => GpuKind::Virtual,
                    wgpu::DeviceType::Cpu => GpuKind::Software,
                    wgpu::DeviceType::Other => GpuKind::Other,
                },
                name: info.name,
                vendor_id: info.vendor,
                device_id: info.device,
                api: format!("{:?}", info.backend),
                driver: info.driver,
                driver_info: info.driver_info,
            }
        })
        .collect()
}

/// The adapters, probed once per process: in a child when the binary serves probes, else here.
fn adapters() -> Vec<AdapterRecord> {
    static ADAPTERS: OnceLock<Vec<AdapterRecord>> = OnceLock::new();
    ADAPTERS
        .get_or_init(|| {
            if !CAN_PROBE_IN_CHILD.load(Ordering::SeqCst) {
                return wgpu_adapters_here();
            }
            match probe_in_child() {
                Ok(adapters) => adapters,
                Err(ChildProbe::CannotStart(error)) => {
                    tracing::warn!(%error, "cannot start the GPU probe; asking the drivers here");
                    wgpu_adapters_here()
                }
                Err(ChildProbe::Failed(reason)) => {
                    // Asking again here could crash or hang Hearth the same way.
                    tracing::error!(%reason, "the GPU probe failed: a graphics driver may be broken; using no GPU");
                    Vec::new()
                }
            }
        })
        .clone()
}

enum ChildProbe {
    CannotStart(String),
    Failed(String),
}

fn probe_in_child() -> Result<Vec<AdapterRecord>, ChildProbe> {
    let exe = std::env::current_exe().map_err(|e| ChildProbe::CannotStart(e.to_string()))?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .arg(PROBE_ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ChildProbe::CannotStart(e.to_string()))?;
    // Read the output on threads so a chatty driver cannot fill a pipe and stall the child.
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ChildProbe::Failed(format!(
                    "no answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => return Err(ChildProbe::Failed(error.to_string())),
        }
    };
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    if !status.success() {
        let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        return Err(ChildProbe::Failed(format!("{status}: {tail}")));
    }
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('['))
        .unwrap_or("");
    let adapters: Vec<AdapterRecord> = serde_json::from_str(json)
        .map_err(|e| ChildProbe::Failed(format!("unreadable answer: {e}")))?;
    tracing::info!(
        adapters = adapters.len(),
        ms = started.elapsed().as_millis() as u64,
        "GPU adapters probed in a child process"
    );
    Ok(adapters)
}

/// Everything `pipe` gives until it closes, read on a thread of its own.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}
