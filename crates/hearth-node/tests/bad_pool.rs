//! A pool that misbehaves, over real HTTP on loopback: garbage, a huge reply, an unknown model,
//! a receipt signed with the wrong key, and a pool that vanishes mid-job. The worker logs each,
//! refuses what it must, records what happened, credits nothing, and keeps running. A pool that
//! answers with another key than the one the node pinned for its address is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hearth_inference::{ComputeDevice, ModelStore};
use hearth_ledger::{JobStatus, Ledger};
use hearth_node::executor::Executor;
use hearth_node::worker::{self, WorkerConfig, WorkerEvent};
use hearth_protocol::{
    Job, JobResult, KeyPair, LeaseReply, Receipt, RegistrationReply, ResultReply, SignedReceipt,
    TaskPayload,
};
use tokio::sync::watch;

mod support;

struct FakePool {
    key: KeyPair,
    leases: AtomicU32,
}

fn job(id: &str, model: &str) -> Job {
    Job {
        id: id.into(),
        lease_id: format!("lease-{id}"),
        model: model.into(),
        task: TaskPayload::Embeddings {
            texts: vec!["a pool that misbehaves".into()],
        },
        lease_expires_unix_ms: hearth_protocol::now_unix_ms() + 30_000,
    }
}

async fn challenge() -> Response {
    axum::Json(hearth_protocol::Challenge {
        challenge: "ch-fake".into(),
        expires_unix_ms: hearth_protocol::now_unix_ms() + 60_000,
    })
    .into_response()
}

async fn register(State(pool): State<Arc<FakePool>>) -> Response {
    axum::Json(RegistrationReply {
        node_id: "n".into(),
        pool_public_key: pool.key.public_key(),
        pool_name: "Misbehaving pool".into(),
        demo: false,
        terms: None,
        session: None,
        release: None,
    })
    .into_response()
}

/// Each lease answers with the next kind of trouble, then with nothing at all.
async fn lease(State(pool): State<Arc<FakePool>>) -> Response {
    let n = pool.leases.fetch_add(1, Ordering::SeqCst);
    match n {
        0 => (StatusCode::OK, "{\"jobs\": [{\"id\": 7, \"lease").into_response(),
        1 => (StatusCode::OK, vec![b' '; 40 << 20]).into_response(),
        2 => axum::Json(LeaseReply {
            jobs: vec![job("unknown-model", "gpt-9-ultra")],
        })
        .into_response(),
        3 => axum::Json(LeaseReply {
            jobs: vec![job("forged-receipt", "all-minilm-l6-v2")],
        })
        .into_response(),
        4 => axum::Json(LeaseReply {
            jobs: vec![job("pool-vanishes", "all-minilm-l6-v2")],
        })
        .into_response(),
        _ => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            axum::Json(LeaseReply { jobs: vec![] }).into_response()
        }
    }
}

async fn result(
    State(_pool): State<Arc<FakePool>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let submitted: JobResult = serde_json::from_slice(&body).unwrap();
    assert!(matches!(
        submitted.output,
        hearth_protocol::TaskOutput::Embeddings { .. }
    ));
    if id == "pool-vanishes" {
        return (StatusCode::SERVICE_UNAVAILABLE, "gone").into_response();
    }
    // Signed by some other key than the one the pool registered with.
    let impostor = KeyPair::generate().unwrap();
    let receipt = SignedReceipt::sign(
        Receipt {
            payment: hearth_protocol::Payment {
                job_id: id,
                node_id: "n".into(),
                model: "all-minilm-l6-v2".into(),
                units: 8,
                unit: "input_tokens".into(),
                micro_credits: 1_000_000,
            },
            issued_unix_ms: hearth_protocol::now_unix_ms(),
            sequence: 0,
            prev_hash: String::new(),
        },
        &impostor,
    );
    axum::Json(ResultReply {
        receipt: Some(receipt),
        pending_verification: false,
        jobs: vec![],
    })
    .into_response()
}

async fn ok() -> Response {
    axum::Json(serde_json::json!({"lease_expires_unix_ms": 0, "cancel": false, "receipts": []}))
        .into_response()
}

/// The fake pool on loopback; its URL.
async fn serve(pool: &Arc<FakePool>) -> String {
    let app = Router::new()
        .route("/node/v1/challenge", post(challenge))
        .route("/node/v1/register", post(register))
        .route("/node/v1/lease", post(lease))
        .route("/node/v1/receipts", post(ok))
        .route("/node/v1/jobs/{id}/result", post(result))
        .route("/node/v1/jobs/{id}/heartbeat", post(ok))
        .route("/node/v1/jobs/{id}/return", post(ok))
        .with_state(Arc::clone(pool));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_answering_with_another_key_than_the_pinned_one_is_refused() {
    let pool = Arc::new(FakePool {
        key: KeyPair::generate().unwrap(),
        leases: AtomicU32::new(0),
    });
    let url = serve(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(&dir.path().join("ledger")).unwrap());
    // The node met the real pool at this address before: its key is pinned.
    let real = KeyPair::generate().unwrap().public_key();
    ledger
        .set_setting(&worker::pool_key_pin_setting(&url), &real)
        .unwrap();
    let key = worker::load_or_create_identity(&dir.path().join("node.key")).unwrap();
    let executor = Arc::new(Executor::new(ModelStore::from_env(), ComputeDevice::cpu()));
    let config = WorkerConfig {
        pool_url: url.clone(),
        ..WorkerConfig::default()
    };
    let error = support::first_refusal(config, key, executor, Arc::clone(&ledger)).await;
    assert!(error.contains("refusing to work for it"), "{error}");
    assert!(error.contains(&real.0), "{error}");
    assert_eq!(pool.leases.load(Ordering::SeqCst), 0, "it never leased");
    let pinned: Option<hearth_protocol::PublicKey> =
        ledger.setting(&worker::pool_key_pin_setting(&url)).unwrap();
    assert_eq!(pinned, Some(real), "the pin is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_pool_is_survived_and_pays_nothing() {
    let pool = Arc::new(FakePool {
        key: KeyPair::generate().unwrap(),
        leases: AtomicU32::new(0),
    });
    let url = serve(&pool).await;

    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(&dir.path().join("ledger")).unwrap());
    let key = worker::load_or_create_identity(&dir.path().join("node.key")).unwrap();
    let executor = Arc::new(Executor::new(ModelStore::from_env(), ComputeDevice::cpu()));
    let (_pause, paused) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let config = WorkerConfig {
        pool_url: url,
        lease_wait: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = tokio::spawn(worker::run(
        config,
        key,
        executor,
        Arc::clone(&ledger),
        paused,
        stop,
        None,
        move |event| {
            if let WorkerEvent::JobEnded(job) = event {
                let _ = ended_tx.send(job);
            }
        },
    ));
    let mut records = Vec::new();
    while records.len() < 3 {
        let job = tokio::time::timeout(Duration::from_secs(60), ended.recv())
            .await
            .expect("the worker kept going")
            .unwrap();
        records.push(job);
    }
    // It went on leasing after all that.
    tokio::time::timeout(Duration::from_secs(10), async {
        while pool.leases.load(Ordering::SeqCst) < 8 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("leasing continues");
    assert!(!worker.is_finished());
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let get = |id: &str| ledger.job(id).unwrap().unwrap();
    let unknown = get("unknown-model");
    assert_eq!(unknown.status, JobStatus::Failed);
    assert!(
        unknown.note.as_deref().unwrap().contains("gpt-9-ultra"),
        "{unknown:?}"
    );
    let forged = get("forged-receipt");
    assert_eq!(forged.status, JobStatus::Completed);
    assert!(forged.receipt.is_none());
    assert_eq!(forged.micro_credits, 0);
    assert!(
        forged.note.as_deref().unwrap().contains("receipt refused"),
        "{forged:?}"
    );
    let vanished = get("pool-vanishes");
    assert_eq!(vanished.status, JobStatus::Failed);
    assert!(
        vanished
            .note
            .as_deref()
            .unwrap()
            .contains("result not delivered"),
        "{vanished:?}"
    );
    assert_eq!(ledger.chain_head().unwrap(), None);
    assert_eq!(ledger.totals_between(0, u64::MAX).unwrap().micro_credits, 0);
}
