//! Three `hearth-pool serve` processes on one PostgreSQL database, as an operator runs a
//! network: a customer waiting on one process is answered by a node that leased from another
//! and reported to a third; then customers and nodes spread across all three while one
//! process is killed (SIGKILL) mid-load and started again. Every customer request is answered
//! or cleanly refused, every node's chain verifies, balances equal the sum of receipts, and no
//! job is paid twice.
//!
//! Needs the test PostgreSQL server (`HEARTH_TEST_DATABASE_URL`, started by the README's test
//! command).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hearth_pool::{PgStore, PoolStore, audit_chains};
use hearth_protocol::{Job, LeaseReply, LeaseRequest, ResultReply, SignedReceipt};
use serde_json::json;
use support::{EMBEDDING_MODEL, KEY, Node, customer};

const PROCESSES: usize = 3;

/// A config for every process: one database, short leases so a killed process's leases come
/// back quickly.
async fn config(dir: &std::path::Path, database: &str) -> std::path::PathBuf {
    let path = dir.join("pool.toml");
    std::fs::write(
        &path,
        format!(
            "database = \"{database}\"\nbind = \"127.0.0.1:0\"\napi_keys = [\"{KEY}\"]\n\
             lease_ms = 1500\nmax_attempts = 6\nprobation_jobs = 0\nverification_share = 0.0\n\
             request_timeout_ms = 20000\nregistrations_per_minute = 1000\n"
        ),
    )
    .unwrap();
    path
}

async fn start(
    config: &std::path::Path,
    data: &std::path::Path,
) -> (tokio::process::Child, String) {
    support::serve_binary(config, data).await
}

/// A node that leases from one process and reports to the next, round and round, until told
/// to stop; the receipts it was given.
async fn work(
    node: Node,
    urls: Arc<Vec<String>>,
    offset: usize,
    stop: Arc<AtomicBool>,
) -> Vec<SignedReceipt> {
    let mut receipts = Vec::new();
    let mut turn = offset;
    while !stop.load(Ordering::SeqCst) {
        turn += 1;
        let lease_at = &urls[turn % urls.len()];
        let lease = LeaseRequest {
            max_jobs: 2,
            wait_ms: 300,
            models: None,
        };
        let Some(reply) = node
            .try_post::<LeaseReply>(lease_at, "/node/v1/lease", &lease)
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for job in reply.jobs {
            receipts.extend(report(&node, &urls, turn + 1, &job).await);
        }
    }
    receipts
}

/// Report `job`'s honest answer, to the process after the one it was leased from, trying the
/// others in turn if one cannot be reached (a node retries a result until it is recorded).
async fn report(node: &Node, urls: &[String], first: usize, job: &Job) -> Option<SignedReceipt> {
    let result = support::honest_result(job);
    let path = format!("/node/v1/jobs/{}/result", job.id);
    for attempt in 0..(2 * urls.len()) {
        let url = &urls[(first + attempt) % urls.len()];
        if let Some(reply) = node.try_post::<ResultReply>(url, &path, &result).await {
            return reply.receipt;
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_share_one_network_and_survive_a_kill() {
    let home = tempfile::tempdir().unwrap();
    let database = support::scratch_database().await;
    let config = config(home.path(), &database).await;
    let data = |i: usize| home.path().join(format!("data-{i}"));
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for i in 0..PROCESSES {
        let (child, url) = start(&config, &data(i)).await;
        children.push(child);
        urls.push(url);
    }

    // Across processes: the customer waits on 0, the node registered at 1 leases from 1 and
    // reports to 2; the answer reaches the customer through the database's events.
    let node = Node::join(&urls[1], &[EMBEDDING_MODEL]).await;
    let waiting = tokio::spawn(customer(
        &urls[0],
        "/v1/embeddings",
        json!({ "model": EMBEDDING_MODEL, "input": "across processes" }),
    ));
    let job = loop {
        let mut jobs = node.lease(2000).await;
        if let Some(job) = jobs.pop() {
            break job;
        }
    };
    let receipt = report(&node, &urls[2..], 0, &job).await.expect("paid");
    receipt.verify(&node.pool_key).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the customer on process 0 is answered")
        .unwrap();
    assert_eq!(reply.status(), 200);
    let body: serde_json::Value = reply.json().await.unwrap();
    let first = body["data"][0]["embedding"][0].as_f64().unwrap();
    assert!(
        (first - f64::from(support::marker("across processes"))).abs() < 1e-6,
        "the customer got the node's vector: {first}"
    );

    // Load: six nodes (registered at different processes) and 90 customer requests spread
    // over the three processes; process 1 is killed mid-load and started again.
    let urls = Arc::new(urls);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..6 {
        let node = Node::join(&urls[i % PROCESSES], &[EMBEDDING_MODEL]).await;
        workers.push(tokio::spawn(work(
            node,
            Arc::clone(&urls),
            i,
            Arc::clone(&stop),
        )));
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    // Where customers send: process 1's new address once it is started again.
    let customer_urls = Arc::new(std::sync::RwLock::new(urls.to_vec()));
    let mut requests = Vec::new();
    for i in 0..90 {
        let customer_urls = Arc::clone(&customer_urls);
        let (answered, refused) = (Arc::clone(&answered), Arc::clone(&refused));
        requests.push(tokio::spawn(async move {
            // Spread over a few seconds, so some are in flight when the process dies.
            tokio::time::sleep(Duration::from_millis(40 * i as u64)).await;
            let url = customer_urls.read().unwrap()[i % PROCESSES].clone();
            let sent = reqwest::Client::new()
                .post(format!("{url}/v1/embeddings"))
                .bearer_auth(KEY)
                .timeout(Duration::from_secs(30))
                .json(&json!({ "model": EMBEDDING_MODEL, "input": [format!("request {i}"), "and a second text"] }))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 200 => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(body["data"].as_array().unwrap().len(), 2);
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                // Cleanly failed: the process died under it (connection closed), or it was
                // told to retry (503) or gave up in time (504).
                Ok(r) => {
                    assert!([503, 504].contains(&r.status().as_u16()), "{}", r.status());
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                Err(error) => {
                    assert!(!error.is_timeout(), "a request hung: {error}");
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    children[1].start_kill().unwrap();
    children[1].wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (child, restarted) = start(&config, &data(1)).await;
    children[1] = child;
    // The restarted process listens on a new port; customers' requests to "1" go to it.
    customer_urls.write().unwrap()[1] = restarted.clone();
    for request in requests {
        tokio::time::timeout(Duration::from_secs(60), request)
            .await
            .expect("every customer request ends")
            .unwrap();
    }
    // The restarted process serves too.
    let after = customer(
        &restarted,
        "/v1/embeddings",
        json!({ "model": EMBEDDING_MODEL, "input": "after the restart" }),
    )
    .await;
    assert_eq!(after.status(), 200);
    stop.store(true, Ordering::SeqCst);
    let mut node_receipts = Vec::new();
    for worker in workers {
        node_receipts.extend(worker.await.unwrap());
    }
    let (answered, refused) = (
        answered.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    );
    println!("three processes: {answered} requests answered, {refused} cleanly failed");
    assert_eq!(answered + refused, 90);
    assert!(answered >= 60, "most requests were answered: {answered}");

    // The books: every chain verifies and sums to its balance; no job paid twice; every
    // receipt a node was handed is in the store.
    let store = PgStore::connect(&database, 2).await.unwrap();
    let pool_key = &node.pool_key;
    let checked = audit_chains(&store, pool_key).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let twice: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT job_id FROM receipts GROUP BY job_id HAVING count(*) > 1) AS t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "no job was paid twice");
    let stored: i64 = client
        .query_one("SELECT count(*) FROM receipts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as u64, checked);
    let mut seen = HashSet::new();
    for receipt in &node_receipts {
        receipt.verify(pool_key).unwrap();
        let held = store
            .receipt_for_job(
                &receipt.receipt.payment.job_id,
                &receipt.receipt.payment.node_id,
            )
            .await
            .unwrap()
            .expect("a receipt handed out is in the store");
        assert_eq!(&held, receipt);
        assert!(seen.insert(receipt.receipt.payment.job_id.clone()));
    }
    let balances: HashMap<String, u64> = store.balances().await.unwrap().into_iter().collect();
    let paid: u64 = balances.values().sum();
    let (usage_jobs, charged): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT coalesce(sum(jobs), 0)::int8, coalesce(sum(charged_micro_credits), 0)::int8 FROM customer_usage",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    println!(
        "{checked} receipts in {} chains, {paid} micro-credits paid; customers charged {charged} for {usage_jobs} jobs",
        balances.len()
    );
    assert!(
        usage_jobs as u64 <= checked,
        "no paid job was charged twice"
    );
    assert!(
        charged as u64 >= paid,
        "customers pay at least what nodes earn"
    );
    for mut child in children {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
}
