//! The capability benchmark on this machine's real backends (the CPU and lavapipe's wgpu here).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::sync::Mutex;

use hearth_inference::capability::{self, Progress};
use hearth_inference::{ComputeDevice, ModelStore};

/// The tests measure the machine: one at a time, so they do not halve each other's figures.
static MACHINE: Mutex<()> = Mutex::new(());

#[test]
fn measures_every_backend_reports_progress_and_says_what_fits() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let hardware = hearth_hardware::detect_local();
    let devices = capability::usable_devices();
    assert_eq!(devices.len(), 2, "the CPU and wgpu (lavapipe here)");
    let mut steps: Vec<Progress> = Vec::new();
    let report = capability::run(&ModelStore::from_env(), &hardware, &devices, &mut |p| {
        steps.push(p)
    })
    .unwrap();
    eprintln!("{}", capability::render(&report));

    assert!(steps.len() >= 3);
    assert!(steps.windows(2).all(|w| w[0].fraction <= w[1].fraction));
    assert_eq!(steps.last().unwrap().fraction, 1.0);

    let backends: Vec<&str> = report.backends.iter().map(|b| b.backend.as_str()).collect();
    assert_eq!(backends, ["cpu", "wgpu"]);
    for b in &report.backends {
        // Sanity bounds, not timings: far from the 2-core CPUs and lavapipe measured here
        // (about 200 and 16 GFLOP/s), but they catch a product that was never waited for.
        assert!(b.matmul_gflops > 1.0 && b.matmul_gflops < 2000.0, "{b:?}");
        assert!(
            b.bandwidth_gb_per_s > 0.1 && b.bandwidth_gb_per_s < 1e5,
            "{b:?}"
        );
        assert!(
            b.memory_bytes.unwrap() > 1 << 30,
            "RAM for the CPU and a software adapter"
        );
    }
    let ids: Vec<&str> = report.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(
        ids,
        [
            "all-minilm-l6-v2",
            "efficientnet-lite0",
            "smollm2-135m-instruct"
        ]
    );
    // This machine has gigabytes free: every model fits both backends.
    assert!(
        report.models.iter().all(|m| m.fits == ["cpu", "wgpu"]),
        "{:?}",
        report.models
    );
    assert_eq!(report.fingerprint, capability::fingerprint(&hardware));
}

#[test]
fn a_stored_result_is_reused_until_the_hardware_changes() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capability.json");
    let store = ModelStore::from_env();
    let mut hardware = hearth_hardware::detect_local();
    let cpu_only = [ComputeDevice::cpu()];
    let mut quiet = |_: Progress| {};

    let (first, measured) =
        capability::load_or_run(&path, &store, &hardware, &cpu_only, false, &mut quiet).unwrap();
    assert!(measured);
    let (again, measured) =
        capability::load_or_run(&path, &store, &hardware, &cpu_only, false, &mut quiet).unwrap();
    assert!(!measured, "same hardware: the stored result");
    // The same report (floats compared to the last digit JSON keeps).
    assert_eq!(
        (again.measured_at_unix, &again.fingerprint),
        (first.measured_at_unix, &first.fingerprint)
    );
    assert_eq!(again.models, first.models);
    for (a, b) in again.backends.iter().zip(&first.backends) {
        assert!((a.matmul_gflops - b.matmul_gflops).abs() <= 1e-9 * b.matmul_gflops);
    }

    hardware.cpu.model.push_str(" (upgraded)");
    let (_, measured) =
        capability::load_or_run(&path, &store, &hardware, &cpu_only, false, &mut quiet).unwrap();
    assert!(measured, "another CPU: measured again");

    std::fs::write(&path, b"{ not json").unwrap();
    let (_, measured) =
        capability::load_or_run(&path, &store, &hardware, &cpu_only, false, &mut quiet).unwrap();
    assert!(measured, "a corrupt file is measured again, not an error");
}
