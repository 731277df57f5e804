//! What the telemetry sampler costs: run it at its default 1 Hz on this machine's real
//! sources (sysfs, NVML when present, sysinfo) for 60 s and report the CPU time used, as a
//! share of one core.
//!
//!     cargo bench -p hearth-hardware --bench sampler_overhead
//!
//! `HEARTH_OVERHEAD_SECONDS` shortens or lengthens the run. The main thread only sleeps, so
//! the process's CPU time is the sampler's (the sum over /proc/self/task/*/schedstat, in
//! nanoseconds; /proc/self/schedstat alone would be the main thread's).

use std::time::{Duration, Instant};

use hearth_hardware::{Nvml, PlatformGpus, Sampler};

fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            std::fs::read_to_string(task.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!(
            "sampler_overhead: run with `cargo bench -p hearth-hardware --bench sampler_overhead`"
        );
        return;
    }
    let seconds: u64 = std::env::var("HEARTH_OVERHEAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let gpus = PlatformGpus::new("/sys", Box::new(Nvml::default()));
    let before_start = cpu_ns();
    let sampler = match Sampler::start(
        Box::new(gpus),
        hearth_hardware::CpuPower::new("/sys", hearth_hardware::TYPICAL_CPU_WATTS),
        Duration::from_secs(1),
    ) {
        Ok(sampler) => sampler,
        Err(error) => {
            eprintln!("cannot start the sampler: {error}");
            std::process::exit(1);
        }
    };
    let start_cost = cpu_ns() - before_start;
    // Measure from the first tick on, so the one-off set-up is reported apart.
    let mut stream = sampler.subscribe();
    let _ = stream.blocking_recv();
    let (t0, c0) = (Instant::now(), cpu_ns());
    std::thread::sleep(Duration::from_secs(seconds));
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), (cpu_ns() - c0) as f64 / 1e9);
    let samples = sampler.history_since(0).len();
    drop(sampler);
    println!(
        "sampler at 1 Hz for {wall:.1} s: {samples} samples, {:.2} ms CPU in all, {:.3} ms per sample, \
         {:.4}% of one core (start-up {:.1} ms)",
        cpu * 1e3,
        cpu * 1e3 / (samples.max(2) - 1) as f64,
        100.0 * cpu / wall,
        start_cost as f64 / 1e6
    );
}
