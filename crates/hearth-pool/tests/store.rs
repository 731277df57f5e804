//! The pool's store on both backends: sled in a folder, and a real PostgreSQL server (the
//! README's test command starts one and sets `HEARTH_TEST_DATABASE_URL`). Chains stay
//! unbroken under concurrent payments, also from two processes' worth of connections on one
//! database; a job is paid to a node once; balances equal their receipts; migrations run once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use hearth_pool::store::ReceiptWriter;
use hearth_pool::{Payment, PgStore, PoolStore, SledStore, StoreError, audit_chains};
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

/// 300 jobs paid from 300 tasks through `writers` in turn (every fifth pays a second node, as
/// a verified job does): each node's chain verifies, balances are the sums.
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
                let receipts = writer.issue(payments.clone()).await.unwrap();
                assert_eq!(receipts.len(), payments.len());
                for (r, p) in receipts.iter().zip(&payments) {
                    assert_eq!(
                        (&r.receipt.job_id, &r.receipt.node_id),
                        (&p.job_id, &p.node_id)
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(audit_chains(store, &key.public_key()).await, Ok(300 + 60));
    let total: u64 = store.balances().await.unwrap().iter().map(|(_, b)| b).sum();
    let paid: u64 = (0..300u64).map(|i| 1 + i).sum::<u64>() + 60;
    assert_eq!(total, paid);
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
    assert_eq!(audit_chains(&store, &key.public_key()).await, Ok(360));
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
        audit_chains(stores[1].as_ref(), &key.public_key()).await,
        Ok(360)
    );
}

/// A second receipt for one job and node is refused by the store itself, and leaves the
/// chain and balance as they were; in a batch, only the duplicate fails.
async fn a_job_is_paid_to_a_node_once(store: Arc<dyn PoolStore>) {
    let key = KeyPair::generate().unwrap();
    let first = store
        .append_receipts(&[payment(1, "n", 40)], &key)
        .await
        .unwrap();
    let again = store.append_receipts(&[payment(1, "n", 40)], &key).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.balances().await.unwrap(), vec![("n".to_owned(), 40)]);
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
            tokio::spawn(async move { writer.issue(vec![payment(job, "n", 5)]).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().is_ok());
    }
    assert_eq!(outcomes, [false, true, true]);
    assert_eq!(store.balances().await.unwrap(), vec![("n".to_owned(), 50)]);
    assert_eq!(audit_chains(store.as_ref(), &key.public_key()).await, Ok(3));
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

    store.add_usage("k", "m", 7, 70).await.unwrap();
    store.add_usage("k", "m", 3, 30).await.unwrap();
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
