//! The ledger on real sled files: the job lifecycle, receipts checked against the pool's key
//! and chain, durability across reopening, interrupted jobs, migration, exports, settings and
//! damaged records.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use hearth_ledger::{JobOutcome, JobRecord, JobStatus, Ledger, LedgerError, SCHEMA_VERSION};
use hearth_protocol::{KeyPair, Payment, Receipt, SignedReceipt};

const HOUR: u64 = 3_600_000;
const T0: u64 = 1_764_000_000_000; // 2025-11-24, an hour boundary plus change

/// The pool's side: signs a chain of receipts for one node.
struct Pool {
    key: KeyPair,
    head: Option<SignedReceipt>,
}

impl Pool {
    fn new() -> Self {
        Self {
            key: KeyPair::generate().unwrap(),
            head: None,
        }
    }

    fn receipt(&mut self, job_id: &str, units: u64, micro_credits: u64) -> SignedReceipt {
        let receipt = SignedReceipt::sign(
            Receipt {
                payment: Payment {
                    job_id: job_id.into(),
                    node_id: "node".into(),
                    model: "all-minilm-l6-v2".into(),
                    units,
                    unit: "input_tokens".into(),
                    micro_credits,
                },
                issued_unix_ms: T0,
                sequence: self.head.as_ref().map_or(0, |h| h.receipt.sequence + 1),
                prev_hash: self
                    .head
                    .as_ref()
                    .map_or_else(String::new, SignedReceipt::hash),
            },
            &self.key,
        );
        self.head = Some(receipt.clone());
        receipt
    }
}

fn completed(at: u64, receipt: SignedReceipt) -> JobOutcome {
    JobOutcome {
        status: JobStatus::Completed,
        ended_unix_ms: at,
        energy_wh: Some(0.5),
        energy_estimated: true,
        receipt: Some(receipt),
        note: None,
    }
}

#[test]
fn a_job_is_recorded_with_its_receipt_and_counted_in_its_hour() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut pool = Pool::new();
    for i in 0..5u64 {
        let id = format!("job-{i}");
        ledger
            .start_job(&id, "all-minilm-l6-v2", "embeddings", T0 + i * 1000)
            .unwrap();
        let receipt = pool.receipt(&id, 100 + i, 10 * (i + 1));
        let record = ledger
            .finish_job(
                &id,
                completed(T0 + i * 1000 + 500, receipt),
                &pool.key.public_key(),
            )
            .unwrap();
        assert_eq!(record.micro_credits, 10 * (i + 1));
        assert_eq!(record.units, 100 + i);
    }
    ledger
        .start_job(
            "job-late",
            "efficientnet-lite0",
            "image_classification",
            T0 + 2 * HOUR,
        )
        .unwrap();
    ledger
        .finish_job(
            "job-late",
            JobOutcome {
                status: JobStatus::Failed,
                ended_unix_ms: T0 + 2 * HOUR + 10,
                energy_wh: Some(0.25),
                energy_estimated: false,
                receipt: None,
                note: Some("bad image".into()),
            },
            &pool.key.public_key(),
        )
        .unwrap();

    let recent: Vec<String> = ledger
        .recent_jobs(3)
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(recent, ["job-late", "job-4", "job-3"]);
    assert_eq!(
        ledger.recent_jobs(3).unwrap()[1].micro_credits,
        50,
        "the finished state, from memory"
    );
    // Past the in-memory window the answer comes from disk.
    assert_eq!(ledger.recent_jobs(1000).unwrap().len(), 6);
    let first_hour = ledger.totals_between(T0, T0 + HOUR).unwrap();
    assert_eq!(first_hour.jobs_completed, 5);
    assert_eq!(first_hour.micro_credits, 150);
    assert!((first_hour.energy_wh - 2.5).abs() < 1e-9);
    assert!(first_hour.energy_estimated);
    let all = ledger.totals_between(T0, T0 + 3 * HOUR).unwrap();
    assert_eq!((all.jobs_completed, all.jobs_failed), (5, 1));
    assert_eq!(ledger.hourly(T0, T0 + 3 * HOUR).unwrap().len(), 2);
    assert_eq!(
        ledger.jobs_between(T0 + 1000, T0 + 3000, 10).unwrap().len(),
        2
    );
    let report = ledger.verify_chain(&pool.key.public_key()).unwrap();
    assert_eq!((report.receipts, report.micro_credits), (5, 150));
}

#[test]
fn forged_or_out_of_order_receipts_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut pool = Pool::new();
    ledger.start_job("a", "m", "embeddings", T0).unwrap();
    let first = pool.receipt("a", 1, 1);
    let skipped = pool.receipt("b", 1, 1);
    let third = pool.receipt("c", 1, 1);

    let mut forged = first.clone();
    forged.receipt.payment.micro_credits = 1_000_000;
    let err = ledger
        .finish_job("a", completed(T0 + 1, forged), &pool.key.public_key())
        .unwrap_err();
    assert!(matches!(err, LedgerError::BadReceipt { .. }), "{err}");
    let other_pool = KeyPair::generate().unwrap().public_key();
    assert!(
        ledger
            .finish_job("a", completed(T0 + 1, first.clone()), &other_pool)
            .is_err()
    );
    assert!(
        ledger
            .finish_job("a", completed(T0 + 1, third), &pool.key.public_key())
            .is_err()
    );
    assert_eq!(
        ledger.job("a").unwrap().unwrap().status,
        JobStatus::Running,
        "nothing written"
    );
    assert!(ledger.chain_head().unwrap().is_none());

    ledger
        .finish_job("a", completed(T0 + 1, first), &pool.key.public_key())
        .unwrap();
    drop(skipped);
    assert!(matches!(
        ledger.finish_job(
            "nope",
            completed(T0, pool.receipt("x", 1, 1)),
            &pool.key.public_key()
        ),
        Err(LedgerError::UnknownJob(_))
    ));
}

#[test]
fn everything_survives_reopening_and_running_jobs_become_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = Pool::new();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.start_job("done", "m", "chat", T0).unwrap();
        ledger
            .finish_job(
                "done",
                completed(T0 + 5, pool.receipt("done", 3, 6)),
                &pool.key.public_key(),
            )
            .unwrap();
        ledger.start_job("in-flight", "m", "chat", T0 + 10).unwrap();
        ledger
            .set_setting("electricity_price_per_kwh", &0.31f64)
            .unwrap();
        // Dropped without any shutdown step, as after a crash.
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.job("done").unwrap().unwrap().micro_credits, 6);
    let interrupted = ledger.job("in-flight").unwrap().unwrap();
    assert_eq!(interrupted.status, JobStatus::Interrupted);
    assert_eq!(
        ledger.setting::<f64>("electricity_price_per_kwh").unwrap(),
        Some(0.31)
    );
    assert_eq!(ledger.setting::<f64>("missing").unwrap(), None);
    assert_eq!(
        ledger
            .verify_chain(&pool.key.public_key())
            .unwrap()
            .receipts,
        1
    );
}

/// Opening again in place (as after a storage error) keeps every record and the running job
/// as it was (it is this process's own), and the ledger takes writes after it.
#[test]
fn reopening_in_place_keeps_everything_and_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = Pool::new();
    let ledger = std::sync::Arc::new(Ledger::open(dir.path()).unwrap());
    ledger.start_job("done", "m", "chat", T0).unwrap();
    ledger
        .finish_job(
            "done",
            completed(T0 + 5, pool.receipt("done", 3, 6)),
            &pool.key.public_key(),
        )
        .unwrap();
    ledger.start_job("running", "m", "chat", T0 + 10).unwrap();
    ledger.flush().unwrap();
    // A reader on another thread meanwhile sees the ledger or a clear "try again".
    let reader = {
        let ledger = std::sync::Arc::clone(&ledger);
        std::thread::spawn(move || {
            for _ in 0..200 {
                match ledger.job("done") {
                    Ok(job) => assert_eq!(job.unwrap().micro_credits, 6),
                    Err(LedgerError::Reopening) => {}
                    Err(other) => panic!("{other}"),
                }
            }
        })
    };
    ledger.reopen().unwrap();
    reader.join().unwrap();
    assert_eq!(
        ledger.job("running").unwrap().unwrap().status,
        JobStatus::Running
    );
    assert_eq!(ledger.recent_jobs(10).unwrap().len(), 2);
    ledger.probe_write().unwrap();
    ledger
        .finish_job(
            "running",
            completed(T0 + 20, pool.receipt("running", 1, 2)),
            &pool.key.public_key(),
        )
        .unwrap();
    assert_eq!(
        ledger
            .verify_chain(&pool.key.public_key())
            .unwrap()
            .micro_credits,
        8
    );
}

#[test]
fn late_receipts_complete_interrupted_pending_and_unseen_jobs_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = Pool::new();
    let pool_key = pool.key.public_key();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.start_job("crashed", "m", "chat", T0).unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(
        ledger.job("crashed").unwrap().unwrap().status,
        JobStatus::Interrupted
    );
    // Paid before the crash, collected after the restart.
    let record = ledger
        .record_late_receipt(pool.receipt("crashed", 10, 40), &pool_key)
        .unwrap();
    assert_eq!(
        (record.status, record.units, record.micro_credits),
        (JobStatus::Completed, 10, 40)
    );
    // Completed while waiting for verification (no receipt, no credits yet), then paid.
    ledger.start_job("checked", "m", "chat", T0 + 1).unwrap();
    ledger
        .finish_job(
            "checked",
            JobOutcome {
                receipt: None,
                ..completed(T0 + 2, pool.receipt("unused", 0, 0))
            },
            &pool_key,
        )
        .unwrap();
    // (the pool's chain skipped nothing: the "unused" receipt above was never issued)
    pool.head = ledger.chain_head().unwrap();
    ledger
        .record_late_receipt(pool.receipt("checked", 5, 7), &pool_key)
        .unwrap();
    // A job the ledger never saw start (killed between lease and the first write).
    ledger
        .record_late_receipt(pool.receipt("unseen", 2, 3), &pool_key)
        .unwrap();
    assert_eq!(ledger.job("unseen").unwrap().unwrap().micro_credits, 3);
    // The same receipt again is refused (it does not follow the head): nothing is paid twice.
    let again = pool.head.clone().unwrap();
    assert!(matches!(
        ledger.record_late_receipt(again, &pool_key),
        Err(LedgerError::BadReceipt { .. })
    ));
    let totals = ledger.totals_between(T0 - HOUR, T0 + HOUR).unwrap();
    assert_eq!(totals.jobs_completed, 3, "{totals:?}");
    assert_eq!(totals.micro_credits, 50);
    let report = ledger.verify_chain(&pool_key).unwrap();
    assert_eq!((report.receipts, report.micro_credits), (3, 50));
}

/// A job that Hearth stopped in the middle of, leased again by this node and completed, is
/// one row: completed, with its receipt, counted once (issue 21: it was two rows).
#[test]
fn a_job_started_again_after_an_interruption_is_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = Pool::new();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger
            .start_job("again", "all-minilm-l6-v2", "embeddings", T0)
            .unwrap();
        ledger
            .start_job("other", "all-minilm-l6-v2", "embeddings", T0 + 1)
            .unwrap();
        ledger.flush().unwrap();
    } // Hearth stops while both run.
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.job_count().unwrap(), 2);
    let restarted = ledger
        .start_job("again", "all-minilm-l6-v2", "embeddings", T0 + HOUR)
        .unwrap();
    assert_eq!(
        restarted.note.as_deref(),
        Some("started again: Hearth had stopped while it ran")
    );
    let receipt = pool.receipt("again", 10, 7);
    ledger
        .finish_job(
            "again",
            completed(T0 + HOUR + 5, receipt),
            &pool.key.public_key(),
        )
        .unwrap();

    assert_eq!(ledger.job_count().unwrap(), 2, "one row per job");
    let recent = ledger.recent_jobs(10).unwrap();
    let ids: Vec<(&str, JobStatus)> = recent
        .iter()
        .map(|j| (j.job_id.as_str(), j.status))
        .collect();
    assert_eq!(
        ids,
        [
            ("again", JobStatus::Completed),
            ("other", JobStatus::Interrupted)
        ]
    );
    let (total, page) = ledger.jobs_page(0, u64::MAX, 0, 10, None).unwrap();
    assert_eq!(total, 2);
    assert_eq!(page.len(), 2);
    assert_eq!(
        ledger.totals_between(0, u64::MAX).unwrap().jobs_completed,
        1
    );
    // And so after reopening, read from disk rather than memory.
    drop(ledger);
    let reopened = Ledger::open(dir.path()).unwrap();
    assert_eq!(reopened.job_count().unwrap(), 2);
    let again = reopened.job("again").unwrap().unwrap();
    assert_eq!(again.status, JobStatus::Completed);
    assert_eq!(
        again.note.as_deref(),
        Some("started again: Hearth had stopped while it ran"),
        "the history says it ran twice"
    );
    assert_eq!(again.micro_credits, 7);
}

#[test]
fn state_changes_are_kept_newest_first_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.record_activity(T0, &"paused: game").unwrap();
        ledger.record_activity(T0 + 5, &"running").unwrap();
        ledger.record_activity(T0 + 5, &"paused: user").unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    let changes: Vec<String> = ledger.recent_activity(10).unwrap();
    assert_eq!(changes, ["paused: user", "running", "paused: game"]);
    assert_eq!(
        ledger.recent_activity::<String>(1).unwrap(),
        ["paused: user"]
    );
}

#[test]
fn a_tampered_receipt_on_disk_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = Pool::new();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        for i in 0..3 {
            let id = format!("j{i}");
            ledger.start_job(&id, "m", "embeddings", T0 + i).unwrap();
            ledger
                .finish_job(
                    &id,
                    completed(T0 + i, pool.receipt(&id, 1, 5)),
                    &pool.key.public_key(),
                )
                .unwrap();
        }
    }
    {
        let db = hearth_sled::open(dir.path()).unwrap();
        let receipts = db.open_tree("receipts").unwrap();
        let key = 1u64.to_be_bytes();
        let mut receipt: SignedReceipt =
            serde_json::from_slice(&receipts.get(key).unwrap().unwrap()).unwrap();
        receipt.receipt.payment.micro_credits = 500;
        receipts
            .insert(key, serde_json::to_vec(&receipt).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    match ledger.verify_chain(&pool.key.public_key()) {
        Err(LedgerError::BadReceipt { sequence, .. }) => assert_eq!(sequence, 1),
        other => panic!("expected a bad receipt, got {other:?}"),
    }
}

#[test]
fn a_version_0_ledger_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = JobRecord {
        job_id: "old-job".into(),
        model: "all-minilm-l6-v2".into(),
        task: "embeddings".into(),
        started_unix_ms: T0,
        ended_unix_ms: Some(T0 + 100),
        status: JobStatus::Completed,
        units: 40,
        micro_credits: 7,
        energy_wh: Some(0.1),
        energy_estimated: false,
        receipt: None,
        note: None,
    };
    {
        let db = hearth_sled::open(dir.path()).unwrap();
        db.open_tree("jobs_v0")
            .unwrap()
            .insert("old-job", serde_json::to_vec(&old).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(ledger.job("old-job").unwrap(), Some(old));
    assert_eq!(
        ledger.totals_between(T0, T0 + HOUR).unwrap().micro_credits,
        7
    );
    drop(ledger);

    {
        let db = hearth_sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", b"99".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        Ledger::open(dir.path()),
        Err(LedgerError::TooNew { found: 99 })
    ));
}

#[test]
fn damaged_records_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.start_job("fine", "m", "chat", T0).unwrap();
    }
    {
        let db = hearth_sled::open(dir.path()).unwrap();
        let mut key = (T0 + 1).to_be_bytes().to_vec();
        key.extend(b"broken");
        db.open_tree("jobs")
            .unwrap()
            .insert(key, b"{not json".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    // The ledger still opens (the user is not locked out); the overview lists the good jobs,
    // and a full read (the export) reports the damage.
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(
        ledger.job("fine").unwrap().unwrap().status,
        JobStatus::Interrupted
    );
    let listed: Vec<String> = ledger
        .recent_jobs(10)
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(listed, ["fine"]);
    match ledger.export_csv(&mut Vec::new()) {
        Err(LedgerError::Corrupt { .. }) => {}
        other => panic!("expected a corrupt-record error, got {other:?}"),
    }
}

#[test]
fn jobs_export_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut pool = Pool::new();
    ledger
        .start_job("a", "all-minilm-l6-v2", "embeddings", T0)
        .unwrap();
    ledger
        .finish_job(
            "a",
            completed(T0 + 9, pool.receipt("a", 12, 3)),
            &pool.key.public_key(),
        )
        .unwrap();
    ledger
        .start_job("b,\"quoted\"", "m", "chat", T0 + 1)
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(ledger.export_csv(&mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("job_id,model,task,status"));
    assert_eq!(
        lines[1],
        "a,all-minilm-l6-v2,embeddings,completed,1764000000000,1764000000009,12,3,0.500000,true,0"
    );
    assert!(lines[2].starts_with("\"b,\"\"quoted\"\"\",m,chat,running,"));
}

#[test]
fn history_pages_come_newest_first_with_filters_counts_and_id_search() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut pool = Pool::new();
    // 30 jobs a minute apart; every third one fails, the rest complete.
    for i in 0..30u64 {
        let id = format!("job-{i:02}");
        let model = if i % 2 == 0 { "even" } else { "odd" };
        ledger
            .start_job(&id, model, "embeddings", T0 + i * 60_000)
            .unwrap();
        let outcome = if i % 3 == 0 {
            JobOutcome {
                status: JobStatus::Failed,
                ended_unix_ms: T0 + i * 60_000 + 5,
                energy_wh: None,
                energy_estimated: false,
                receipt: None,
                note: Some("broke".into()),
            }
        } else {
            completed(T0 + i * 60_000 + 5, pool.receipt(&id, 1, 1))
        };
        ledger
            .finish_job(&id, outcome, &pool.key.public_key())
            .unwrap();
    }
    let ids = |jobs: &[JobRecord]| jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>();

    let (total, page) = ledger.jobs_page(0, u64::MAX, 0, 3, None).unwrap();
    assert_eq!(total, 30);
    assert_eq!(ids(&page), ["job-29", "job-28", "job-27"]);
    let (_, page) = ledger.jobs_page(0, u64::MAX, 28, 5, None).unwrap();
    assert_eq!(ids(&page), ["job-01", "job-00"], "the last page is short");
    // The count, read once, follows new jobs.
    ledger
        .start_job("job-30", "odd", "chat", T0 + 30 * 60_000)
        .unwrap();
    let (total, page) = ledger.jobs_page(0, u64::MAX, 0, 1, None).unwrap();
    assert_eq!((total, ids(&page)), (31, vec!["job-30".to_owned()]));

    let failed = |r: &JobRecord| r.status == JobStatus::Failed;
    let (total, page) = ledger.jobs_page(0, u64::MAX, 1, 2, Some(&failed)).unwrap();
    assert_eq!(total, 10, "every third job failed");
    assert_eq!(ids(&page), ["job-24", "job-21"]);

    // A time range narrows by the key, before any record is read.
    let (total, page) = ledger
        .jobs_page(T0 + 10 * 60_000, T0 + 12 * 60_000, 0, 10, None)
        .unwrap();
    assert_eq!(
        (total, ids(&page)),
        (2, vec!["job-11".to_owned(), "job-10".to_owned()])
    );

    // Id search: counted in full, paged newest first.
    let (total, page) = ledger.jobs_with_id_prefix("job-1", 0, 3).unwrap();
    assert_eq!(
        (total, ids(&page)),
        (
            10,
            vec![
                "job-19".to_owned(),
                "job-18".to_owned(),
                "job-17".to_owned()
            ]
        )
    );
    let (total, page) = ledger.jobs_with_id_prefix("job-1", 9, 3).unwrap();
    assert_eq!((total, ids(&page)), (10, vec!["job-10".to_owned()]));
    let (_, page) = ledger.jobs_with_id_prefix("job-07", 0, 100).unwrap();
    assert_eq!(ids(&page), ["job-07"]);
    assert_eq!(ledger.jobs_with_id_prefix("nope", 0, 100).unwrap().0, 0);
}

#[test]
fn resource_use_is_kept_for_its_window_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let minute = 60_000;
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        for i in 0..5u64 {
            // Keep three minutes: each record forgets what is older than that.
            ledger
                .record_telemetry(
                    T0 + i * minute,
                    &serde_json::json!({ "cpu": i }),
                    3 * minute,
                )
                .unwrap();
        }
        ledger.flush().unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    let kept: Vec<(u64, serde_json::Value)> = ledger.telemetry_between(0, u64::MAX).unwrap();
    let cpus: Vec<u64> = kept
        .iter()
        .map(|(_, v)| v["cpu"].as_u64().unwrap())
        .collect();
    assert_eq!(
        cpus,
        vec![1, 2, 3, 4],
        "minute 0 is older than three minutes before minute 4"
    );
    assert_eq!(kept[0].0, T0 + minute);
    let window: Vec<(u64, serde_json::Value)> = ledger
        .telemetry_between(T0 + 2 * minute, T0 + 4 * minute)
        .unwrap();
    assert_eq!(window.len(), 2, "from is inclusive, to exclusive");
}

/// sled opens a log whose end the disk damaged by dropping everything from the damage on,
/// silently. The chain mark beside the database finds it: the receipts missing from the end
/// are counted, they come back as late receipts, and then nothing is missing.
#[test]
fn receipts_lost_from_a_damaged_log_tail_are_found_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = Pool::new();
    let mut issued = Vec::new();
    {
        let ledger = Ledger::open(dir.path()).unwrap();
        for i in 0..3 {
            let id = format!("job-number-{i}");
            ledger.start_job(&id, "m", "embeddings", T0 + i).unwrap();
            let receipt = pool.receipt(&id, 1, 5);
            issued.push(receipt.clone());
            ledger
                .finish_job(&id, completed(T0 + i, receipt), &pool.key.public_key())
                .unwrap();
        }
        assert_eq!(ledger.lost_receipts().unwrap(), None, "all there");
    }
    // One bit flipped in the newest job's last record in the log, as a failing disk does.
    let db = dir.path().join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let needle = b"job-number-2";
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&db, &bytes).unwrap();

    let ledger = Ledger::open(dir.path()).unwrap();
    // sled opened it without a word, one receipt short.
    assert_eq!(
        ledger.chain_head().unwrap().map(|h| h.receipt.sequence),
        Some(1)
    );
    let lost = ledger.lost_receipts().unwrap().expect("the loss is found");
    assert_eq!((lost.held_through, lost.holds_through), (2, Some(1)));
    assert_eq!(lost.count(), 1);
    // The pool hands it out again; the chain reaches the mark and nothing is missing.
    let key = pool.key.public_key();
    let record = ledger.record_late_receipt(issued[2].clone(), &key).unwrap();
    assert_eq!(
        (record.job_id.as_str(), record.status),
        ("job-number-2", JobStatus::Completed)
    );
    assert_eq!(ledger.lost_receipts().unwrap(), None);
    let report = ledger.verify_chain(&key).unwrap();
    assert_eq!((report.receipts, report.micro_credits), (3, 15));
    drop(ledger);
    assert_eq!(
        Ledger::open(dir.path()).unwrap().lost_receipts().unwrap(),
        None
    );
}

/// The mark never runs ahead of what is durable, and one that lags (a kill between the
/// database's flush and the mark) reports nothing missing; a ledger with no mark (written
/// before marks existed) reports nothing either.
#[test]
fn a_lagging_or_absent_chain_mark_reports_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut pool = Pool::new();
    let ledger = Ledger::open(dir.path()).unwrap();
    let key = pool.key.public_key();
    ledger.start_job("a", "m", "embeddings", T0).unwrap();
    ledger
        .finish_job("a", completed(T0, pool.receipt("a", 1, 5)), &key)
        .unwrap();
    let mark_file = dir.path().join(hearth_ledger::CHAIN_MARK_FILE);
    let first_mark = std::fs::read(&mark_file).unwrap();
    ledger.start_job("b", "m", "embeddings", T0 + 1).unwrap();
    ledger
        .finish_job("b", completed(T0 + 1, pool.receipt("b", 1, 5)), &key)
        .unwrap();
    let mark: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mark_file).unwrap()).unwrap();
    assert_eq!(mark["sequence"], 1);
    drop(ledger);
    std::fs::write(&mark_file, first_mark).unwrap();
    let lost = || Ledger::open(dir.path()).unwrap().lost_receipts().unwrap();
    assert_eq!(lost(), None, "a lagging mark");
    std::fs::remove_file(&mark_file).unwrap();
    assert_eq!(lost(), None, "no mark");
    // A mark in the first form (it named the receipt's hash too) still reads.
    std::fs::write(&mark_file, r#"{"sequence":2,"hash":"ab12"}"#).unwrap();
    assert_eq!(
        lost().map(|lost| lost.count()),
        Some(1),
        "receipt 2 was marked, the chain ends at 1"
    );
}
