//! Telemetry and GPU processes: fixture sysfs and /proc trees, a stand-in for NVML, and the
//! real sampler thread on this machine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::Path;
use std::time::{Duration, Instant};

use hearth_hardware::telemetry::GpuReadings;
use hearth_hardware::{GpuProcess, PlatformGpus, ProcessSource, Sampler, drm_processes};

mod support;

use support::{NoDriver, OneRtx4090, fixture};

#[test]
fn platform_readings_cover_amd_sysfs_and_nvml() {
    let mut gpus = PlatformGpus::new(fixture("amd-with-hwmon"), Box::new(OneRtx4090));
    let readings = gpus.read();
    assert_eq!(readings.len(), 2);
    let amd = &readings[0];
    assert_eq!(amd.id, "drm:card0");
    assert_eq!(amd.name, "AMD Radeon graphics (card0, 1002:747e)");
    assert_eq!(amd.utilisation_percent, Some(37.0));
    assert_eq!(amd.vram_used_bytes, Some(1_073_741_824));
    assert_eq!(amd.temperature_c, Some(61.0));
    assert_eq!(amd.power_w, Some(143.0));
    assert_eq!(amd.power_limit_w, Some(220.0));
    assert_eq!(amd.core_clock_mhz, Some(1800));
    assert_eq!(amd.fan_percent, Some(50.0), "pwm1 128 of 255");
    let nvidia = &readings[1];
    assert_eq!(nvidia.id, "nvml:0");
    assert_eq!(nvidia.power_w, Some(412.0));
    assert_eq!(nvidia.temperature_c, Some(71.0));
    assert_eq!(nvidia.memory_clock_mhz, Some(10501));

    // A card with files missing or garbled still gives a reading, empty where it must be.
    let mut sparse = PlatformGpus::new(fixture("missing-files"), Box::new(NoDriver));
    let readings = sparse.read();
    assert_eq!(readings.len(), 1, "card1 has no vendor file and is skipped");
    assert_eq!(readings[0].utilisation_percent, None);
    assert_eq!(
        readings[0].vram_total_bytes, None,
        "the fixture's VRAM file says \"garbage\""
    );
    assert_eq!(readings[0].power_w, None);
}

#[test]
fn the_sampler_streams_samples_into_its_history_and_stops_promptly() {
    let gpus = PlatformGpus::new(fixture("amd-with-hwmon"), Box::new(NoDriver));
    let sampler = Sampler::start(
        Box::new(gpus),
        hearth_hardware::CpuPower::estimated(65.0),
        Duration::from_millis(50),
    )
    .unwrap();
    let mut stream = sampler.subscribe();
    let mut samples = Vec::new();
    while samples.len() < 3 {
        samples.push(stream.blocking_recv().unwrap());
    }
    for s in &samples {
        assert!(
            (0.03..0.5).contains(&s.interval_s),
            "interval {}",
            s.interval_s
        );
        assert!(s.ram_total_bytes > 0 && s.ram_used_bytes <= s.ram_total_bytes);
        assert!(
            s.process_memory_bytes > 1 << 20,
            "our own RSS: {}",
            s.process_memory_bytes
        );
        // No RAPL here: the processor's power is 65 W × its use, and says it is estimated.
        assert!(s.cpu_power_estimated);
        assert!((s.cpu_power_w - 65.0 * s.cpu_percent / 100.0).abs() < 1e-3);
        assert!(s.logical_cores >= 1);
        let gpu = &s.gpus[0];
        assert_eq!(gpu.id, "drm:card0");
        assert!(!gpu.energy_estimated, "the fixture has a power sensor");
        let expected = 143.0 * s.interval_s / 3600.0;
        assert!((gpu.energy_wh.unwrap() - expected).abs() < 1e-9);
    }
    assert!(
        samples
            .windows(2)
            .all(|w| w[0].at_unix_ms <= w[1].at_unix_ms)
    );
    let history = sampler.history_since(0);
    assert!(history.len() >= 3);
    assert_eq!(history.last(), sampler.latest().as_ref());

    let started = Instant::now();
    drop(sampler);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "stopped in {:?}",
        started.elapsed()
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn link(target: &str, at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// A fake /proc: a game with its GPU client behind two descriptors and a file, Hearth itself,
/// an ordinary process, and a process whose fd folder cannot be read.
fn fake_proc(root: &Path) {
    let game = root.join("4242");
    write(&game.join("comm"), "Cyberpunk2077.e\n");
    link("/dev/dri/renderD128", &game.join("fd/5"));
    link("/dev/dri/renderD128", &game.join("fd/6"));
    link("/home/player/save.dat", &game.join("fd/7"));
    let info = "pos:\t0\nflags:\t02100002\ndrm-driver:\tamdgpu\ndrm-pdev:\t0000:03:00.0\n\
                drm-client-id:\t17\ndrm-engine-gfx:\t900000000 ns\ndrm-engine-compute:\t100000000 ns\n\
                drm-memory-vram:\t2097152 KiB\n";
    write(&game.join("fdinfo/5"), info);
    write(&game.join("fdinfo/6"), info);
    write(&game.join("fdinfo/7"), "pos:\t0\n");

    let hearth = root.join("1000");
    write(&hearth.join("comm"), "hearth\n");
    link("/dev/dri/renderD128", &hearth.join("fd/9"));
    write(
        &hearth.join("fdinfo/9"),
        "drm-driver:\tamdgpu\ndrm-pdev:\t0000:03:00.0\ndrm-client-id:\t3\ndrm-engine-gfx:\t5 ns\n",
    );

    let shell = root.join("77");
    write(&shell.join("comm"), "bash\n");
    link("/dev/pts/0", &shell.join("fd/0"));

    std::fs::create_dir_all(root.join("99")).unwrap(); // no fd folder
    write(&root.join("self"), ""); // not a pid
}

#[test]
fn drm_fdinfo_names_other_processes_on_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    fake_proc(dir.path());
    let found = drm_processes(dir.path(), 1000);
    assert_eq!(
        found,
        vec![GpuProcess {
            pid: 4242,
            name: "Cyberpunk2077.e".into(),
            gpu: "drm:0000:03:00.0".into(),
            vram_bytes: Some(2 << 30),
            engine_busy_ns: Some(1_000_000_000),
            source: ProcessSource::DrmFdinfo,
        }]
    );
    assert!(drm_processes(Path::new("/nonexistent"), 0).is_empty());
}

#[test]
fn real_proc_scan_and_sampler_run_on_this_machine() {
    // Whatever this machine has (often nothing on a CI box), the scan must finish and
    // never report us.
    let me = std::process::id();
    assert!(
        drm_processes(Path::new("/proc"), me)
            .iter()
            .all(|p| p.pid != me)
    );
    let gpus = PlatformGpus::new("/sys", Box::new(hearth_hardware::Nvml::default()));
    let sampler = Sampler::start(
        Box::new(gpus),
        hearth_hardware::CpuPower::new("/sys", 65.0),
        Duration::from_millis(20),
    )
    .unwrap();
    let sample = sampler.subscribe().blocking_recv().unwrap();
    assert!(sample.ram_total_bytes > 0);
    assert!((0.0..=100.0).contains(&sample.cpu_percent));
}
