//! The pool's store on both backends: sled in a folder, and a real PostgreSQL server (the
//! README's test command starts one and sets `HEARTH_TEST_DATABASE_URL`). Chains stay
//! unbroken under concurrent payments, also from two processes' worth of connections on one
//! database; a job is paid to a node once; balances equal their receipts; customers are
//! charged with the receipts, exactly once; migrations run once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use hearth_pool::store::ReceiptWriter;
use hearth_pool::{Payment, PgStore, PoolStore, SledStore, StoreError, UsageCharge, audit_chains};
use hearth_protocol::KeyPair;

async fn postgres() -> Arc<dyn PoolStore> {
    let store = PgStore::connect(&support::scratch_database().await, 8)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

fn payment(job: usize, node: &str, credits: u64) -> Payment {
    Payment {
        job_id: format!("job-{job}"),
        node_id: node.into(),
        model: "m".into(),
        units: credits,
        unit: "images".into(),
        micro_credits: credits,
    }
}

fn charge(key: &str, units: u64, credits: u64) -> UsageCharge {
    UsageCharge {
        key_id: key.into(),
        model: "m".into(),
        units,
        micro_credits: credits,
    }
}

/// Usage as (key, jobs, units, micro-credits).
async fn usage(store: &dyn PoolStore) -> Vec<(String, u64, u64, u64)> {
    let mut usage: Vec<_> = store
        .usage()
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _, u)| (key, u.jobs, u.units, u.charged_micro_credits))
        .collect();
    usage.sort();
    usage
}

/// 300 jobs paid from 300 tasks through `writers` in turn (every fifth pays a second node, as
/// a verified job does), each charged to one of two customers: each node's chain verifies,
/// balances are the sums, each customer's usage the sum of its charges.
async fn pay_concurrently(store: &dyn PoolStore, writers: &[Arc<ReceiptWriter>], key: &KeyPair) {
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let writer = Arc::clone(&writers[i % writers.len()]);
            tokio::spawn(async move {
                let nodes = ["a", "b", "c"];
                let mut payments = vec![payment(i, nodes[i % 3], 1 + i as u64)];
                if i % 5 == 0 {
                    payments.push(payment(i, nodes[(i + 1) % 3], 1));
                }
                let customer = format!("key-{}", i % 2);
                let receipts = writer
                    .issue(payments.clone(), Some(charge(&customer, 1, 2 + i as u64)))
                    .await
                    .unwrap();
                assert_eq!(receipts.len(), payments.len());
                for (r, p) in receipts.iter().zip(&payments) {
                    assert_eq!(
                        (&r.receipt.payment.job_id, &r.receipt.payment.node_id),
                        (&p.job_id, &p.node_id)
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        audit_chains(store, &key.public_key()).await.unwrap(),
        300 + 60
    );
    let total: u64 = store.balances().await.unwrap().iter().map(|(_, b)| b).sum();
    let paid: u64 = (0..300u64).map(|i| 1 + i).sum::<u64>() + 60;
    assert_eq!(total, paid);
    let charged = |parity: u64| (0..300u64).filter(|i| i % 2 == parity).map(|i| 2 + i).sum();
    assert_eq!(
        usage(store).await,
        vec![
            ("key-0".to_owned(), 150, 150, charged(0)),
            ("key-1".to_owned(), 150, 150, charged(1)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_chains_stay_unbroken_under_concurrent_payments_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool");
    let key = KeyPair::generate().unwrap();
    {
        let store: Arc<dyn PoolStore> = Arc::new(SledStore::open(&path).unwrap());
        let writer = ReceiptWriter::start(
            Arc::clone(&store),
            KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap(),
        );
        let writer = Arc::new(writer);
        pay_concurrently(store.as_ref(), &[Arc::clone(&writer)], &key).await;
        Arc::into_inner(writer).unwrap().close().await;
    }
    let store = SledStore::open(&path).unwrap();
    assert_eq!(audit_chains(&store, &key.public_key()).await.unwrap(), 360);
}

/// Stores of the two older layouts (indexes and heads holding whole receipts, or the
/// receipt's key; balances in a tree of their own) read as before once opened, and their
/// chains and balances go on.
#[tokio::test]
async fn sled_reads_and_converts_stores_of_older_layouts() {
    for whole in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool");
        let key = KeyPair::generate().unwrap();
        let first = {
            let store = SledStore::open(&path).unwrap();
            let receipts = store
                .append_receipts(
                    &[payment(1, "node-a", 5), payment(2, "node-a", 7)],
                    &[],
                    &key,
                )
                .await
                .unwrap();
            store.sync().await.unwrap();
            receipts
        };
        {
            // Rewrite the indexes, heads and balances as the older layouts had them.
            let db = hearth_sled::open(&path).unwrap();
            let (by_job, heads, balances) = (
                db.open_tree("receipts_by_job").unwrap(),
                db.open_tree("chain_heads").unwrap(),
                db.open_tree("balances").unwrap(),
            );
            for receipt in &first {
                let mut node_key = b"node-a/".to_vec();
                node_key.extend(receipt.receipt.sequence.to_be_bytes());
                let entry = if whole {
                    serde_json::to_vec(receipt).unwrap()
                } else {
                    node_key
                };
                by_job
                    .insert(
                        format!("{}/node-a", receipt.receipt.payment.job_id),
                        entry.clone(),
                    )
                    .unwrap();
                heads.insert("node-a", entry).unwrap();
            }
            balances.insert("node-a", &12u64.to_be_bytes()).unwrap();
            db.remove("receipt_layout").unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(&path).unwrap();
        assert_eq!(
            store.receipt_for_job("job-1", "node-a").await.unwrap(),
            Some(first[0].clone())
        );
        assert_eq!(
            store.chain_head("node-a").await.unwrap(),
            Some(first[1].clone())
        );
        assert_eq!(
            store.balances().await.unwrap(),
            vec![("node-a".to_owned(), 12)]
        );
        let next = store
            .append_receipts(&[payment(3, "node-a", 1)], &[], &key)
            .await
            .unwrap();
        assert_eq!(next[0].receipt.sequence, first[1].receipt.sequence + 1);
        assert_eq!(next[0].receipt.prev_hash, first[1].hash());
        assert_eq!(audit_chains(&store, &key.public_key()).await.unwrap(), 3);
        assert_eq!(
            store.balances().await.unwrap(),
            vec![("node-a".to_owned(), 13)]
        );
        // Paid once, whichever layout recorded it.
        assert!(matches!(
            store
                .append_receipts(&[payment(1, "node-a", 5)], &[], &key)
                .await,
            Err(StoreError::Conflict(_))
        ));
    }
}

/// A batch cut short by a crash: its receipt and job index entry reached the disk, its
/// node's head did not (sled recovers a prefix of the writes, heads go last). The receipt was
/// never synced, so never given to anyone: it is not counted, not listed, does not make its job
/// "paid", and the next payment takes its place in the chain.
#[tokio::test]
async fn sled_ignores_and_writes_over_the_remains_of_an_unsynced_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool");
    let key = KeyPair::generate().unwrap();
    let committed = {
        let store = SledStore::open(&path).unwrap();
        let receipts = store
            .append_receipts(&[payment(1, "node-a", 5)], &[], &key)
            .await
            .unwrap();
        store.sync().await.unwrap();
        receipts
    };
    {
        // What the crashed batch left: receipt 1 for job 9, and its index entry.
        let lost = {
            let other = SledStore::open(&dir.path().join("scratch")).unwrap();
            let mut receipts = other
                .append_receipts(
                    &[payment(0, "node-a", 0), payment(9, "node-a", 50)],
                    &[],
                    &key,
                )
                .await
                .unwrap();
            receipts.pop().unwrap()
        };
        let db = hearth_sled::open(&path).unwrap();
        let mut node_key = b"node-a/".to_vec();
        node_key.extend(1u64.to_be_bytes());
        db.open_tree("receipts_by_node")
            .unwrap()
            .insert(node_key.clone(), serde_json::to_vec(&lost).unwrap())
            .unwrap();
        db.open_tree("receipts_by_job")
            .unwrap()
            .insert("job-9/node-a", node_key)
            .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    assert_eq!(
        store.receipt_for_job("job-9", "node-a").await.unwrap(),
        None
    );
    assert_eq!(
        store.chain_head("node-a").await.unwrap(),
        Some(committed[0].clone())
    );
    assert_eq!(
        store.receipts_after("node-a", None, 10).await.unwrap(),
        committed
    );
    assert_eq!(
        store.balances().await.unwrap(),
        vec![("node-a".to_owned(), 5)]
    );
    // The next payment is receipt 1, over the remains; job 9 can still be paid, once.
    let next = store
        .append_receipts(&[payment(2, "node-a", 7)], &[], &key)
        .await
        .unwrap();
    assert_eq!(next[0].receipt.sequence, 1);
    assert_eq!(
        store.receipt_for_job("job-9", "node-a").await.unwrap(),
        None
    );
    let nine = store
        .append_receipts(&[payment(9, "node-a", 50)], &[], &key)
        .await
        .unwrap();
    assert_eq!(nine[0].receipt.sequence, 2);
    assert_eq!(
        store.receipt_for_job("job-9", "node-a").await.unwrap(),
        Some(nine[0].clone())
    );
    assert_eq!(audit_chains(&store, &key.public_key()).await.unwrap(), 3);
    assert_eq!(
        store.balances().await.unwrap(),
        vec![("node-a".to_owned(), 62)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_chains_stay_unbroken_when_two_processes_pay_the_same_nodes_at_once() {
    let url = support::scratch_database().await;
    let key = KeyPair::generate().unwrap();
    // Two stores with their own connections and writers: two pool processes' worth.
    let mut writers = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn PoolStore> = Arc::new(PgStore::connect(&url, 4).await.unwrap());
        stores.push(Arc::clone(&store));
        writers.push(Arc::new(ReceiptWriter::start(
            store,
            KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap(),
        )));
    }
    // The first to start migrates; the second finds it done.
    let migrated = PgStore::connect(&url, 1).await.unwrap();
    migrated.migrate().await.unwrap();
    pay_concurrently(stores[0].as_ref(), &writers, &key).await;
    // The other process reads the same books.
    assert_eq!(
        audit_chains(stores[1].as_ref(), &key.public_key())
            .await
            .unwrap(),
        360
    );
}

/// A second receipt for one job and node is refused by the store itself, and leaves the
/// chain and balance as they were; in a batch, only the duplicate fails.
async fn a_job_is_paid_to_a_node_once(store: Arc<dyn PoolStore>) {
    let key = KeyPair::generate().unwrap();
    let first = store
        .append_receipts(&[payment(1, "n", 40)], &[charge("k", 4, 44)], &key)
        .await
        .unwrap();
    let again = store
        .append_receipts(&[payment(1, "n", 40)], &[charge("k", 4, 44)], &key)
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // Nor twice within one batch.
    let twice = store
        .append_receipts(&[payment(7, "n", 1), payment(7, "n", 1)], &[], &key)
        .await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    assert_eq!(store.balances().await.unwrap(), vec![("n".to_owned(), 40)]);
    // The refused payment charged nobody.
    assert_eq!(
        usage(store.as_ref()).await,
        vec![("k".to_owned(), 1, 4, 44)]
    );
    assert_eq!(
        store.chain_head("n").await.unwrap(),
        first.into_iter().next()
    );

    let writer = Arc::new(ReceiptWriter::start(
        Arc::clone(&store),
        KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap(),
    ));
    let tasks: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|job| {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move {
                writer
                    .issue(vec![payment(job, "n", 5)], Some(charge("k", 1, 6)))
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().is_ok());
    }
    assert_eq!(outcomes, [false, true, true]);
    assert_eq!(store.balances().await.unwrap(), vec![("n".to_owned(), 50)]);
    assert_eq!(
        usage(store.as_ref()).await,
        vec![("k".to_owned(), 3, 6, 56)]
    );
    assert_eq!(
        audit_chains(store.as_ref(), &key.public_key())
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn sled_pays_a_job_to_a_node_once() {
    let dir = tempfile::tempdir().unwrap();
    a_job_is_paid_to_a_node_once(Arc::new(SledStore::open(&dir.path().join("p")).unwrap())).await;
}

#[tokio::test]
async fn postgres_pays_a_job_to_a_node_once() {
    a_job_is_paid_to_a_node_once(postgres().await).await;
}

/// Records, keys, usage and the pool key read back as written.
async fn round_trips(store: Arc<dyn PoolStore>) {
    let record = hearth_pool::NodeRecord {
        strikes: 2,
        quarantined: Some("lied".into()),
        ..Default::default()
    };
    store.put_node_record("n", &record, true).await.unwrap();
    assert_eq!(store.node_record("n").await.unwrap(), Some(record.clone()));
    assert_eq!(store.node_record("m").await.unwrap(), None);
    assert_eq!(
        store.node_records().await.unwrap(),
        vec![("n".to_owned(), record)]
    );

    let issued = hearth_pool::accounts::add_key(
        store.as_ref(),
        &hearth_pool::accounts::NewKey {
            name: "acme".into(),
            requests_per_minute: 10,
            max_concurrent: 2,
            quota_micro_credits: Some(1000),
        },
    )
    .await
    .unwrap();
    let revoked = hearth_pool::accounts::revoke_key(store.as_ref(), &issued.key.id)
        .await
        .unwrap();
    assert_eq!(store.customer_keys().await.unwrap(), vec![revoked]);
    assert!(matches!(
        hearth_pool::accounts::revoke_key(store.as_ref(), "key_nope").await,
        Err(StoreError::NotFound(_))
    ));

    // Two jobs of one customer in one batch: one usage row.
    let key = KeyPair::generate().unwrap();
    store
        .append_receipts(
            &[payment(1, "n", 60), payment(2, "n", 25)],
            &[charge("k", 7, 70), charge("k", 3, 30)],
            &key,
        )
        .await
        .unwrap();
    let usage = store.usage().await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(
        (
            usage[0].2.jobs,
            usage[0].2.units,
            usage[0].2.charged_micro_credits
        ),
        (2, 10, 100)
    );

    let secret = store.pool_secret([7; 32]).await.unwrap();
    assert_eq!(secret, [7; 32]);
    assert_eq!(
        store.pool_secret([9; 32]).await.unwrap(),
        [7; 32],
        "the first key stays"
    );
    store.health().await.unwrap();
}

#[tokio::test]
async fn sled_round_trips_records_keys_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    round_trips(Arc::new(SledStore::open(&dir.path().join("p")).unwrap())).await;
}

#[tokio::test]
async fn postgres_round_trips_records_keys_and_usage() {
    round_trips(postgres().await).await;
}

/// Four processes starting at once on an empty database: each migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_apply_once_when_processes_start_together() {
    let url = support::scratch_database().await;
    let mut starts = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        starts.push(tokio::spawn(async move {
            let store = PgStore::connect(&url, 1).await.unwrap();
            store.migrate().await.unwrap()
        }));
    }
    let mut applied = Vec::new();
    for start in starts {
        applied.extend(start.await.unwrap());
    }
    let newest = hearth_pool::store::MIGRATIONS.last().unwrap().0;
    applied.sort_unstable();
    assert_eq!(
        applied,
        (1..=newest).collect::<Vec<_>>(),
        "each migration applied once"
    );
    let store = PgStore::connect(&url, 1).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), newest);
    assert_eq!(store.migrate().await.unwrap(), Vec::<i32>::new());

    // A database from a newer pool is refused, not written to.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO hearth_schema VALUES ($1, 'from the future', 0)",
            &[&(newest + 1)],
        )
        .await
        .unwrap();
    assert!(matches!(store.migrate().await, Err(StoreError::Schema(_))));
}

/// A server that is not there is a clear, retryable error, not a hang.
#[tokio::test]
async fn an_unreachable_database_is_a_transient_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let error = PgStore::connect(&format!("postgres://hearth@127.0.0.1:{port}/pool"), 2)
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("unavailable"), "{error}");
}

/// A process remembers the jobs it leased; when another process changed one meanwhile, an
/// edit made from that memory loses the race on the row's version and is made again on the row
/// as it is, and an edit that would keep the job looks at the database first.
#[tokio::test]
async fn postgres_an_edit_from_a_stale_memory_is_made_again_on_the_row_as_read() {
    use hearth_pool::queue::job::{Claim, Edit, JobBody, JobRow, JobState};
    let url = support::scratch_database().await;
    let a = PgStore::connect(&url, 2).await.unwrap();
    a.migrate().await.unwrap();
    let b = PgStore::connect(&url, 2).await.unwrap();
    let job = |id: &str| JobRow::queued(id.into(), "m".into(), u64::MAX / 4, JobBody::default());
    let models = vec!["m".to_owned()];
    let claim = |node: &'static str, lease: &'static str| Claim {
        node_id: node,
        models: &models,
        max: 1,
        established: true,
        lease_id: lease,
        now_unix_ms: 1,
        expires_unix_ms: u64::MAX / 4,
    };
    let requeue = |job: &mut JobRow| {
        job.state = JobState::Queued;
        Edit::put(Vec::new())
    };
    let lease_of = |job: &JobRow| match &job.state {
        JobState::Leased { lease_id, .. } | JobState::Paying { lease_id, .. } => {
            Some(lease_id.clone())
        }
        _ => None,
    };

    a.insert_jobs(&[job("j")], &[]).await.unwrap();
    assert_eq!(a.claim_jobs(&claim("n1", "l1")).await.unwrap().len(), 1);
    // Process B takes the job back and leases it to another node.
    assert!(b.edit_job("j", &mut { requeue }).await.unwrap());
    assert_eq!(b.claim_jobs(&claim("n2", "l2")).await.unwrap().len(), 1);
    // A result for A's old lease: A's memory says l1 holds it, the database says l2.
    let mut seen = Vec::new();
    let mut pay_l1 = |job: &mut JobRow| {
        seen.push(lease_of(job));
        if lease_of(job).as_deref() == Some("l1") {
            job.state = JobState::Paying {
                node_id: "n1".into(),
                lease_id: "l1".into(),
                expires_unix_ms: u64::MAX / 4,
            };
            Edit::put(Vec::new())
        } else {
            Edit::keep()
        }
    };
    assert!(a.edit_job("j", &mut pay_l1).await.unwrap());
    assert_eq!(seen, [Some("l1".to_owned()), Some("l2".to_owned())]);
    let stored = b.job("j").await.unwrap().unwrap();
    assert_eq!(lease_of(&stored).as_deref(), Some("l2"));
    assert!(matches!(stored.state, JobState::Leased { .. }));

    // An edit that keeps the job decides on the row as stored, not as remembered.
    a.insert_jobs(&[job("k")], &[]).await.unwrap();
    assert_eq!(a.claim_jobs(&claim("n1", "l3")).await.unwrap().len(), 1);
    assert!(b.edit_job("k", &mut { requeue }).await.unwrap());
    let mut seen = Vec::new();
    let mut look = |job: &mut JobRow| {
        seen.push(lease_of(job));
        Edit::keep()
    };
    assert!(a.edit_job("k", &mut look).await.unwrap());
    assert_eq!(
        seen.last(),
        Some(&None),
        "the requeued row was read: {seen:?}"
    );
}
