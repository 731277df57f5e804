//! End to end with the real models: a customer's embeddings, chat and image requests go over
//! HTTP to the embedded pool, to this node's worker, through Hearth's models on the CPU backend,
//! and back; every job is in the ledger with a receipt that verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hearth_inference::{ComputeDevice, ModelStore};
use hearth_ledger::{JobStatus, Ledger};
use hearth_node::executor::Executor;
use hearth_node::worker::{self, WorkerConfig};
use serde_json::json;
use support::ask;
use tokio::sync::watch;

/// An embedded pool, and a ledger, key and CPU executor for a worker, in a fresh folder.
struct Rig {
    dir: tempfile::TempDir,
    pool: hearth_pool::embedded::EmbeddedPool,
    ledger: Arc<Ledger>,
    key: hearth_protocol::KeyPair,
    executor: Arc<Executor>,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let pool =
        hearth_pool::embedded::start(dir.path(), &hearth_inference::ModelStore::from_env(), None)
            .await
            .unwrap();
    let (ledger, key, executor) = node_parts(dir.path());
    Rig {
        dir,
        pool,
        ledger,
        key,
        executor,
    }
}

/// A ledger, key and CPU executor for a worker, in `dir`.
fn node_parts(dir: &std::path::Path) -> (Arc<Ledger>, hearth_protocol::KeyPair, Arc<Executor>) {
    (
        Arc::new(Ledger::open(&dir.join("ledger")).unwrap()),
        worker::load_or_create_identity(&dir.join("node.key")).unwrap(),
        Arc::new(Executor::new(ModelStore::from_env(), ComputeDevice::cpu())),
    )
}

/// A node whose key the pool quarantined is told why, in the words the owner's app shows
/// (the pool status error), and gets no work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_node_is_told_why_and_gets_no_work() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, key, executor) = node_parts(dir.path());
    let node_id = hearth_protocol::node_id(&key.public_key());
    let store: Arc<dyn hearth_pool::PoolStore> =
        Arc::new(hearth_pool::SledStore::open(&dir.path().join("pool")).unwrap());
    let config = hearth_pool::PoolConfig {
        quarantine_strikes: 1,
        ..hearth_pool::PoolConfig::default()
    };
    let mut record = hearth_pool::NodeRecord::default();
    record.strike(&config, "token counts [4294967295] are not the texts' [4]");
    store
        .put_node_record(&node_id, &record, true)
        .await
        .unwrap();
    let (meter, _) = hearth_pool::Meter::load(&ModelStore::from_env(), &config.models);
    let pool = hearth_pool::Pool::start(config, store, Arc::new(meter))
        .await
        .unwrap();
    let config = WorkerConfig {
        pool_url: pool.url(),
        ..WorkerConfig::default()
    };
    let error = support::first_refusal(config, key, executor, ledger).await;
    assert!(error.contains("This node is quarantined"), "{error}");
    assert!(error.contains("earnings are held"), "{error}");
    assert!(
        !error.contains("{\"error\""),
        "the pool's words, not its JSON: {error}"
    );
    assert_eq!(pool.state().queue.counts().await.unwrap(), (0, 0));
}

/// A running worker that reports no events, never paused; stop it with the returned switch.
fn spawn_worker(
    config: WorkerConfig,
    key: hearth_protocol::KeyPair,
    executor: Arc<Executor>,
    ledger: Arc<Ledger>,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
) {
    let (pause_tx, paused) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let result = worker::run(config, key, executor, ledger, paused, stop, None, |_| {}).await;
        drop(pause_tx);
        result
    });
    (stop_tx, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_requests_run_on_the_real_models_and_land_in_the_ledger() {
    let Rig {
        dir,
        pool,
        ledger,
        key,
        executor,
    } = rig().await;
    assert_eq!(
        executor.available_models().len(),
        3,
        "run `hearth-models fetch` first"
    );
    let (_pause, paused) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = WorkerConfig {
        pool_url: pool.url(),
        lease_wait: Duration::from_millis(500),
        ..WorkerConfig::default()
    };
    let worker = tokio::spawn({
        let (ledger, seen) = (Arc::clone(&ledger), Arc::clone(&seen));
        worker::run(
            config,
            key,
            executor,
            ledger,
            paused,
            stop,
            None,
            move |event| {
                if let worker::WorkerEvent::JobEnded(job) = event {
                    seen.lock().unwrap().push(job.job_id.clone());
                }
            },
        )
    });

    let (url, api) = (pool.url(), pool.api_key().to_owned());
    let embeddings = ask(
        &url,
        &api,
        "/v1/embeddings",
        json!({"model": "all-minilm-l6-v2", "input": ["A cat sleeps by the fire.", "Hearth lends idle GPUs."]}),
    )
    .await
    .unwrap();
    let v = embeddings["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(v.len(), 384);
    let norm: f64 = v
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "unit vectors, got {norm}");

    let chat = ask(
        &url,
        &api,
        "/v1/chat/completions",
        json!({"model": "smollm2-135m-instruct", "temperature": 0,
               "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
    )
    .await
    .unwrap();
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );

    let photo = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hearth-inference/fixtures/chelsea.png"
    ))
    .unwrap();
    let images = ask(
        &url,
        &api,
        "/v1/images/classifications",
        json!({"model": "efficientnet-lite0", "top_k": 1,
               "images": [base64::engine::general_purpose::STANDARD.encode(photo)]}),
    )
    .await
    .unwrap();
    assert_eq!(images["data"][0]["labels"][0]["label"], "Egyptian cat");

    stop_tx.send(true).unwrap();
    worker.await.unwrap().unwrap();
    let jobs = ledger.recent_jobs(10).unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Completed
            && j.receipt.is_some()
            && j.micro_credits > 0),
        "{jobs:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "each job reported after it was recorded"
    );
    let pool_key = pool.pool().state().pool_key.public_key();
    assert_eq!(ledger.verify_chain(&pool_key).unwrap().receipts, 3);
    // The node's key file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Throttled to a 25% duty cycle, the worker rests three times each job's compute time before
/// it takes the next one (at 100% the next job follows at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_worker_rests_in_proportion_to_its_work() {
    let Rig {
        dir: _dir,
        pool,
        ledger,
        key,
        executor,
    } = rig().await;
    let (_duty_tx, duty) = watch::channel(25u8);
    let config = WorkerConfig {
        pool_url: pool.url(),
        lease_wait: Duration::from_millis(500),
        duty_percent: Some(duty),
        ..WorkerConfig::default()
    };
    let (stop_tx, worker) = spawn_worker(config, key, executor, Arc::clone(&ledger));
    let (url, api) = (pool.url(), pool.api_key().to_owned());
    let sentences: Vec<String> = (0..48)
        .map(|i| {
            format!("Sentence number {i} about lending a spare GPU to a small inference pool.")
        })
        .collect();
    let requests = (0..4).map(|_| {
        let (url, api, sentences) = (url.clone(), api.clone(), sentences.clone());
        tokio::spawn(async move {
            ask(
                &url,
                &api,
                "/v1/embeddings",
                json!({"model": "all-minilm-l6-v2", "input": sentences}),
            )
            .await
        })
    });
    for request in requests.collect::<Vec<_>>() {
        request.await.unwrap().unwrap();
    }
    stop_tx.send(true).unwrap();
    worker.await.unwrap().unwrap();

    let mut jobs = ledger.recent_jobs(100).unwrap();
    jobs.sort_by_key(|j| j.started_unix_ms);
    assert!(jobs.len() >= 4, "{} jobs", jobs.len());
    for pair in jobs.windows(2) {
        let busy = pair[0].ended_unix_ms.unwrap() - pair[0].started_unix_ms;
        let gap = pair[1].started_unix_ms - pair[0].ended_unix_ms.unwrap();
        assert!(
            gap + 2 >= 3 * busy,
            "after computing {busy} ms the worker rested only {gap} ms"
        );
    }
}

/// A pool that restarts forgets its nodes and their sessions: the worker registers again by
/// itself and goes on working; its receipts from both runs verify in one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_registers_again_after_the_pool_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("pool");
    let api = "sk-restart-test";
    let start_pool = |bind: std::net::SocketAddr| {
        let store_dir = store_dir.clone();
        async move {
            let config = hearth_pool::PoolConfig {
                bind,
                api_keys: vec![api.into()],
                verification_share: 0.0,
                probation_jobs: 0,
                ..hearth_pool::PoolConfig::default()
            };
            let (meter, _) =
                hearth_pool::Meter::load(&hearth_inference::ModelStore::from_env(), &config.models);
            let meter = Arc::new(meter);
            // The previous pool's database is released once its last request has ended.
            for _ in 0..100 {
                if let Ok(store) = hearth_pool::SledStore::open(&store_dir) {
                    return hearth_pool::Pool::start(config, Arc::new(store), meter)
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the first pool never released its database");
        }
    };
    let pool = start_pool("127.0.0.1:0".parse().unwrap()).await;
    let (addr, url) = (pool.addr(), pool.url());
    let (ledger, key, executor) = node_parts(dir.path());
    let config = WorkerConfig {
        pool_url: url.clone(),
        lease_wait: Duration::from_millis(300),
        ..WorkerConfig::default()
    };
    let (stop_tx, worker) = spawn_worker(config, key, executor, Arc::clone(&ledger));
    let embed = |text: &'static str| {
        let url = url.clone();
        async move {
            ask(
                &url,
                api,
                "/v1/embeddings",
                json!({"model": "all-minilm-l6-v2", "input": text}),
            )
            .await
        }
    };
    embed("before the restart").await.unwrap();
    let pool_key = pool.state().pool_key.public_key();
    drop(pool);
    let pool = start_pool(addr).await;
    assert_eq!(
        pool.state().pool_key.public_key(),
        pool_key,
        "same store, same key"
    );
    let answered = tokio::time::timeout(Duration::from_secs(30), embed("after the restart"))
        .await
        .expect("the worker did not come back within 30 s");
    answered.unwrap();

    stop_tx.send(true).unwrap();
    worker.await.unwrap().unwrap();
    assert_eq!(ledger.verify_chain(&pool_key).unwrap().receipts, 2);
}

/// A model whose weights file was altered on disk (one flipped byte: its hash check refuses
/// it): the job is handed back once with the reason, the model is left out of leases and its
/// files are fetched again from the package cache, verified; then the pool's job comes back
/// and completes, in one ledger row. The owner was told meanwhile, and the notice is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_model_is_handed_back_once_fetched_again_and_served() {
    let Rig {
        dir,
        pool,
        ledger,
        key,
        ..
    } = rig().await;
    // This node's own store: a copy of the image model, its weights damaged.
    let store_dir = dir.path().join("models");
    let source = ModelStore::from_env().root().join("efficientnet-lite0");
    let copy = store_dir.join("efficientnet-lite0");
    std::fs::create_dir_all(copy.join("weights")).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut damaged = None;
    for entry in std::fs::read_dir(source.join("weights")).unwrap() {
        let path = entry.unwrap().path();
        let target = copy.join("weights").join(path.file_name().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        if damaged.is_none() && bytes.len() > 4096 {
            bytes[4096] ^= 0x01;
            damaged = Some(target.clone());
        }
        std::fs::write(&target, bytes).unwrap();
    }
    let damaged = damaged.expect("a weights file to damage");
    let executor = Arc::new(Executor::new(
        ModelStore::new(&store_dir),
        ComputeDevice::cpu(),
    ));
    assert_eq!(executor.available_models(), ["efficientnet-lite0"]);

    let notices = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let ended = Arc::new(Mutex::new(Vec::new()));
    let (_pause, paused) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let config = WorkerConfig {
        pool_url: pool.url(),
        lease_wait: Duration::from_millis(300),
        ..WorkerConfig::default()
    };
    let worker = {
        let (notices, ended) = (Arc::clone(&notices), Arc::clone(&ended));
        let (executor, ledger) = (Arc::clone(&executor), Arc::clone(&ledger));
        tokio::spawn(worker::run(
            config,
            key,
            executor,
            ledger,
            paused,
            stop,
            None,
            move |event| match event {
                worker::WorkerEvent::Notices(now) => notices.lock().unwrap().push(now),
                worker::WorkerEvent::JobEnded(record) => ended.lock().unwrap().push(record),
                _ => {}
            },
        ))
    };
    let photo = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hearth-inference/fixtures/chelsea.png"
    ))
    .unwrap();
    let images = ask(
        &pool.url(),
        pool.api_key(),
        "/v1/images/classifications",
        json!({"model": "efficientnet-lite0", "top_k": 1,
               "images": [base64::engine::general_purpose::STANDARD.encode(photo)]}),
    )
    .await
    .unwrap();
    assert_eq!(images["data"][0]["labels"][0]["label"], "Egyptian cat");
    stop_tx.send(true).unwrap();
    worker.await.unwrap().unwrap();

    // Handed back once with the reason, then completed: one row, paid.
    let ended = ended.lock().unwrap().clone();
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert_eq!(ended[0].status, JobStatus::Returned);
    let reason = ended[0].note.clone().unwrap();
    assert!(
        reason.starts_with("this node's copy of efficientnet-lite0 is damaged (")
            && reason.contains("has sha256")
            && reason.ends_with("; fetching it again"),
        "{reason}"
    );
    assert_eq!(ended[1].job_id, ended[0].job_id);
    assert_eq!(ended[1].status, JobStatus::Completed);
    let rows = ledger.jobs_between(0, u64::MAX, 100).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].micro_credits > 0);
    assert_eq!(
        rows[0].note.as_deref(),
        Some("started again after it was handed back")
    );
    // The file is whole again, and the owner was told while it was not.
    hearth_inference::store::verify_file(
        &damaged,
        std::fs::metadata(&damaged).unwrap().len(),
        &hearth_inference::store::sha256_file(
            &source.join("weights").join(damaged.file_name().unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices.first().is_some_and(|first| first.len() == 1
            && first[0].starts_with(
                "efficientnet-lite0: this computer's copy failed its check; fetching it again"
            )),
        "{notices:?}"
    );
    assert_eq!(notices.last().unwrap(), &Vec::<String>::new());
    assert!(executor.broken_models().is_empty());
}

/// A node with an empty model folder joins a pool that sells three models: it fetches them
/// from the pool in the background (progress reported as it goes), checks them, and serves a
/// customer's request on one of them: no package manager, no toolchain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_models_fetches_them_from_the_pool_and_serves_them() {
    let Rig {
        dir,
        pool,
        ledger,
        key,
        ..
    } = rig().await;
    let empty = ModelStore::new(dir.path().join("node-models"));
    let executor = Arc::new(Executor::new(empty.clone(), ComputeDevice::cpu()));
    assert!(executor.available_models().is_empty());
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    // What the node told it serves: nothing at its join, then each model as it arrives.
    let serving = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let (_pause, paused) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let config = WorkerConfig {
        pool_url: pool.url(),
        lease_wait: Duration::from_millis(300),
        ..WorkerConfig::default()
    };
    let worker = tokio::spawn({
        let (ledger, executor) = (Arc::clone(&ledger), Arc::clone(&executor));
        worker::run(config, key, executor, ledger, paused, stop, None, {
            let serving = Arc::clone(&serving);
            move |event| match event {
                worker::WorkerEvent::Downloads(downloads) => {
                    let _ = progress_tx.send(downloads);
                }
                worker::WorkerEvent::Joined {
                    serving: models, ..
                }
                | worker::WorkerEvent::Serving(models) => serving.lock().unwrap().push(models),
                _ => {}
            }
        })
    });
    let started = std::time::Instant::now();
    let embeddings = ask(
        &pool.url(),
        pool.api_key(),
        "/v1/embeddings",
        json!({"model": "all-minilm-l6-v2", "input": ["Fetched from the pool."]}),
    )
    .await
    .unwrap();
    assert_eq!(
        embeddings["data"][0]["embedding"].as_array().unwrap().len(),
        384
    );
    eprintln!(
        "served {:.1} s after the node started with no models",
        started.elapsed().as_secs_f64()
    );
    // Every model the pool sells arrives, reported on the way, until the list empties.
    let mut seen = Vec::new();
    loop {
        let downloads = tokio::time::timeout(Duration::from_secs(120), progress.recv())
            .await
            .expect("the downloads go on")
            .expect("the worker runs");
        let done = downloads.is_empty();
        seen.push(downloads);
        if done {
            break;
        }
    }
    for id in [
        "all-minilm-l6-v2",
        "efficientnet-lite0",
        "smollm2-135m-instruct",
    ] {
        empty.verify(id).unwrap();
    }
    assert_eq!(executor.available_models().len(), 3);
    let serving = serving.lock().unwrap().clone();
    assert_eq!(serving.first(), Some(&Vec::new()), "{serving:?}");
    assert_eq!(serving.last().map(Vec::len), Some(3), "{serving:?}");
    assert_eq!(serving.len(), 4, "joined, then one per model: {serving:?}");
    assert!(
        seen.iter()
            .flatten()
            .any(|d| d.done_bytes > 0 && d.done_bytes < d.total_bytes && d.bytes_per_second > 0.0),
        "progress part-way was reported: {seen:?}"
    );
    stop_tx.send(true).unwrap();
    worker.await.unwrap().unwrap();
}
