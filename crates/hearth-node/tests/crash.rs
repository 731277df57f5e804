//! Crash safety with real processes: the node is killed with SIGKILL 20 times at random
//! moments while customers keep the pool busy. After every kill the ledger on disk verifies;
//! after the restarts every receipt the pool issued is in the ledger exactly once, interrupted
//! jobs are marked, the pool ran them again, and no job is credited twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hearth_ledger::{JobStatus, Ledger};
use serde_json::json;
use support::{NodeProcess, ask, assert_ledger_holds_every_receipt};

const KILLS: usize = 20;

/// A small deterministic generator for kill times (xorshift), seeded per run and printed.
struct Xorshift(u64);

impl Xorshift {
    fn next_in(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_twenty_times_loses_no_receipt_and_pays_nothing_twice() {
    let pool_dir = tempfile::tempdir().unwrap();
    let pool = hearth_pool::embedded::start(
        pool_dir.path(),
        &hearth_inference::ModelStore::from_env(),
        None,
    )
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();

    // Customers: three at a time, mostly embeddings (short jobs), some chat (long jobs), so
    // kills land before, during and after jobs.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut customers = Vec::new();
    for c in 0..3u64 {
        let (url, key) = (pool.url(), pool.api_key().to_owned());
        let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
        customers.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                n += 3;
                let result = if n % 7 == 0 {
                    ask(&url, &key, "/v1/chat/completions", json!({
                        "model": "smollm2-135m-instruct", "max_tokens": 24, "temperature": 0,
                        "messages": [{"role": "user", "content": format!("Count to {}", n % 10)}]}))
                    .await
                } else {
                    ask(&url, &key, "/v1/embeddings", json!({
                        "model": "all-minilm-l6-v2",
                        "input": [format!("request {n}: the fire is warm"), "and the GPU is busy"]}))
                    .await
                };
                match result {
                    Ok(_) => answered.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        eprintln!("customer request failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed: {seed}");
    let mut random = Xorshift(seed);
    let args = ["--pool", &pool.url(), "--port", "0", "--backend", "cpu"];
    let started = Instant::now();
    let mut node_id = None;
    for kill in 0..KILLS {
        let node = NodeProcess::start(data.path(), &args);
        let node_id = node_id.get_or_insert_with(|| {
            let key = hearth_node::worker::load_or_create_identity(&data.path().join("node.key"))
                .unwrap();
            hearth_protocol::node_id(&key.public_key())
        });
        tokio::time::sleep(Duration::from_millis(random.next_in(300, 2500))).await;
        node.kill_hard();

        // The ledger on disk is whole after every kill: it opens, its chain verifies, and it
        // holds no receipt the pool did not issue.
        let ledger = Ledger::open(&data.path().join("ledger")).unwrap();
        let pool_key = pool.pool().state().pool_key.public_key();
        let report = ledger.verify_chain(&pool_key).unwrap();
        let issued = pool
            .pool()
            .state()
            .store
            .receipts_after(node_id, None, 100_000)
            .await
            .unwrap();
        assert!(
            report.receipts <= issued.len() as u64,
            "kill {kill}: ledger has {} receipts, pool issued {}",
            report.receipts,
            issued.len()
        );
        drop(ledger);
    }
    // One last start: the node collects what it missed, then stops cleanly.
    let node = NodeProcess::start(data.path(), &args);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for customer in customers {
        tokio::time::timeout(Duration::from_secs(120), customer)
            .await
            .expect("customers finish")
            .unwrap();
    }
    assert!(node.stop().success());
    eprintln!(
        "{KILLS} kills in {:.0?}; {} requests answered, {} failed",
        started.elapsed(),
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );

    let node_id = node_id.unwrap();
    let ledger = Ledger::open(&data.path().join("ledger")).unwrap();
    // Every receipt the pool issued is in the ledger, in order, and the credits agree.
    let issued =
        assert_ledger_holds_every_receipt(&pool, &ledger, &node_id, "after the kills").await;
    // Nothing paid twice: one receipt per job, at the pool and in the ledger.
    let paid_jobs: HashSet<&str> = issued
        .iter()
        .map(|r| r.receipt.payment.job_id.as_str())
        .collect();
    assert_eq!(paid_jobs.len(), issued.len(), "a job was paid twice");
    let jobs = ledger.jobs_between(0, u64::MAX, usize::MAX).unwrap();
    let credited: Vec<_> = jobs.iter().filter(|j| j.micro_credits > 0).collect();
    assert_eq!(credited.len(), issued.len());
    for job in &credited {
        assert_eq!(job.status, JobStatus::Completed);
        assert!(paid_jobs.contains(job.job_id.as_str()));
    }
    // Kills mid-job left interrupted jobs (or receipts collected late); the pool ran those
    // jobs again, so every customer request was answered. A job this node leased again is
    // one row, started again in place of the interrupted one.
    let interrupted = jobs
        .iter()
        .filter(|j| {
            j.status == JobStatus::Interrupted
                || j.note.as_deref() == Some("started again: Hearth had stopped while it ran")
        })
        .count();
    let late = jobs
        .iter()
        .filter(|j| j.note.as_deref() == Some("receipt collected from the pool after the job"))
        .count();
    eprintln!(
        "ledger: {} jobs, {} paid, {interrupted} interrupted, {late} receipts collected late",
        jobs.len(),
        credited.len()
    );
    assert!(
        interrupted + late > 0,
        "no kill landed mid-job in {KILLS} tries"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a customer request was lost"
    );
    assert!(answered.load(Ordering::Relaxed) > KILLS as u64);
}
