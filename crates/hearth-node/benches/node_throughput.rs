//! Node throughput against raw inference, side by side in one run, on the same model and inputs.
//!
//!     cargo bench -p hearth-node --bench node_throughput
//!     cargo test --workspace --bench node_throughput -- --bench   (dev profile, deps optimised)
//!
//! Raw: `TextEmbedder::embed` called back to back. Node: the same requests sent by customers
//! over HTTP to the embedded pool, leased by the worker, run, submitted, paid and written to
//! the ledger (flushed). Prints requests/s of both and their ratio (target ≥ 0.90).
//! `HEARTH_BENCH_REQUESTS` sets the number of requests (default 300).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_inference::embeddings::MINILM_ID;
use hearth_inference::{ComputeDevice, ModelStore, TextEmbedder};
use hearth_ledger::Ledger;
use hearth_node::executor::Executor;
use hearth_node::worker::{self, WorkerConfig};
use tokio::sync::watch;

/// A request of four short texts, as the demo customer sends.
fn request(n: usize) -> Vec<String> {
    (0..4)
        .map(|i| {
            format!("request {n} text {i}: a customer wants this sentence embedded for search")
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("node_throughput: run with `cargo bench -p hearth-node --bench node_throughput`");
        return;
    }
    let requests: usize = std::env::var("HEARTH_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let store = ModelStore::from_env();

    // Raw inference.
    let embedder = TextEmbedder::load(&store, MINILM_ID, ComputeDevice::cpu()).unwrap();
    for n in 0..10 {
        let texts = request(n);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed(&refs).unwrap();
    }
    let start = Instant::now();
    for n in 0..requests {
        let texts = request(n);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed(&refs).unwrap();
    }
    let raw = requests as f64 / start.elapsed().as_secs_f64();
    drop(embedder);

    // Through the node.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pool = hearth_pool::embedded::start(
            dir.path(),
            &hearth_inference::ModelStore::from_env(),
            None,
        )
        .await
        .unwrap();
        let ledger = Arc::new(Ledger::open(&dir.path().join("ledger")).unwrap());
        let key = worker::load_or_create_identity(&dir.path().join("node.key")).unwrap();
        let executor = Arc::new(Executor::new(store, ComputeDevice::cpu()));
        let (_pause, paused) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let config = WorkerConfig {
            pool_url: pool.url(),
            lease_wait: Duration::from_secs(5),
            ..WorkerConfig::default()
        };
        let worker = tokio::spawn(worker::run(
            config,
            key,
            executor,
            ledger,
            paused,
            stop,
            None,
            |_| {},
        ));
        let http = reqwest::Client::new();
        let (url, api_key) = (pool.url(), pool.api_key().to_owned());
        let send = move |n: usize| {
            let (http, url, key) = (http.clone(), url.clone(), api_key.clone());
            async move {
                let response = http
                    .post(format!("{url}/v1/embeddings"))
                    .bearer_auth(key)
                    .json(&serde_json::json!({"model": MINILM_ID, "input": request(n)}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
            }
        };
        // Warm up (model load), then keep a few requests queued so the node never waits.
        for n in 0..10 {
            send(n).await;
        }
        let start = Instant::now();
        let mut customers = Vec::new();
        for c in 0..4 {
            let send = send.clone();
            customers.push(tokio::spawn(async move {
                let mut n = c;
                while n < requests {
                    send(n).await;
                    n += 4;
                }
            }));
        }
        for customer in customers {
            customer.await.unwrap();
        }
        let rate = requests as f64 / start.elapsed().as_secs_f64();
        stop_tx.send(true).unwrap();
        worker.await.unwrap().unwrap();
        rate
    });
    println!("embeddings requests (4 short texts each), CPU backend, {requests} requests");
    println!("raw inference   {raw:>8.1} requests/s");
    println!("through node    {node:>8.1} requests/s (HTTP, lease, result, receipt, ledger flush)");
    println!("ratio           {:>8.3} (target >= 0.90)", node / raw);
}
