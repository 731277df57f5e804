//! The `hardware` command's readable table.

use std::fmt::Write;

use crate::HardwareReport;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const HEADER: &str = "GPU                                      KIND        VENDOR   VRAM       APIS           DRIVER";

/// The report as aligned text for a terminal.
pub fn render_table(report: &HardwareReport) -> String {
    let mut out = String::new();
    let gib =
        |bytes: Option<u64>| bytes.map_or("-".to_owned(), |b| format!("{:.1} GiB", b as f64 / GIB));
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{HEADER}");
    for gpu in &report.gpus {
        let driver = match &gpu.driver_version {
            Some(version) => format!("{} {}", gpu.driver, version),
            None => gpu.driver.clone(),
        };
        let _ = writeln!(
            out,
            "{:<40} {:<11} {:<8} {:<10} {:<14} {}",
            gpu.name,
            format!("{:?}", gpu.kind).to_lowercase(),
            format!("{:?}", gpu.vendor).to_lowercase(),
            gib(gpu.vram_total_bytes),
            gpu.apis.join(","),
            driver
        );
    }
    if report.gpus.is_empty() {
        let _ = writeln!(out, "(no GPU found)");
    }
    let _ = writeln!(out);
    let cores = match report.cpu.physical_cores {
        Some(physical) => format!("{physical} cores / {} threads", report.cpu.logical_cores),
        None => format!("{} threads", report.cpu.logical_cores),
    };
    let _ = writeln!(out, "CPU     {} ({cores})", report.cpu.model);
    let _ = writeln!(
        out,
        "Memory  {} total, {} available",
        gib(report.memory.total_bytes),
        gib(report.memory.available_bytes)
    );
    let _ = writeln!(out, "NVML    {}", report.nvml);
    // Only where there is one: elsewhere "not available" would be noise.
    if cfg!(windows) {
        let _ = writeln!(out, "DXGI    {}", report.dxgi);
    }
    out
}
