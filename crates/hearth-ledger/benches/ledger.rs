//! The ledger at scale: 1,000,000 jobs imported, then the operations the app does all day,
//! timed one by one: a job finished (record + receipt + hour totals, flushed), today's totals,
//! and the newest 50 jobs.
//!
//!     cargo bench -p hearth-ledger --bench ledger
//!
//! `HEARTH_LEDGER_JOBS` changes the size. The ledger lives in a temporary folder on the same
//! disk as the build.

use std::time::{Duration, Instant};

use hearth_ledger::{JobOutcome, JobRecord, JobStatus, Ledger};
use hearth_protocol::{KeyPair, Payment, Receipt, SignedReceipt};

const HOUR: u64 = 3_600_000;

fn percentile(times: &mut [Duration], p: f64) -> f64 {
    times.sort();
    times[((times.len() as f64 * p) as usize).min(times.len() - 1)].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("ledger: run with `cargo bench -p hearth-ledger --bench ledger`");
        return Ok(());
    }
    let jobs: u64 = std::env::var("HEARTH_LEDGER_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(dir.path())?;
    // A year of history, spread evenly.
    let now: u64 = 1_764_000_000_000;
    let start = now - 365 * 24 * HOUR;
    let step = (now - start) / jobs;
    let began = Instant::now();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(50_000) {
        let records: Vec<JobRecord> = chunk
            .iter()
            .map(|&i| JobRecord {
                job_id: format!("job-{i:08}"),
                model: [
                    "all-minilm-l6-v2",
                    "smollm2-135m-instruct",
                    "efficientnet-lite0",
                ][(i % 3) as usize]
                    .into(),
                task: ["embeddings", "chat", "image_classification"][(i % 3) as usize].into(),
                started_unix_ms: start + i * step,
                ended_unix_ms: Some(start + i * step + 800),
                status: if i % 50 == 0 {
                    JobStatus::Failed
                } else {
                    JobStatus::Completed
                },
                units: 120,
                micro_credits: 35,
                energy_wh: Some(0.02),
                energy_estimated: i % 2 == 0,
                receipt: None,
                note: None,
            })
            .collect();
        ledger.import_jobs(&records)?;
    }
    println!(
        "imported {jobs} jobs in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let pool = KeyPair::generate()?;
    let mut head: Option<SignedReceipt> = None;
    let (mut finish, mut today, mut recent) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..1000u64 {
        let id = format!("live-{i}");
        let at = now + i * 1000;
        ledger.start_job(&id, "all-minilm-l6-v2", "embeddings", at)?;
        let receipt = SignedReceipt::sign(
            Receipt {
                payment: Payment {
                    job_id: id.clone(),
                    node_id: "node".into(),
                    model: "all-minilm-l6-v2".into(),
                    units: 100,
                    unit: "input_tokens".into(),
                    micro_credits: 2,
                },
                issued_unix_ms: at,
                sequence: head.as_ref().map_or(0, |h| h.receipt.sequence + 1),
                prev_hash: head.as_ref().map_or_else(String::new, SignedReceipt::hash),
            },
            &pool,
        );
        head = Some(receipt.clone());
        let outcome = JobOutcome {
            status: JobStatus::Completed,
            ended_unix_ms: at + 500,
            energy_wh: Some(0.01),
            energy_estimated: true,
            receipt: Some(receipt),
            note: None,
        };
        let t = Instant::now();
        ledger.finish_job(&id, outcome, &pool.public_key())?;
        finish.push(t.elapsed());
        if i % 10 == 0 {
            let t = Instant::now();
            let totals = ledger.totals_between(now - now % (24 * HOUR), now + 24 * HOUR)?;
            today.push(t.elapsed());
            std::hint::black_box(totals);
            let t = Instant::now();
            let last = ledger.recent_jobs(50)?;
            recent.push(t.elapsed());
            assert_eq!(last.len(), 50);
        }
    }
    println!(
        "with {jobs} jobs: finish (record + receipt + totals, flushed) p50 {:.2} ms p99 {:.2} ms; \
         today's totals p50 {:.3} ms p99 {:.3} ms; newest 50 jobs p50 {:.3} ms p99 {:.3} ms",
        percentile(&mut finish.clone(), 0.5),
        percentile(&mut finish, 0.99),
        percentile(&mut today.clone(), 0.5),
        percentile(&mut today, 0.99),
        percentile(&mut recent.clone(), 0.5),
        percentile(&mut recent, 0.99)
    );

    // The History page: a page of 200 rows at the top, in the middle and at the end of the
    // whole ledger (the count is read on every page), a filtered page, and an id search.
    let rows = 200;
    let mut history = Vec::new();
    for offset in [0, jobs as usize / 2, jobs as usize - rows] {
        let t = Instant::now();
        let (total, page) = ledger.jobs_page(0, u64::MAX, offset, rows, None)?;
        history.push(format!(
            "offset {offset}: {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        ));
        assert_eq!(page.len(), rows);
        assert_eq!(total, jobs + 1000);
    }
    let failed = |r: &JobRecord| r.status == JobStatus::Failed;
    let t = Instant::now();
    let (total, _) = ledger.jobs_page(0, u64::MAX, 0, rows, Some(&failed))?;
    history.push(format!(
        "failed only ({total}): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    ));
    let t = Instant::now();
    let (found, _) = ledger.jobs_with_id_prefix("job-0042", 0, rows)?;
    history.push(format!(
        "id search ({found} found): {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    ));
    println!("history pages of {rows} rows: {}", history.join("; "));
    Ok(())
}
