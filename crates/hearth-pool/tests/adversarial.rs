//! The pool against nodes and customers who lie on purpose, over real HTTP on loopback. Every
//! test checks the money: what a dishonest node is paid (nothing), what an honest one is paid
//! (exactly the price of the units the pool counted), and what the customer is told.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::time::Duration;

use hearth_pool::{Pool, PoolConfig};
use hearth_protocol::{
    Heartbeat, Job, KeyPair, PROTOCOL_VERSION, Registration, RegistrationReply, RequestSigner,
    ResultReply, SessionSecret, TaskOutput, TaskPayload,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::{
    CHAT_MODEL, CHAT_TEXT, EMBEDDING_MODEL, KEY, Node, answer, chat_token_ids, customer, meter,
    now_ms, pool, unit_vector,
};

/// Micro-credits the pool owes `node`.
async fn paid(pool: &Pool, node: &Node) -> u64 {
    pool.state()
        .store
        .balances()
        .await
        .unwrap()
        .into_iter()
        .find(|(id, _)| id == node.signer.node_id())
        .map_or(0, |(_, b)| b)
}

async fn strikes(pool: &Pool, node: &Node) -> u32 {
    pool.state()
        .nodes
        .record(node.signer.node_id())
        .await
        .unwrap()
        .strikes
}

/// The price of `units` of `model` at the pool's prices.
fn price(pool: &Pool, model: &str, units: u64) -> u64 {
    pool.state().config.model(model).unwrap().price(units)
}

/// A change a dishonest node makes to an honest answer.
type Lie = dyn Fn(&mut TaskOutput);

async fn refused(node: &Node, job: &Job, output: TaskOutput) -> Value {
    let response = node.submit(job, output).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 422, "{body}");
    body
}

fn embed_request(texts: &[&str]) -> Value {
    json!({ "model": EMBEDDING_MODEL, "input": texts })
}

fn chat_request(stream: bool) -> Value {
    json!({ "model": CHAT_MODEL, "stream": stream, "max_tokens": 32,
            "messages": [{"role": "user", "content": "Say hello"}] })
}

#[tokio::test]
async fn inflated_token_counts_are_refused_and_the_customer_is_billed_the_true_count() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let liar = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let texts: Vec<String> = (0..16).map(|i| format!("word {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let request = tokio::spawn(customer(&url, "/v1/embeddings", embed_request(&refs)));

    // The attack that was paid 1,374,389,535 micro-credits: u32::MAX tokens per text.
    let job = liar.lease(2000).await.remove(0);
    let TaskOutput::Embeddings { vectors, .. } = answer(&job) else {
        unreachable!()
    };
    let body = refused(
        &liar,
        &job,
        TaskOutput::Embeddings {
            vectors: vectors.clone(),
            tokens: vec![u32::MAX; 16],
        },
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token counts")
    );
    // One token too many is as wrong as four billion.
    let job = liar.lease(2000).await.remove(0);
    let TaskOutput::Embeddings { mut tokens, .. } = answer(&job) else {
        unreachable!()
    };
    tokens[0] += 1;
    refused(&liar, &job, TaskOutput::Embeddings { vectors, tokens }).await;
    assert_eq!(paid(&pool, &liar).await, 0);
    assert_eq!(strikes(&pool, &liar).await, 2);

    // An honest node gets the job and exactly the price of the true count.
    let honest = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let job = honest.lease(2000).await.remove(0);
    assert_eq!(honest.submit(&job, answer(&job)).await.status(), 200);
    let true_tokens: u64 = meter()
        .embedding_tokens(EMBEDDING_MODEL, &texts)
        .unwrap()
        .iter()
        .map(|&t| u64::from(t))
        .sum();
    assert_eq!(true_tokens, 16 * 4, "[CLS] word N [SEP]");
    assert_eq!(
        paid(&pool, &honest).await,
        price(&pool, EMBEDDING_MODEL, true_tokens)
    );
    let body: Value = request.await.unwrap().json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], true_tokens);
    assert_eq!(paid(&pool, &liar).await, 0);
}

#[tokio::test]
async fn chat_answers_whose_tokens_do_not_make_their_text_earn_nothing() {
    let (pool, _dir) = pool(|c| {
        c.max_attempts = 20;
        c.quarantine_strikes = 100;
    })
    .await;
    let url = pool.url();
    let liar = Node::join(&url, &[CHAT_MODEL]).await;
    let request = tokio::spawn(customer(&url, "/v1/chat/completions", chat_request(false)));
    let honest_ids = chat_token_ids();
    let end = *honest_ids.last().unwrap();
    let lies: Vec<(&str, Box<Lie>)> = vec![
        (
            "no tokens, 4096 claimed, an advert",
            Box::new(|o| {
                if let TaskOutput::Chat {
                    text,
                    token_ids,
                    completion_tokens,
                    ..
                } = o
                {
                    *text = "Visit example.com for cheap GPUs!".into();
                    token_ids.clear();
                    *completion_tokens = 4096;
                }
            }),
        ),
        (
            "real tokens, another text",
            Box::new(|o| {
                if let TaskOutput::Chat { text, .. } = o {
                    *text = "Visit example.com".into();
                }
            }),
        ),
        (
            "inflated completion count",
            Box::new(|o| {
                if let TaskOutput::Chat {
                    completion_tokens, ..
                } = o
                {
                    *completion_tokens = 4096;
                }
            }),
        ),
        (
            "prompt_tokens at u32::MAX (panicked the handler before)",
            Box::new(|o| {
                if let TaskOutput::Chat { prompt_tokens, .. } = o {
                    *prompt_tokens = u32::MAX;
                }
            }),
        ),
        (
            "more tokens than max_tokens",
            Box::new(|o| {
                if let TaskOutput::Chat {
                    token_ids,
                    completion_tokens,
                    ..
                } = o
                {
                    *token_ids = vec![28; 40];
                    *completion_tokens = 40;
                }
            }),
        ),
        (
            "tokens after the end of the turn",
            Box::new(move |o| {
                if let TaskOutput::Chat {
                    token_ids,
                    completion_tokens,
                    ..
                } = o
                {
                    token_ids.push(end);
                    *completion_tokens += 1;
                }
            }),
        ),
        (
            "an ended answer called length",
            Box::new(|o| {
                if let TaskOutput::Chat { finish_reason, .. } = o {
                    *finish_reason = "length".into();
                }
            }),
        ),
        (
            "token ids outside the vocabulary",
            Box::new(|o| {
                if let TaskOutput::Chat { token_ids, .. } = o {
                    token_ids[0] = u32::MAX;
                }
            }),
        ),
    ];
    for (what, lie) in &lies {
        let job = liar.lease(2000).await.remove(0);
        let mut output = answer(&job);
        lie(&mut output);
        let response = liar.submit(&job, output).await;
        assert_eq!(response.status(), 422, "{what}");
    }
    assert_eq!(paid(&pool, &liar).await, 0);
    assert_eq!(strikes(&pool, &liar).await, lies.len() as u32);

    let honest = Node::join(&url, &[CHAT_MODEL]).await;
    let job = honest.lease(2000).await.remove(0);
    assert_eq!(honest.submit(&job, answer(&job)).await.status(), 200);
    let units = honest_ids.len() as u64;
    assert_eq!(paid(&pool, &honest).await, price(&pool, CHAT_MODEL, units));
    let body: Value = request.await.unwrap().json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], CHAT_TEXT);
    assert_eq!(body["usage"]["completion_tokens"], units);
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(body["usage"]["total_tokens"], prompt + units);
    assert_eq!(paid(&pool, &liar).await, 0);
}

#[tokio::test]
async fn numbers_from_the_network_at_their_limits_never_panic_a_handler() {
    // A lease asking to wait u64::MAX ms waits the pool's longest, kept short here.
    let (pool, _dir) = pool(|c| c.max_lease_wait_ms = 200).await;
    let url = pool.url();
    let node = Node::join(&url, &[EMBEDDING_MODEL, CHAT_MODEL]).await;
    let raw = |path: &str, body: &str| {
        let body = body.as_bytes().to_vec();
        let path = path.to_owned();
        let node = &node;
        async move { Node::send(&node.http, &node.url, &node.signer, &path, body).await }
    };
    let extremes = [
        r#"{"max_jobs": 4294967295, "wait_ms": 18446744073709551615}"#,
        r#"{"max_jobs": -1, "wait_ms": 0}"#,
        r#"{"max_jobs": 1, "wait_ms": -5}"#,
        r#"{"max_jobs": NaN, "wait_ms": 0}"#,
        r#"{"max_jobs": 1e999, "wait_ms": 0}"#,
        r#"{"max_jobs": 18446744073709551616, "wait_ms": 0}"#,
    ];
    for body in extremes {
        let status = raw("/node/v1/lease", body).await.status().as_u16();
        assert!(status == 200 || status == 400, "{body}: {status}");
    }
    let results = [
        r#"{"lease_id": "x", "output": {"task": "chat", "text": "", "prompt_tokens": 4294967295, "completion_tokens": 4294967295, "token_ids": [4294967295], "finish_reason": "stop"}, "started_unix_ms": 18446744073709551615, "finished_unix_ms": 0, "energy_wh": 1e308, "energy_estimated": false}"#,
        r#"{"lease_id": "x", "output": {"task": "embeddings", "vectors": [[1e39]], "tokens": [-1]}, "started_unix_ms": 0, "finished_unix_ms": 0, "energy_wh": null, "energy_estimated": false}"#,
        r#"{"lease_id": "x", "output": {"task": "embeddings", "vectors": [[NaN]], "tokens": [1]}, "started_unix_ms": 0, "finished_unix_ms": 0, "energy_wh": null, "energy_estimated": false}"#,
    ];
    for body in results {
        let status = raw("/node/v1/jobs/job-none/result", body)
            .await
            .status()
            .as_u16();
        assert!(status == 400 || status == 404, "{body}: {status}");
    }
    let customers = [
        json!({"model": CHAT_MODEL, "max_tokens": 18446744073709551615u64, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": CHAT_MODEL, "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": CHAT_MODEL, "temperature": 1e300, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": CHAT_MODEL, "top_p": -0.0, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": CHAT_MODEL, "seed": -1, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "efficientnet-lite0", "images": ["AAAA"], "top_k": 4294967295u64}),
        json!({"model": "efficientnet-lite0", "images": ["AAAA"], "top_k": -3}),
    ];
    for body in customers {
        let path = if body["model"] == CHAT_MODEL {
            "/v1/chat/completions"
        } else {
            "/v1/images/classifications"
        };
        let status = customer(&url, path, body.clone()).await.status().as_u16();
        assert_eq!(status, 400, "{body}");
    }
    // A live job answered with extreme numbers: refused, nothing paid, the customer served
    // by the next answer.
    let request = tokio::spawn(customer(&url, "/v1/chat/completions", chat_request(false)));
    let job = node.lease(2000).await.remove(0);
    let mut output = answer(&job);
    if let TaskOutput::Chat {
        prompt_tokens,
        completion_tokens,
        ..
    } = &mut output
    {
        (*prompt_tokens, *completion_tokens) = (u32::MAX, u32::MAX);
    }
    refused(&node, &job, output).await;
    assert_eq!(paid(&pool, &node).await, 0);
    let job = node.lease(2000).await.remove(0);
    assert_eq!(node.submit(&job, answer(&job)).await.status(), 200);
    assert_eq!(request.await.unwrap().status(), 200);
    let health = reqwest::get(format!("{url}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn fresh_identities_cannot_vouch_for_each_other() {
    let seeds = [KeyPair::generate().unwrap(), KeyPair::generate().unwrap()];
    let seed_ids: Vec<String> = seeds
        .iter()
        .map(|k| hearth_protocol::node_id(&k.public_key()))
        .collect();
    let (pool, _dir) = pool(|c| {
        c.probation_jobs = 20;
        c.verification_share = 0.05;
        c.trusted_nodes = seed_ids.clone();
    })
    .await;
    let url = pool.url();
    let [s1, s2] = seeds;
    let seed1 = Node::join_as(&url, s1, &[EMBEDDING_MODEL], true).await;
    let seed2 = Node::join_as(&url, s2, &[EMBEDDING_MODEL], true).await;
    let colluder_a = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let colluder_b = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let request = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        embed_request(&["the truth"]),
    ));

    // The colluders' well-formed garbage: unit vectors, true token counts, wrong direction.
    let garbage = |job: &Job| {
        let TaskOutput::Embeddings { tokens, .. } = answer(job) else {
            unreachable!()
        };
        TaskOutput::Embeddings {
            vectors: vec![unit_vector(0.77)],
            tokens,
        }
    };
    let job = colluder_a.lease(2000).await.remove(0);
    let reply: ResultReply = colluder_a
        .submit(&job, garbage(&job))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        reply.pending_verification,
        "a new node's answers are all checked"
    );
    // The other fresh identity is never asked to check it.
    assert!(colluder_b.lease(300).await.is_empty());
    let check = seed1.lease(2000).await.remove(0);
    assert_eq!(check.id, job.id);
    seed1.submit(&check, answer(&check)).await;
    assert!(colluder_b.lease(300).await.is_empty());
    let decide = seed2.lease(2000).await.remove(0);
    assert_eq!(seed2.submit(&decide, answer(&decide)).await.status(), 200);

    let body: Value = request.await.unwrap().json().await.unwrap();
    assert_eq!(
        body["data"][0]["embedding"][0],
        f64::from(support::marker("the truth")),
        "the customer gets the seeds' answer, not the garbage"
    );
    assert_eq!(paid(&pool, &colluder_a).await, 0);
    assert_eq!(paid(&pool, &colluder_b).await, 0);
    assert_eq!(strikes(&pool, &colluder_a).await, 1);
    let tokens = 4; // [CLS] the truth [SEP]
    assert_eq!(
        paid(&pool, &seed1).await,
        price(&pool, EMBEDDING_MODEL, tokens)
    );
    assert_eq!(
        paid(&pool, &seed2).await,
        price(&pool, EMBEDDING_MODEL, tokens)
    );
}

#[tokio::test]
async fn a_new_key_takes_one_job_at_a_time_whatever_it_asks_for() {
    let (pool, _dir) = pool(|c| {
        c.probation_jobs = 20;
        c.embeddings_per_job = 1;
    })
    .await;
    let url = pool.url();
    let fresh = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let _request = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        embed_request(&["one", "two", "three"]),
    ));
    let reply = fresh
        .post(
            "/node/v1/lease",
            &hearth_protocol::LeaseRequest {
                max_jobs: 64,
                wait_ms: 2000,
                models: None,
            },
        )
        .await;
    let leased = reply
        .json::<hearth_protocol::LeaseReply>()
        .await
        .unwrap()
        .jobs;
    assert_eq!(leased.len(), 1, "one job for a node on probation");
    assert_eq!(pool.state().queue.counts().await.unwrap(), (2, 1));
}

#[tokio::test]
async fn a_streamed_chat_is_checked_after_the_stream_and_a_bad_one_earns_nothing() {
    let seed = KeyPair::generate().unwrap();
    let seed_id = hearth_protocol::node_id(&seed.public_key());
    let (pool, _dir) = pool(|c| {
        c.probation_jobs = 20;
        c.trusted_nodes = vec![seed_id.clone()];
    })
    .await;
    let url = pool.url();
    let scorer = Node::join_as(&url, seed, &[CHAT_MODEL], true).await;
    let fresh = Node::join(&url, &[CHAT_MODEL]).await;

    // A streamer whose final text is not what it streamed is refused; the customer, who read
    // the streamed part, gets an error rather than a second answer glued to it.
    let first_url = url.clone();
    let request = tokio::spawn(async move {
        customer(&first_url, "/v1/chat/completions", chat_request(true))
            .await
            .text()
            .await
            .unwrap()
    });
    let job = fresh.lease(2000).await.remove(0);
    let beat = |job: &Job, piece: &str| Heartbeat {
        lease_id: job.lease_id.clone(),
        text_delta: piece.into(),
    };
    fresh
        .post(
            &format!("/node/v1/jobs/{}/heartbeat", job.id),
            &beat(&job, "Buy now! "),
        )
        .await;
    let body = refused(&fresh, &job, answer(&job)).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("streamed")
    );
    let text = request.await.unwrap();
    assert!(text.contains("broke off"), "{text}");
    assert_eq!(paid(&pool, &fresh).await, 0);

    // An honest-looking stream: the customer has the whole text at once; the node is paid only
    // once the scorer's check holds, and here it does not.
    let request = tokio::spawn(async move {
        customer(&url, "/v1/chat/completions", chat_request(true))
            .await
            .text()
            .await
            .unwrap()
    });
    let job = fresh.lease(2000).await.remove(0);
    for piece in ["Hello", " there", "!"] {
        fresh
            .post(
                &format!("/node/v1/jobs/{}/heartbeat", job.id),
                &beat(&job, piece),
            )
            .await;
    }
    let reply: ResultReply = fresh.submit(&job, answer(&job)).await.json().await.unwrap();
    assert!(reply.pending_verification);
    let text = request.await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, CHAT_TEXT);
    assert_eq!(paid(&pool, &fresh).await, 0, "not paid before the check");

    let check = scorer.lease(2000).await.remove(0);
    let TaskPayload::ChatScore { token_ids, .. } = &check.task else {
        panic!("{:?}", check.task)
    };
    let ranks = vec![400; token_ids.len()];
    let scored = scorer.submit(&check, TaskOutput::ChatScore { ranks }).await;
    assert_eq!(scored.status(), 200);
    assert_eq!(paid(&pool, &fresh).await, 0);
    assert_eq!(strikes(&pool, &fresh).await, 2);
    assert_eq!(
        paid(&pool, &scorer).await,
        price(&pool, CHAT_MODEL, chat_token_ids().len() as u64),
        "the scorer is paid for scoring"
    );
    // Nothing is left queued: the customer already had the text.
    assert_eq!(pool.state().queue.counts().await.unwrap(), (0, 0));
    // Empty ranks are no evidence either.
    assert!(!hearth_pool::verify::chat_answer_holds(&[]));
}

/// A registration request made by hand, to send (and replay) exactly.
async fn registration_request(
    url: &str,
    key: &KeyPair,
    secret: &SessionSecret,
) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let registration = Registration {
        protocol_version: PROTOCOL_VERSION,
        challenge: support::challenge(url).await,
        public_key: key.public_key(),
        profile: hearth_protocol::HardwareProfile {
            backend: "cpu".into(),
            device: "test".into(),
            memory_bytes: 0,
            models: vec![EMBEDDING_MODEL.into()],
            matmul_gflops: None,
        },
        client: "test".into(),
        session_key: Some(secret.public()),
    };
    let body = serde_json::to_vec(&registration).unwrap();
    let signer = RequestSigner::new(KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap());
    let headers = signer
        .headers("POST", "/node/v1/register", now_ms(), &body)
        .to_vec();
    (body, headers)
}

async fn post_raw(
    url: &str,
    path: &str,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_replayed_registration_cannot_end_the_real_session() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let key = KeyPair::generate().unwrap();
    let secret = SessionSecret::generate().unwrap();
    let (body, headers) = registration_request(&url, &key, &secret).await;
    let first = post_raw(&url, "/node/v1/register", body.clone(), &headers).await;
    assert_eq!(first.status(), 200);
    let reply: RegistrationReply = first.json().await.unwrap();
    let mut signer = RequestSigner::new(KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap());
    signer
        .start_session(
            &secret,
            reply.session.as_ref().unwrap(),
            &reply.pool_public_key,
        )
        .unwrap();
    let node = Node {
        url: url.clone(),
        http: reqwest::Client::new(),
        signer,
        pool_key: reply.pool_public_key,
    };
    let request = tokio::spawn(customer(&url, "/v1/embeddings", embed_request(&["held"])));
    let job = node.lease(2000).await.remove(0);

    // The eavesdropper replays the registration byte for byte.
    let replay = post_raw(&url, "/node/v1/register", body, &headers).await;
    assert_eq!(replay.status(), 401);
    let text: Value = replay.json().await.unwrap();
    assert!(
        text["error"]["message"]
            .as_str()
            .unwrap()
            .contains("challenge")
    );
    // The real node's session and lease are untouched: it finishes and is paid.
    assert_eq!(node.submit(&job, answer(&job)).await.status(), 200);
    assert_eq!(paid(&pool, &node).await, price(&pool, EMBEDDING_MODEL, 3));
    assert_eq!(request.await.unwrap().status(), 200);
}

#[tokio::test]
async fn strikes_belong_to_the_key_quarantine_holds_its_earnings_and_restarts_forget_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool");
    let config = PoolConfig {
        api_keys: vec![KEY.into()],
        verification_share: 0.0,
        probation_jobs: 0,
        quarantine_strikes: 2,
        max_attempts: 10,
        ..PoolConfig::default()
    };
    let start = |config: PoolConfig| {
        let path = path.clone();
        async move {
            // The previous pool lets go of its database once its last request has ended.
            for _ in 0..100 {
                if let Ok(store) = hearth_pool::SledStore::open(&path) {
                    return Pool::start(config, std::sync::Arc::new(store), meter())
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the pool's database stayed locked");
        }
    };
    let pool = start(config.clone()).await;
    let url = pool.url();
    let key = KeyPair::generate().unwrap();
    let cheat = Node::join_as(
        &url,
        KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap(),
        &[EMBEDDING_MODEL],
        true,
    )
    .await;
    let honest = Node::join(&url, &[EMBEDDING_MODEL]).await;

    // An honest job first: earned, then the node starts cheating.
    let request = tokio::spawn(customer(&url, "/v1/embeddings", embed_request(&["one"])));
    let job = cheat.lease(2000).await.remove(0);
    assert_eq!(cheat.submit(&job, answer(&job)).await.status(), 200);
    request.await.unwrap();
    let earned = paid(&pool, &cheat).await;
    assert!(earned > 0);
    let request = tokio::spawn(customer(&url, "/v1/embeddings", embed_request(&["two"])));
    let job = cheat.lease(2000).await.remove(0);
    let bad = TaskOutput::Embeddings {
        vectors: vec![vec![1.0, 0.0]],
        tokens: vec![3],
    };
    refused(&cheat, &job, bad.clone()).await;
    // Registering again does not wash the strike away.
    let cheat = Node::join_as(
        &url,
        KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap(),
        &[EMBEDDING_MODEL],
        true,
    )
    .await;
    assert_eq!(strikes(&pool, &cheat).await, 1);
    let job = cheat.lease(2000).await.remove(0);
    refused(&cheat, &job, bad).await;
    // Quarantined: every request says why.
    let lease = cheat
        .post(
            "/node/v1/lease",
            &hearth_protocol::LeaseRequest {
                max_jobs: 1,
                wait_ms: 0,
                models: None,
            },
        )
        .await;
    assert_eq!(lease.status(), 403);
    let body: Value = lease.json().await.unwrap();
    assert_eq!(body["error"]["code"], "node_quarantined");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 results")
    );
    // The honest node does the job.
    let job = honest.lease(2000).await.remove(0);
    assert_eq!(honest.submit(&job, answer(&job)).await.status(), 200);
    assert_eq!(request.await.unwrap().status(), 200);

    // Earnings: the quarantined node's are held, the honest node's pending, then payable.
    let store = &pool.state().store;
    let now = now_ms();
    let report = hearth_pool::earnings(store.as_ref(), 3_600_000, now)
        .await
        .unwrap();
    let of = |id: &str| report.iter().find(|(n, _)| n == id).unwrap().1.clone();
    assert_eq!(of(cheat.signer.node_id()).held, earned);
    assert_eq!(of(cheat.signer.node_id()).payable, 0);
    let honest_paid = paid(&pool, &honest).await;
    assert_eq!(of(honest.signer.node_id()).pending, honest_paid);
    let later = hearth_pool::earnings(store.as_ref(), 3_600_000, now + 3_600_001)
        .await
        .unwrap();
    let later_of = |id: &str| later.iter().find(|(n, _)| n == id).unwrap().1.clone();
    assert_eq!(later_of(honest.signer.node_id()).payable, honest_paid);
    assert_eq!(later_of(cheat.signer.node_id()).payable, 0);
    let csv = hearth_pool::payout_csv(store.as_ref(), 0).await.unwrap();
    assert!(
        csv.contains(&format!("{},0,0,{earned}", cheat.signer.node_id())),
        "{csv}"
    );

    // An honest node that signs every request (no session) sends a lease request, which an
    // eavesdropper records.
    let signing_key = KeyPair::generate().unwrap();
    let signing = Node::join_as(
        &url,
        KeyPair::from_secret_bytes(&signing_key.secret_bytes()).unwrap(),
        &[EMBEDDING_MODEL],
        false,
    )
    .await;
    let lease_body = serde_json::to_vec(&hearth_protocol::LeaseRequest {
        max_jobs: 1,
        wait_ms: 0,
        models: None,
    })
    .unwrap();
    let recorded = signing
        .signer
        .headers("POST", "/node/v1/lease", now_ms(), &lease_body)
        .to_vec();
    let sent = post_raw(&url, "/node/v1/lease", lease_body.clone(), &recorded).await;
    assert_eq!(sent.status(), 200);
    // A restart forgets nothing: the key is still quarantined, even registering afresh.
    drop(pool);
    let pool = start(config).await;
    let url = pool.url();
    let secret = SessionSecret::generate().unwrap();
    let (body, headers) = registration_request(&url, &key, &secret).await;
    let again = post_raw(&url, "/node/v1/register", body, &headers).await;
    assert_eq!(again.status(), 403);
    assert_eq!(strikes(&pool, &cheat).await, 2);

    // The signing node registers with the new process; the recording made before the restart
    // (whose replay cache died with it) is refused, the node's own new requests are not.
    let signing = Node::join_as(&url, signing_key, &[EMBEDDING_MODEL], false).await;
    let replayed = post_raw(&url, "/node/v1/lease", lease_body.clone(), &recorded).await;
    assert_eq!(replayed.status(), 401);
    let text: Value = replayed.json().await.unwrap();
    assert!(
        text["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before this pool started")
    );
    let fresh = signing
        .signer
        .headers("POST", "/node/v1/lease", now_ms(), &lease_body)
        .to_vec();
    assert_eq!(
        post_raw(&url, "/node/v1/lease", lease_body, &fresh)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn identities_cost_a_challenge_and_registrations_are_rate_limited() {
    let (pool, _dir) = pool(|c| c.registrations_per_minute = 3).await;
    let url = pool.url();
    let key = KeyPair::generate().unwrap();
    let secret = SessionSecret::generate().unwrap();
    // A challenge is good for one registration.
    let (body, headers) = registration_request(&url, &key, &secret).await;
    assert_eq!(
        post_raw(&url, "/node/v1/register", body.clone(), &headers)
            .await
            .status(),
        200
    );
    let (_, _) = registration_request(&url, &key, &secret).await;
    let (_, _) = registration_request(&url, &key, &secret).await;
    // The fourth challenge within a minute from this address is refused.
    let http = reqwest::Client::new();
    let limited = http
        .post(format!("{url}/node/v1/challenge"))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // And a registration without a live challenge never registers.
    let stranger = KeyPair::generate().unwrap();
    let registration = json!({
        "protocol_version": PROTOCOL_VERSION, "challenge": "ch-made-up",
        "public_key": stranger.public_key(),
        "profile": {"backend": "cpu", "device": "t", "memory_bytes": 0, "models": [], "matmul_gflops": null},
        "client": "test",
    });
    let body = serde_json::to_vec(&registration).unwrap();
    let headers = RequestSigner::new(stranger)
        .headers("POST", "/node/v1/register", now_ms(), &body)
        .to_vec();
    assert_eq!(
        post_raw(&url, "/node/v1/register", body, &headers)
            .await
            .status(),
        401
    );
    assert_eq!(pool.state().nodes.len(), 1);
}

#[tokio::test]
async fn oversized_profiles_are_refused_and_unsold_models_ignored() {
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let many: Vec<String> = (0..1000).map(|i| format!("model-{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let key = KeyPair::generate().unwrap();
    let registration = Registration {
        protocol_version: PROTOCOL_VERSION,
        challenge: support::challenge(&url).await,
        public_key: key.public_key(),
        profile: hearth_protocol::HardwareProfile {
            backend: "cpu".into(),
            device: "x".into(),
            memory_bytes: 0,
            models: refs.iter().map(|s| s.to_string()).collect(),
            matmul_gflops: None,
        },
        client: "test".into(),
        session_key: None,
    };
    let body = serde_json::to_vec(&registration).unwrap();
    let headers = RequestSigner::new(key)
        .headers("POST", "/node/v1/register", now_ms(), &body)
        .to_vec();
    assert_eq!(
        post_raw(&url, "/node/v1/register", body, &headers)
            .await
            .status(),
        400
    );
    let node = Node::join(&url, &[EMBEDDING_MODEL, "not-sold-here"]).await;
    let info = pool
        .state()
        .nodes
        .get(node.signer.node_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.profile.models, [EMBEDDING_MODEL]);
}

#[tokio::test]
async fn results_for_another_nodes_lease_or_after_expiry_earn_nothing() {
    let (pool, _dir) = pool(|c| c.lease_ms = 300).await;
    let url = pool.url();
    let holder = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let thief = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let request = tokio::spawn(customer(&url, "/v1/embeddings", embed_request(&["mine"])));
    let job = holder.lease(2000).await.remove(0);
    // Another node quotes the holder's job and lease.
    let stolen = thief.submit(&job, answer(&job)).await;
    assert_eq!(stolen.status(), 409);
    assert_eq!(paid(&pool, &thief).await, 0);
    // The holder leases and never answers: the lease runs out and the thief (now honestly)
    // gets the job; the holder's late answer earns nothing.
    let again = thief.lease(3000).await.remove(0);
    assert_eq!(again.id, job.id);
    let late = holder.submit(&job, answer(&job)).await;
    assert_eq!(late.status(), 409);
    assert_eq!(thief.submit(&again, answer(&again)).await.status(), 200);
    assert_eq!(paid(&pool, &holder).await, 0);
    assert_eq!(paid(&pool, &thief).await, price(&pool, EMBEDDING_MODEL, 3));
    assert_eq!(request.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_full_queue_answers_at_once_and_one_deadline_covers_a_request() {
    let (pool, _dir) = pool(|c| {
        c.max_queued_jobs = 4;
        c.embeddings_per_job = 1;
        c.request_timeout_ms = 1000;
    })
    .await;
    let url = pool.url();
    let five = customer(
        &url,
        "/v1/embeddings",
        embed_request(&["a", "b", "c", "d", "e"]),
    )
    .await;
    assert_eq!(five.status(), 503);
    assert!(five.headers().contains_key("retry-after"));
    let body: Value = five.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queue is full")
    );
    assert_eq!(
        pool.state().queue.counts().await.unwrap(),
        (0, 0),
        "none of its jobs was queued"
    );
    // Four jobs fit; with no node they time out together, at the request's one deadline
    // (not one timeout per job in turn, which would be four).
    let started = std::time::Instant::now();
    let four = customer(&url, "/v1/embeddings", embed_request(&["a", "b", "c", "d"])).await;
    assert_eq!(four.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        pool.state().queue.counts().await.unwrap(),
        (0, 0),
        "its jobs were cancelled"
    );
}

/// Read from `stream` until the pool closes it (or 10 s pass); what it sent.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_idle_and_unauthenticated_connections_are_cut_off() {
    let (pool, _dir) = pool(|c| {
        c.header_timeout_ms = 300;
        c.body_timeout_ms = 300;
    })
    .await;
    let addr = pool.addr();
    let connect = || tokio::net::TcpStream::connect(addr);
    // Connected, never a byte.
    let mut silent = connect().await.unwrap();
    assert!(
        until_closed(&mut silent).await.is_some(),
        "an idle connection stays open"
    );
    // Half a header, then nothing.
    let mut half = connect().await.unwrap();
    half.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: pool\r\n")
        .await
        .unwrap();
    assert!(
        until_closed(&mut half).await.is_some(),
        "a half-sent head stays open"
    );
    // A body trickled a byte at a time is answered 408.
    let mut trickle = connect().await.unwrap();
    trickle
        .write_all(format!("POST /v1/embeddings HTTP/1.1\r\nHost: pool\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").as_bytes())
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
        }
        trickle
    });
    let mut trickle = writer.await.unwrap();
    let reply = until_closed(&mut trickle).await.unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    // A node route with a huge declared body and no credentials is refused before any of the
    // body is read.
    let mut unauthenticated = connect().await.unwrap();
    unauthenticated
        .write_all(
            b"POST /node/v1/lease HTTP/1.1\r\nHost: pool\r\nContent-Length: 100000000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(
        Duration::from_secs(10),
        unauthenticated.read_exact(&mut head),
    )
    .await
    .expect("answered without the body")
    .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    // A keep-alive connection left idle after a request is closed.
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: pool\r\n\r\n")
        .await
        .unwrap();
    let reply = until_closed(&mut idle).await.unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn wrong_methods_get_openai_errors() {
    let (pool, _dir) = pool(|_| {}).await;
    let response = reqwest::get(format!("{}/v1/embeddings", pool.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn the_operator_binary_helps_without_a_database_and_drains_on_sigterm() {
    let binary = env!("CARGO_BIN_EXE_hearth-pool");
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["payouts", "--help"],
        &[],
    ] {
        let output = std::process::Command::new(binary)
            .args(args)
            .env("XDG_DATA_HOME", home.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("hearth-pool"), "{args:?}: {text}");
    }
    assert!(
        std::fs::read_dir(home.path()).unwrap().next().is_none(),
        "help opened no database"
    );
    let unknown = std::process::Command::new(binary)
        .arg("launch")
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));

    let config = home.path().join("pool.toml");
    std::fs::write(
        &config,
        support::database_line().await
            + &format!(
                "bind = \"127.0.0.1:0\"\napi_keys = [\"{KEY}\"]\nlease_ms = 2000\nprobation_jobs = 0\nverification_share = 0.0\n"
            ),
    )
    .unwrap();
    let (mut serve, url) = support::serve_binary(&config, &home.path().join("data")).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    // A node holds a job; a second job waits in the queue; then SIGTERM.
    let node = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let held = tokio::spawn(customer(&url, "/v1/embeddings", embed_request(&["held"])));
    let job = node.lease(2000).await.remove(0);
    let waiting = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        embed_request(&["waiting"]),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &serve.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The waiting customer is told to retry at once; the held job still finishes and is paid.
    let waiting = waiting.await.unwrap();
    assert_eq!(waiting.status(), 503);
    assert!(waiting.headers().contains_key("retry-after"));
    let receipt = node.receipt(&job, answer(&job)).await;
    receipt.verify(&node.pool_key).unwrap();
    assert_eq!(held.await.unwrap().status(), 200);
    let status = tokio::time::timeout(Duration::from_secs(10), serve.wait())
        .await
        .expect("the pool exits after draining")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
