//! The sled pool killed (SIGKILL) while it pays. Its receipts are written without sled's atomic
//! batches, each node's head last (see `store/sled.rs`), so this is the test of that design
//! against a real crash: after it, every receipt a node was given is in the store, every
//! chain verifies and sums to its balance, and a restarted pool goes on with each chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hearth_pool::{PoolStore, SledStore, audit_chains};
use hearth_protocol::{LeaseReply, LeaseRequest, ResultReply, SignedReceipt};
use serde_json::json;
use support::{EMBEDDING_MODEL, KEY, Node, honest_result};

/// Lease and answer as fast as the pool hands out work, until it stops answering; the receipts
/// it was given (each one acknowledged: synced before it was sent).
async fn work(node: Arc<Node>, url: String, paid: Arc<AtomicUsize>) -> Vec<SignedReceipt> {
    let mut receipts = Vec::new();
    let mut misses = 0;
    while misses < 20 {
        let lease = LeaseRequest {
            max_jobs: 1,
            wait_ms: 100,
            models: None,
        };
        let Some(reply) = node
            .try_post::<LeaseReply>(&url, "/node/v1/lease", &lease)
            .await
        else {
            misses += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        for job in reply.jobs {
            let result = honest_result(&job);
            let path = format!("/node/v1/jobs/{}/result", job.id);
            if let Some(ResultReply {
                receipt: Some(receipt),
                ..
            }) = node.try_post(&url, &path, &result).await
            {
                receipts.push(receipt);
                paid.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    receipts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sled_pool_killed_while_it_pays_keeps_every_receipt_it_gave() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("pool.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:0\"\napi_keys = [\"{KEY}\"]\nprobation_jobs = 0\n\
             verification_share = 0.0\nregistrations_per_minute = 1000\n"
        ),
    )
    .unwrap();
    let data = home.path().join("data");
    let (mut serve, url) = support::serve_binary(&config, &data).await;

    // Customers keep the queue full; six nodes work it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut customers = Vec::new();
    for c in 0..4 {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        customers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let texts: Vec<String> = (0..4)
                    .map(|t| format!("customer {c} request {i} text {t}"))
                    .collect();
                let sent = http
                    .post(format!("{url}/v1/embeddings"))
                    .bearer_auth(KEY)
                    .timeout(Duration::from_secs(5))
                    .json(&json!({ "model": EMBEDDING_MODEL, "input": texts }))
                    .send()
                    .await;
                if sent.is_err() {
                    break;
                }
            }
        }));
    }
    let paid = Arc::new(AtomicUsize::new(0));
    let mut nodes = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..6 {
        let node = Arc::new(Node::join(&url, &[EMBEDDING_MODEL]).await);
        nodes.push(Arc::clone(&node));
        workers.push(tokio::spawn(work(node, url.clone(), Arc::clone(&paid))));
    }
    // Kill it in the middle of paying: once some hundreds of receipts were given.
    while paid.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serve.start_kill().unwrap();
    serve.wait().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut given = Vec::new();
    for worker in workers {
        given.extend(worker.await.unwrap());
    }
    for customer in customers {
        customer.await.unwrap();
    }
    assert!(given.len() >= 300, "{} receipts given", given.len());

    // Every acknowledged receipt is there; the chains verify and sum to the balances.
    let pool_key = nodes[0].pool_key.clone();
    let store = SledStore::open(&data.join("pool.sled")).unwrap();
    let audited = audit_chains(&store, &pool_key).await.unwrap();
    for receipt in &given {
        let r = &receipt.receipt;
        assert_eq!(
            store
                .receipt_for_job(&r.payment.job_id, &r.payment.node_id)
                .await
                .unwrap()
                .as_ref(),
            Some(receipt),
            "receipt {} of node {} was given and is lost",
            r.sequence,
            r.payment.node_id
        );
    }
    assert!(audited as usize >= given.len());
    let balances: u64 = store.balances().await.unwrap().iter().map(|(_, b)| b).sum();
    let heads: Vec<SignedReceipt> = {
        let mut heads = Vec::new();
        for node in &nodes {
            heads.push(
                store
                    .chain_head(node.signer.node_id())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        heads
    };
    drop(store);
    println!(
        "killed while paying: {} receipts given, {audited} in the store, all verified; balances {balances}",
        given.len()
    );

    // Started again on the same folder, the pool goes on with each chain.
    let (mut serve, url) = support::serve_binary(&config, &data).await;
    let customer = tokio::spawn(support::customer(
        &url,
        "/v1/embeddings",
        json!({ "model": EMBEDDING_MODEL, "input": "after the crash" }),
    ));
    let node = &nodes[0];
    let job = loop {
        let reply: Option<LeaseReply> = node
            .try_post(
                &url,
                "/node/v1/lease",
                &LeaseRequest {
                    max_jobs: 1,
                    wait_ms: 2000,
                    models: None,
                },
            )
            .await;
        if let Some(job) = reply.and_then(|r| r.jobs.into_iter().next()) {
            break job;
        }
    };
    let result = honest_result(&job);
    let reply: ResultReply = node
        .try_post(&url, &format!("/node/v1/jobs/{}/result", job.id), &result)
        .await
        .expect("the restarted pool takes the result");
    let next = reply.receipt.expect("and pays it");
    assert_eq!(next.receipt.sequence, heads[0].receipt.sequence + 1);
    assert_eq!(next.receipt.prev_hash, heads[0].hash());
    assert_eq!(customer.await.unwrap().status(), 200);
    serve.start_kill().unwrap();
    serve.wait().await.unwrap();
}
