//! The pool over real HTTP on loopback, with scripted nodes: a node here is this test signing
//! requests with its own key and answering jobs with test outputs (the real models run in the
//! node runtime's tests). Checked: the job flow and receipts, leases that expire, returns,
//! duplicate results, signatures, and OpenAI-shaped errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::time::Duration;

use hearth_pool::{Meter, Pool, PoolConfig};
use hearth_protocol::{
    HEADER_MAC, HEADER_SIGNATURE, Heartbeat, KeyPair, LeaseReply, LeaseRequest, RequestSigner,
    ResultReply, ReturnJob, SignedReceipt, TaskOutput,
};
use serde_json::{Value, json};

mod support;

use support::{KEY, Node, answer, chat_token_ids, customer, marker, meter, now_ms, pool};

#[tokio::test]
async fn embeddings_flow_through_two_nodes_and_each_is_paid_with_a_chained_receipt() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let a = Node::join(&url, &["all-minilm-l6-v2"]).await;
    let b = Node::join(&url, &["all-minilm-l6-v2"]).await;
    let texts: Vec<String> = (0..40).map(|i| format!("sentence number {i}")).collect();
    let request = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        json!({ "model": "all-minilm-l6-v2", "input": texts }),
    ));

    // 40 texts → jobs of 16, 16 and 8, leased one at a time by the two nodes in turn.
    let mut receipts = Vec::new();
    let mut done = 0;
    while done < 3 {
        for node in [&a, &b] {
            for job in node.lease(200).await {
                let receipt = node.receipt(&job, answer(&job)).await;
                receipt.verify(&node.pool_key).unwrap();
                receipts.push((node.signer.node_id().to_owned(), receipt));
                done += 1;
            }
        }
    }
    let response = request.await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 40);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        // The first value marks the text: order survived the split.
        assert_eq!(item["embedding"][0], f64::from(marker(&texts[i])));
    }
    // The pool bills the tokens its own tokenizer counts.
    let tokens: u64 = meter()
        .embedding_tokens("all-minilm-l6-v2", &texts)
        .unwrap()
        .iter()
        .map(|&t| u64::from(t))
        .sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);

    // Each node's receipts form a chain.
    for node in [&a, &b] {
        let mine: Vec<&SignedReceipt> = receipts
            .iter()
            .filter(|(id, _)| id == node.signer.node_id())
            .map(|(_, r)| r)
            .collect();
        let mut previous = None;
        for receipt in mine {
            receipt.follows(previous).unwrap();
            previous = Some(receipt);
        }
    }
    let total: u64 = receipts
        .iter()
        .map(|(_, r)| r.receipt.payment.micro_credits)
        .sum();
    let balances = pool.state().store.balances().await.unwrap();
    assert_eq!(balances.iter().map(|(_, b)| b).sum::<u64>(), total);
}

#[tokio::test]
async fn a_repeated_result_gets_the_same_receipt_and_pays_nothing_more() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let node = Node::join(&url, &["efficientnet-lite0"]).await;
    let request = tokio::spawn(customer(
        &url,
        "/v1/images/classifications",
        json!({ "model": "efficientnet-lite0", "images": ["iVBORw0KGgo=", "iVBORw0KGgo="], "top_k": 3 }),
    ));
    let job = node.lease(2000).await.remove(0);
    let first = node.receipt(&job, answer(&job)).await;
    assert_eq!(first.receipt.payment.units, 2);
    assert_eq!(first.receipt.payment.micro_credits, 100);
    let again = node.submit(&job, answer(&job)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<ResultReply>().await.unwrap().receipt,
        Some(first)
    );
    assert_eq!(
        pool.state().store.balances().await.unwrap(),
        vec![(node.signer.node_id().to_owned(), 100)]
    );
    let body: Value = request.await.unwrap().json().await.unwrap();
    assert_eq!(body["data"][1]["labels"][0]["label"], "Egyptian cat");
    assert_eq!(body["usage"]["images"], 2);
}

#[tokio::test]
async fn an_expired_lease_goes_to_another_node_and_the_late_result_is_refused() {
    let (pool, _dir) = pool(|c| c.lease_ms = 300).await;
    let url = pool.url();
    let slow = Node::join(&url, &["smollm2-135m-instruct"]).await;
    let fast = Node::join(&url, &["smollm2-135m-instruct"]).await;
    let request = tokio::spawn(customer(
        &url,
        "/v1/chat/completions",
        json!({ "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}] }),
    ));
    let job = slow.lease(2000).await.remove(0);
    // The slow node goes quiet; after the lease the job is offered again.
    let again = fast.lease(3000).await.remove(0);
    assert_eq!(again.id, job.id);
    assert_ne!(again.lease_id, job.lease_id);
    let late = slow.submit(&job, answer(&job)).await;
    assert_eq!(late.status(), 409);
    let late: Value = late.json().await.unwrap();
    assert_eq!(late["error"]["type"], "conflict_error");
    assert_eq!(fast.submit(&again, answer(&again)).await.status(), 200);
    let body: Value = request.await.unwrap().json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(body["usage"]["completion_tokens"], chat_token_ids().len());
}

#[tokio::test]
async fn a_returned_job_is_leased_again_and_too_many_lost_leases_fail_the_request() {
    let (pool, _dir) = pool(|c| {
        c.lease_ms = 200;
        c.max_attempts = 2;
    })
    .await;
    let url = pool.url();
    let node = Node::join(&url, &["all-minilm-l6-v2"]).await;
    let request = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        json!({ "model": "all-minilm-l6-v2", "input": "hello" }),
    ));
    // Given back twice (a game started): no penalty, it comes back each time.
    for _ in 0..2 {
        let job = node.lease(2000).await.remove(0);
        let reply = node
            .post(
                &format!("/node/v1/jobs/{}/return", job.id),
                &ReturnJob {
                    lease_id: job.lease_id.clone(),
                    reason: "game started".into(),
                },
            )
            .await;
        assert_eq!(reply.status(), 200);
    }
    // Then lost twice: the customer gets a 503 in OpenAI's shape.
    for _ in 0..2 {
        let job = node.lease(2000).await.remove(0);
        let beat = node
            .post(
                &format!("/node/v1/jobs/{}/heartbeat", job.id),
                &Heartbeat {
                    lease_id: job.lease_id.clone(),
                    text_delta: String::new(),
                },
            )
            .await;
        assert_eq!(beat.status(), 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let response = request.await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lost 2 leases")
    );
}

/// A job that every node hands back (a damaged model, a node pausing over and over) costs no
/// attempt, but its hand-backs are counted: after `max_handbacks` the customer's request ends
/// with an error instead of waiting for ever. A node that narrows its lease to other models
/// is not offered the job meanwhile.
#[tokio::test]
async fn a_job_handed_back_too_often_ends_and_a_narrowed_lease_skips_it() {
    let (pool, _dir) = pool(|c| c.max_handbacks = 3).await;
    let url = pool.url();
    let node = Node::join(&url, &["all-minilm-l6-v2", "smollm2-135m-instruct"]).await;
    let request = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        json!({ "model": "all-minilm-l6-v2", "input": "hello" }),
    ));
    // Narrowed to the chat model (the embedder's files failed their check): no job comes.
    let narrowed = node
        .post(
            "/node/v1/lease",
            &LeaseRequest {
                max_jobs: 1,
                wait_ms: 300,
                models: Some(vec!["smollm2-135m-instruct".into()]),
            },
        )
        .await;
    assert_eq!(narrowed.status(), 200);
    assert!(narrowed.json::<LeaseReply>().await.unwrap().jobs.is_empty());
    for _ in 0..3 {
        let job = node.lease(2000).await.remove(0);
        let reply = node
            .post(
                &format!("/node/v1/jobs/{}/return", job.id),
                &ReturnJob {
                    lease_id: job.lease_id.clone(),
                    reason: "this node's copy of all-minilm-l6-v2 is damaged".into(),
                },
            )
            .await;
        assert_eq!(reply.status(), 200);
    }
    let response = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the request ends")
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "nodes handed the job back 3 times without an answer; retry later"
    );
    assert_eq!(pool.state().queue.counts().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn streamed_chat_arrives_as_openai_chunks() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let node = Node::join(&url, &["smollm2-135m-instruct"]).await;
    let request = tokio::spawn(async move {
        let response = customer(
            &url,
            "/v1/chat/completions",
            json!({ "model": "smollm2-135m-instruct", "stream": true,
                    "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "Hi"}] }),
        )
        .await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        response.text().await.unwrap()
    });
    let job = node.lease(2000).await.remove(0);
    for piece in ["Hello", " there", "!"] {
        let beat = node
            .post(
                &format!("/node/v1/jobs/{}/heartbeat", job.id),
                &Heartbeat {
                    lease_id: job.lease_id.clone(),
                    text_delta: piece.into(),
                },
            )
            .await;
        assert_eq!(beat.status(), 200);
    }
    assert_eq!(node.submit(&job, answer(&job)).await.status(), 200);
    let text = request.await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello there!");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(
        chunks[chunks.len() - 1]["usage"]["completion_tokens"],
        chat_token_ids().len()
    );
}

/// Hand-made node requests to the lease route, for checking what the pool refuses.
struct RawLease {
    http: reqwest::Client,
    url: String,
}

impl RawLease {
    const PATH: &str = "/node/v1/lease";

    fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
        }
    }

    /// A lease request body asking for `max_jobs`.
    fn body(max_jobs: u32) -> Vec<u8> {
        serde_json::to_vec(&LeaseRequest {
            max_jobs,
            wait_ms: 0,
            models: None,
        })
        .unwrap()
    }

    async fn send(&self, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{}", self.url, Self::PATH))
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await.unwrap()
    }

    /// Send, expect 401, and return the pool's reason.
    async fn refused(&self, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> String {
        let reply = self.send(headers, body).await;
        assert_eq!(reply.status(), 401);
        let body: Value = reply.json().await.unwrap();
        body["error"]["message"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn node_requests_need_a_valid_fresh_signature() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let node = Node::join_signing(&url, &["all-minilm-l6-v2"]).await;
    let raw = RawLease::new(&url);
    let (path, body) = (RawLease::PATH, RawLease::body(1));

    // No headers at all.
    assert!(raw.refused(vec![], body.clone()).await.contains("missing"));
    // Signed, then the body changed.
    let headers = node.signer.headers("POST", path, now_ms(), &body).to_vec();
    assert!(
        raw.refused(headers, RawLease::body(9))
            .await
            .contains("bad signature")
    );
    // A stranger's key under this node's id.
    let stranger = RequestSigner::new(KeyPair::generate().unwrap());
    let mut headers = stranger.headers("POST", path, now_ms(), &body).to_vec();
    headers[0].1 = node.signer.node_id().to_owned();
    assert!(
        raw.refused(headers, body.clone())
            .await
            .contains("bad signature")
    );
    // An hour old.
    let headers = node
        .signer
        .headers("POST", path, now_ms() - 3_600_000, &body)
        .to_vec();
    assert!(raw.refused(headers, body.clone()).await.contains("ms from"));
    // A good request works once; replayed, it is refused.
    let headers = node.signer.headers("POST", path, now_ms(), &body).to_vec();
    assert_eq!(raw.send(headers.clone(), body.clone()).await.status(), 200);
    assert!(
        raw.refused(headers, body.clone())
            .await
            .contains("replayed")
    );
    // An unregistered node.
    let headers = stranger.headers("POST", path, now_ms(), &body).to_vec();
    assert!(raw.refused(headers, body).await.contains("register"));
}

#[tokio::test]
async fn a_session_macs_requests_and_refuses_forged_or_foreign_macs() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let node = Node::join(&url, &["all-minilm-l6-v2"]).await;
    let other = Node::join(&url, &["all-minilm-l6-v2"]).await;
    let signing = Node::join_signing(&url, &["all-minilm-l6-v2"]).await;
    let raw = RawLease::new(&url);
    let (path, body) = (RawLease::PATH, RawLease::body(1));

    // The MAC replaces the signature and works, once.
    let headers = node.signer.headers("POST", path, now_ms(), &body).to_vec();
    assert_eq!(headers[3].0, HEADER_MAC);
    assert_eq!(raw.send(headers.clone(), body.clone()).await.status(), 200);
    assert!(
        raw.refused(headers, body.clone())
            .await
            .contains("replayed")
    );
    // The body changed under the MAC.
    let headers = node.signer.headers("POST", path, now_ms(), &body).to_vec();
    assert!(
        raw.refused(headers, RawLease::body(9))
            .await
            .contains("bad MAC")
    );
    // Another node's session key under this node's id.
    let mut headers = other.signer.headers("POST", path, now_ms(), &body).to_vec();
    headers[0].1 = node.signer.node_id().to_owned();
    assert!(raw.refused(headers, body.clone()).await.contains("bad MAC"));
    // A MAC for a node that never agreed on a session.
    let mut headers = node.signer.headers("POST", path, now_ms(), &body).to_vec();
    headers[0].1 = signing.signer.node_id().to_owned();
    assert!(
        raw.refused(headers, body.clone())
            .await
            .contains("no session")
    );
    // A session node may still sign.
    let signed =
        RequestSigner::new(KeyPair::from_secret_bytes(&node.signer.key().secret_bytes()).unwrap());
    let headers = signed.headers("POST", path, now_ms(), &body).to_vec();
    assert_eq!(headers[3].0, HEADER_SIGNATURE);
    assert_eq!(raw.send(headers, body.clone()).await.status(), 200);

    // A registration offering a malformed or low-order session key is refused as such.
    for bad in [
        "not base64!",
        "AAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ] {
        let key = KeyPair::generate().unwrap();
        let registration = json!({
            "protocol_version": hearth_protocol::PROTOCOL_VERSION,
            "challenge": support::challenge(&url).await,
            "public_key": key.public_key(),
            "profile": {"backend": "cpu", "device": "t", "memory_bytes": 0, "models": [], "matmul_gflops": null},
            "client": "test",
            "session_key": bad,
        });
        let body = serde_json::to_vec(&registration).unwrap();
        let signer = RequestSigner::new(key);
        let mut request = raw
            .http
            .post(format!("{url}/node/v1/register"))
            .body(body.clone());
        for (name, value) in signer.headers("POST", "/node/v1/register", now_ms(), &body) {
            request = request.header(name, value);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), 400, "{bad}");
        let text: Value = reply.json().await.unwrap();
        assert!(
            text["error"]["message"]
                .as_str()
                .unwrap()
                .contains("session_key"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn customer_mistakes_get_openai_errors_and_nothing_is_queued() {
    let (pool, _dir) = pool(|c| c.body_limit_bytes = 64 * 1024).await;
    let url = pool.url();
    let http = reqwest::Client::new();
    let check = |response: reqwest::Response, status: u16, kind: &'static str| async move {
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], kind, "{body}");
        body
    };

    let no_key = http
        .post(format!("{url}/v1/embeddings"))
        .json(&json!({"model": "all-minilm-l6-v2", "input": "x"}))
        .send()
        .await
        .unwrap();
    let body = check(no_key, 401, "authentication_error").await;
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let malformed = http
        .post(format!("{url}/v1/embeddings"))
        .bearer_auth(KEY)
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    check(malformed, 400, "invalid_request_error").await;

    let unknown = customer(
        &url,
        "/v1/embeddings",
        json!({"model": "gpt-9", "input": "x"}),
    )
    .await;
    let body = check(unknown, 404, "not_found_error").await;
    assert_eq!(body["error"]["code"], "model_not_found");

    let huge = "x".repeat(100 * 1024);
    let too_big = customer(
        &url,
        "/v1/embeddings",
        json!({"model": "all-minilm-l6-v2", "input": huge}),
    )
    .await;
    check(too_big, 413, "invalid_request_error").await;

    let wizard = customer(
        &url,
        "/v1/chat/completions",
        json!({"model": "smollm2-135m-instruct", "messages": [{"role": "wizard", "content": "hi"}]}),
    )
    .await;
    let body = check(wizard, 400, "invalid_request_error").await;
    assert_eq!(body["error"]["param"], "messages[0].role");

    let zero = customer(
        &url,
        "/v1/chat/completions",
        json!({"model": "smollm2-135m-instruct", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    check(zero, 400, "invalid_request_error").await;

    let wrong_endpoint = customer(
        &url,
        "/v1/embeddings",
        json!({"model": "smollm2-135m-instruct", "input": "x"}),
    )
    .await;
    check(wrong_endpoint, 400, "invalid_request_error").await;

    let nowhere = customer(&url, "/v1/completions", json!({})).await;
    check(nowhere, 404, "not_found_error").await;

    assert_eq!(
        pool.state().queue.counts().await.unwrap(),
        (0, 0),
        "nothing was queued"
    );

    assert_eq!(
        model_ids(&url).await,
        [
            "all-minilm-l6-v2",
            "efficientnet-lite0",
            "smollm2-135m-instruct"
        ]
    );
}

#[tokio::test]
async fn a_result_of_the_wrong_shape_is_refused_and_counted_against_the_node() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let node = Node::join(&url, &["all-minilm-l6-v2"]).await;
    let _request = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        json!({ "model": "all-minilm-l6-v2", "input": ["a", "b"] }),
    ));
    let job = node.lease(2000).await.remove(0);
    let short = TaskOutput::Embeddings {
        vectors: vec![vec![1.0]],
        tokens: vec![1],
    };
    let response = node.submit(&job, short).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        pool.state()
            .nodes
            .record(node.signer.node_id())
            .await
            .unwrap()
            .strikes,
        1
    );
    assert!(
        pool.state().store.balances().await.unwrap().is_empty(),
        "nothing paid"
    );
    // The job is offered again.
    let again = node.lease(2000).await.remove(0);
    assert_eq!(again.id, job.id);
}

#[tokio::test]
async fn a_model_added_by_its_manifest_alone_is_sold_at_its_price() {
    // The added model: all-MiniLM-L6-v2's manifest under another id and price, with the file
    // the pool meters it by. No code names it.
    let shipped = hearth_inference::ModelStore::from_env();
    let models = tempfile::tempdir().unwrap();
    let folder = models.path().join("minilm-added");
    std::fs::create_dir_all(folder.join("weights")).unwrap();
    let manifest = std::fs::read_to_string(shipped.root().join("all-minilm-l6-v2/manifest.toml"))
        .unwrap()
        .replace("id = \"all-minilm-l6-v2\"", "id = \"minilm-added\"")
        .replace(
            "micro_credits_per_unit = 20",
            "micro_credits_per_unit = 7000",
        );
    std::fs::write(folder.join("manifest.toml"), manifest).unwrap();
    std::fs::copy(
        shipped
            .root()
            .join("all-minilm-l6-v2/weights/tokenizer.json"),
        folder.join("weights/tokenizer.json"),
    )
    .unwrap();
    let (meter, missing) = Meter::load(&hearth_inference::ModelStore::new(models.path()), &[]);
    assert!(missing.is_empty(), "{missing:?}");
    let data = tempfile::tempdir().unwrap();
    let config = PoolConfig {
        api_keys: vec![KEY.into()],
        verification_share: 0.0,
        probation_jobs: 0,
        ..PoolConfig::default()
    };
    let store = support::test_store(data.path()).await;
    let pool = Pool::start(config, store, std::sync::Arc::new(meter))
        .await
        .unwrap();
    let url = pool.url();

    assert_eq!(model_ids(&url).await, ["minilm-added"]);

    let node = Node::join(&url, &["minilm-added"]).await;
    let texts = vec!["a model added by its manifest".to_owned()];
    let request = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        json!({ "model": "minilm-added", "input": texts }),
    ));
    let job = loop {
        if let Some(job) = node.lease(200).await.pop() {
            break job;
        }
    };
    let tokens = pool
        .state()
        .meter
        .embedding_tokens("minilm-added", &texts)
        .unwrap();
    let output = TaskOutput::Embeddings {
        vectors: vec![support::unit_vector(marker(&texts[0]))],
        tokens: tokens.clone(),
    };
    let receipt = node.receipt(&job, output).await;
    assert_eq!(request.await.unwrap().status(), 200);
    // Paid at the manifest's price: 7000 micro-credits per 1000 tokens, a started thousand
    // rounded up.
    let units = u64::from(tokens[0]);
    assert_eq!(receipt.receipt.payment.units, units);
    assert_eq!(
        receipt.receipt.payment.micro_credits,
        (units * 7000).div_ceil(1000)
    );
}

/// The ids `GET /v1/models` lists, in its order.
async fn model_ids(url: &str) -> Vec<String> {
    let models: Value = reqwest::Client::new()
        .get(format!("{url}/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}
