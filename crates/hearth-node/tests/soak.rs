//! Soak: a real `hearth-node run` with its embedded demo pool works for a while, and its
//! resident memory, threads, open files and data folder are sampled every few seconds. After a
//! warm-up (models loaded) each must stay flat: threads and open files may not grow at all,
//! memory only within the databases' bounded caches, data only by what each job's records
//! need. The growth per hour, from a least-squares line through the samples, is reported.
//!
//! The test command runs a short soak (`HEARTH_SOAK_SECONDS`, 90 s by default); the hour-long
//! one is the same test in release with `HEARTH_SOAK_SECONDS=3600` (README, "Benchmarks").

#![cfg(target_os = "linux")] // reads the process's figures from /proc
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{NodeProcess, api_get};

/// One reading of the node process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    seconds: f64,
    rss_kib: f64,
    threads: f64,
    fds: f64,
    data_bytes: f64,
    jobs: f64,
}

/// A `/proc/<pid>/status` field's number ("VmRSS:   81234 kB" → 81234).
fn status_field(status: &str, name: &str) -> f64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Bytes under `dir`, every file.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_dir() => folder_bytes(&entry.path()),
                Ok(meta) => meta.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// The slope of `y` over `x` by least squares.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_node_stays_flat_in_memory_threads_files_and_data() {
    let seconds: u64 = std::env::var("HEARTH_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    let data = tempfile::tempdir().unwrap();
    // The embedded pool's demo customer sends a job every 1.5 s: the node works throughout.
    let node = NodeProcess::start(
        data.path(),
        &["--pool", "embedded", "--port", "0", "--backend", "cpu"],
    );
    let api = node.api();
    let http = reqwest::Client::new();
    let pid = node.child.id();
    let interval = Duration::from_secs(if seconds >= 600 { 30 } else { 3 });
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(interval).await;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        let overview = api_get(&http, &api, "/api/overview").await;
        let jobs = overview["earnings"]["today_jobs"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            rss_kib: status_field(&status, "VmRSS:"),
            threads: status_field(&status, "Threads:"),
            fds: fds as f64,
            data_bytes: folder_bytes(data.path()) as f64,
            jobs,
        };
        samples.push(sample);
    }
    assert!(node.stop().success(), "a clean stop after the soak");

    // The first third warms up: models load, caches fill, the first sled segments appear.
    let steady = &samples[samples.len() / 3..];
    let per_hour = |value: fn(&Sample) -> f64| {
        slope(
            &steady
                .iter()
                .map(|s| (s.seconds, value(s)))
                .collect::<Vec<_>>(),
        ) * 3600.0
    };
    let (first, last) = (steady[0], *steady.last().unwrap());
    let jobs_per_hour = per_hour(|s| s.jobs);
    let rss_mib_per_hour = per_hour(|s| s.rss_kib) / 1024.0;
    let data_mib_per_hour = per_hour(|s| s.data_bytes) / (1 << 20) as f64;
    let bytes_per_job = per_hour(|s| s.data_bytes) / jobs_per_hour.max(1.0);
    eprintln!(
        "soak: {seconds} s, {} samples; steady from {:.0} s: jobs {:.0}/h; RSS {:.1} → {:.1} MiB ({rss_mib_per_hour:+.2} MiB/h); threads {} → {} ({:+.1}/h); fds {} → {} ({:+.1}/h); data {:.2} → {:.2} MiB ({data_mib_per_hour:+.2} MiB/h, {bytes_per_job:.0} B/job)",
        samples.len(),
        first.seconds,
        jobs_per_hour,
        first.rss_kib / 1024.0,
        last.rss_kib / 1024.0,
        first.threads,
        last.threads,
        per_hour(|s| s.threads),
        first.fds,
        last.fds,
        per_hour(|s| s.fds),
        first.data_bytes / (1 << 20) as f64,
        last.data_bytes / (1 << 20) as f64,
    );
    assert!(
        jobs_per_hour > 1000.0,
        "the node worked throughout: {samples:?}"
    );
    // Threads and open files come back to where they were: no leak, whatever the run's length.
    let most = |value: fn(&Sample) -> f64| steady.iter().map(value).fold(f64::MIN, f64::max);
    assert!(
        most(|s| s.threads) <= first.threads + 4.0,
        "threads grow: {samples:?}"
    );
    assert!(
        most(|s| s.fds) <= first.fds + 8.0,
        "open files grow: {samples:?}"
    );
    // Memory: after the warm-up only the two databases' page caches (16 MiB each, bounded)
    // and the allocator's free lists may still fill; a leak of a job's worth per job would
    // pass that within the hour. The slope is reported; the hour-long run is the measure.
    let rss_growth_mib = (most(|s| s.rss_kib) - first.rss_kib) / 1024.0;
    assert!(
        rss_growth_mib < 48.0,
        "RSS grew {rss_growth_mib:.1} MiB after the warm-up: {samples:?}"
    );
    // Data grows only by what the jobs' records need (the ledger's and the embedded pool's,
    // in sled's log).
    assert!(
        bytes_per_job < 16384.0,
        "{bytes_per_job:.0} bytes a job: {samples:?}"
    );
}
