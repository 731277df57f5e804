//! How fast a game stops Hearth, and what watching costs, measured over real processes.
//!
//!     cargo bench -p hearth-node --bench pause_latency
//!     cargo test --workspace --bench pause_latency -- --bench   (dev profile, deps optimised)
//!
//! Latency: 50 trials of exec'ing a program on the game list (a copy of `sleep` named
//! `Cyberpunk2077.exe`) until the node is paused, which is the moment the worker stops leasing
//! and gives back its job ("no new GPU work"). Targets: median <= 250 ms, p99 <= 1 s.
//! Overhead: the watcher alone at its default rate (4 Hz) for 20 s, with 300 extra idle
//! processes so the process table is the size of a desktop's, CPU time of its thread from
//! `/proc/self/task/*/schedstat`, as a share of one core. Target <= 0.3%.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_node::pause::watcher::{Watcher, WatcherConfig};
use hearth_node::{Node, pause::policy::PolicyConfig};

/// CPU time of every thread named `hearth-watcher` in this process, in nanoseconds.
fn watcher_cpu_ns() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "hearth-watcher" {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("pause_latency: run with `cargo bench -p hearth-node --bench pause_latency`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let game = dir.path().join("Cyberpunk2077.exe");
    std::fs::copy("/bin/sleep", &game).unwrap();
    let node = Node::new();
    let config = WatcherConfig {
        policy: PolicyConfig {
            cooldown: Duration::ZERO,
            ..PolicyConfig::default()
        },
        ..WatcherConfig::default()
    };
    // A desktop runs a few hundred processes; this machine fewer.
    let mut idle: Vec<_> = (0..300)
        .map(|_| {
            Command::new("/bin/sleep")
                .arg("120")
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let processes = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();

    // Overhead first, with nothing else happening.
    let watcher = Watcher::start(node.clone(), config.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, t0) = (watcher_cpu_ns(), Instant::now());
    std::thread::sleep(Duration::from_secs(20));
    let share = (watcher_cpu_ns() - cpu0) as f64 / t0.elapsed().as_nanos() as f64 * 100.0;
    drop(watcher);
    for child in &mut idle {
        let _ = child.kill();
        let _ = child.wait();
    }

    let watcher = Watcher::start(node.clone(), config).unwrap();
    let mut latencies = Vec::new();
    for trial in 0..50u64 {
        // Start at a different point of the watcher's cycle each time.
        std::thread::sleep(Duration::from_millis(300 + (trial * 37) % 250));
        let mut status = node.watch_status();
        let started = Instant::now();
        let mut child = Command::new(&game)
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        while !status.borrow_and_update().activity.is_paused() {
            assert!(started.elapsed() < Duration::from_secs(10), "never paused");
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(started.elapsed());
        child.kill().unwrap();
        child.wait().unwrap();
        while node.status().activity.is_paused() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(watcher);
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "pause latency over {} trials (exec -> node paused, watcher every 250 ms):",
        latencies.len()
    );
    println!(
        "  median {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms (targets: median <= 250, p99 <= 1000)",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]),
        ms(latencies[0]),
        ms(latencies[latencies.len() - 1])
    );
    println!(
        "watcher overhead (games at 4 Hz, GPU use at 1 Hz) with {processes} processes: {share:.3}% of one core (target <= 0.3%)"
    );
}
