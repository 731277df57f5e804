//! Shared by the pool's tests: a pool on loopback, scripted nodes that sign their requests and
//! answer jobs with honest test outputs (what the pool's own tokenizers count), and a customer
//! helper.
//!
//! The pool's state is in sled, or with `HEARTH_TEST_POOL_DATABASE=postgres` in a fresh
//! database on the test PostgreSQL server (`HEARTH_TEST_DATABASE_URL`, started by the README's
//! test command, which runs the pool's suites once per backend).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use std::sync::{Arc, OnceLock};

use hearth_pool::{Meter, PgStore, Pool, PoolConfig, PoolStore, SledStore};
use hearth_protocol::{
    Challenge, ClassScore, HardwareProfile, Job, JobResult, KeyPair, LeaseReply, LeaseRequest,
    PROTOCOL_VERSION, PublicKey, Registration, RegistrationReply, RequestSigner, SessionSecret,
    SignedReceipt, TaskOutput, TaskPayload,
};
use serde_json::Value;

pub const KEY: &str = "sk-test-customer";
pub const CHAT_MODEL: &str = "smollm2-135m-instruct";
pub const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";
/// What the scripted nodes answer every chat with.
pub const CHAT_TEXT: &str = "Hello there!";
/// Length of the embedding model's vectors.
pub const DIMENSIONS: usize = 384;

/// The pool's tokenizers, loaded once per test binary (from the fetched model files).
pub fn meter() -> Arc<Meter> {
    static METER: OnceLock<Arc<Meter>> = OnceLock::new();
    Arc::clone(METER.get_or_init(|| {
        let store = hearth_inference::ModelStore::from_env();
        let (meter, missing) = Meter::load(&store, &[]);
        assert!(
            missing.is_empty(),
            "model files missing (run `hearth-models fetch`): {missing:?}"
        );
        Arc::new(meter)
    }))
}

/// A pool on loopback; every node is trusted from its first job unless the test sets
/// `probation_jobs`, and nothing is verified unless it sets a share.
pub async fn pool(tweak: impl FnOnce(&mut PoolConfig)) -> (Pool, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PoolConfig {
        api_keys: vec![KEY.into()],
        verification_share: 0.0,
        probation_jobs: 0,
        ..PoolConfig::default()
    };
    tweak(&mut config);
    let store = test_store(dir.path()).await;
    (Pool::start(config, store, meter()).await.unwrap(), dir)
}

/// Whether this run keeps the pools' state in PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("HEARTH_TEST_POOL_DATABASE").is_ok_and(|b| b == "postgres")
}

/// The store this run's backend gives: sled in `dir`, or a fresh PostgreSQL database.
pub async fn test_store(dir: &std::path::Path) -> Arc<dyn PoolStore> {
    if on_postgres() {
        let store = PgStore::connect(&scratch_database().await, 16)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        Arc::new(store)
    } else {
        Arc::new(SledStore::open(&dir.join("pool")).unwrap())
    }
}

/// The config line that puts a `hearth-pool` process's state on this run's backend (empty
/// for sled, which lives in its `--data` folder).
pub async fn database_line() -> String {
    if on_postgres() {
        format!("database = \"{}\"\n", scratch_database().await)
    } else {
        String::new()
    }
}

/// A new, empty database on the test server; its URL.
pub async fn scratch_database() -> String {
    let server = std::env::var("HEARTH_TEST_DATABASE_URL").expect(
        "HEARTH_TEST_DATABASE_URL is not set: run the tests with scripts/dev.sh test, which starts PostgreSQL",
    );
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
            .await
            .expect("the test PostgreSQL server does not answer");
    tokio::spawn(connection);
    let name = hearth_pool::queue::random_id("hearth_test_");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    format!("{server}/{name}")
}

/// A unit vector of the embedding model's length whose first value is `first` (in 0..1).
pub fn unit_vector(first: f32) -> Vec<f32> {
    let mut v = vec![0.0; DIMENSIONS];
    v[0] = first;
    v[1] = (1.0 - first * first).sqrt();
    v
}

/// The first value of the scripted nodes' vector for `text`: it tells texts apart.
pub fn marker(text: &str) -> f32 {
    text.len() as f32 / 1000.0
}

/// The token ids of [`CHAT_TEXT`] followed by the end of the turn.
pub fn chat_token_ids() -> Vec<u32> {
    let meter = meter();
    let mut ids = meter.chat_token_ids(CHAT_MODEL, CHAT_TEXT).unwrap();
    ids.extend(meter.chat_token_ids(CHAT_MODEL, "<|im_end|>").unwrap());
    ids
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A fresh registration challenge from the pool at `url`.
pub async fn challenge(url: &str) -> String {
    let reply = reqwest::Client::new()
        .post(format!("{url}/node/v1/challenge"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    reply.json::<Challenge>().await.unwrap().challenge
}

/// A scripted node.
pub struct Node {
    pub url: String,
    pub http: reqwest::Client,
    pub signer: RequestSigner,
    pub pool_key: PublicKey,
}

impl Node {
    /// Register and agree on a session, as Hearth's node does: requests carry a MAC.
    pub async fn join(url: &str, models: &[&str]) -> Self {
        Self::join_with(url, models, true).await
    }

    /// Register without a session: every request is signed.
    pub async fn join_signing(url: &str, models: &[&str]) -> Self {
        Self::join_with(url, models, false).await
    }

    async fn join_with(url: &str, models: &[&str], session: bool) -> Self {
        Self::join_as(url, KeyPair::generate().unwrap(), models, session).await
    }

    /// Register with `key` (a fresh challenge each time).
    pub async fn join_as(url: &str, key: KeyPair, models: &[&str], session: bool) -> Self {
        let secret = session.then(|| SessionSecret::generate().unwrap());
        let http = reqwest::Client::new();
        let registration = Registration {
            protocol_version: PROTOCOL_VERSION,
            challenge: challenge(url).await,
            public_key: key.public_key(),
            profile: HardwareProfile {
                backend: "cpu".into(),
                device: "test".into(),
                memory_bytes: 1 << 30,
                models: models.iter().map(|m| m.to_string()).collect(),
                matmul_gflops: None,
            },
            client: "test".into(),
            session_key: secret.as_ref().map(SessionSecret::public),
        };
        let mut signer = RequestSigner::new(key);
        let body = serde_json::to_vec(&registration).unwrap();
        let reply: RegistrationReply = Self::send(&http, url, &signer, "/node/v1/register", body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(reply.node_id, signer.node_id());
        if let Some(secret) = &secret {
            let grant = reply.session.as_ref().expect("the pool grants a session");
            signer
                .start_session(secret, grant, &reply.pool_public_key)
                .unwrap();
        }
        assert_eq!(signer.has_session(), session);
        Self {
            url: url.to_owned(),
            http,
            signer,
            pool_key: reply.pool_public_key,
        }
    }

    pub async fn send(
        http: &reqwest::Client,
        url: &str,
        signer: &RequestSigner,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = http.post(format!("{url}{path}")).body(body.clone());
        for (name, value) in signer.headers("POST", path, now_ms(), &body) {
            request = request.header(name, value);
        }
        request
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> reqwest::Response {
        Self::send(
            &self.http,
            &self.url,
            &self.signer,
            path,
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// POST a signed request to `url` (this node's pool process or another); `None` when the
    /// process cannot be reached, refuses, or does not answer within 5 s (a node then moves on).
    pub async fn try_post<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Option<T> {
        let body = serde_json::to_vec(body).unwrap();
        let mut request = self
            .http
            .post(format!("{url}{path}"))
            .timeout(std::time::Duration::from_secs(5))
            .body(body.clone());
        for (name, value) in self.signer.headers("POST", path, now_ms(), &body) {
            request = request.header(name, value);
        }
        let response = request.send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    pub async fn lease(&self, wait_ms: u64) -> Vec<Job> {
        let reply = self
            .post(
                "/node/v1/lease",
                &LeaseRequest {
                    max_jobs: 1,
                    wait_ms,
                    models: None,
                },
            )
            .await;
        assert_eq!(reply.status(), 200);
        reply.json::<LeaseReply>().await.unwrap().jobs
    }

    pub async fn submit(&self, job: &Job, output: TaskOutput) -> reqwest::Response {
        let result = JobResult {
            lease_id: job.lease_id.clone(),
            output,
            started_unix_ms: now_ms(),
            finished_unix_ms: now_ms(),
            energy_wh: Some(0.001),
            energy_estimated: true,
            next: None,
        };
        self.post(&format!("/node/v1/jobs/{}/result", job.id), &result)
            .await
    }

    /// Submit `output` for `job` and take the receipt the pool answers with (accepted, paid at
    /// once).
    pub async fn receipt(&self, job: &Job, output: TaskOutput) -> SignedReceipt {
        let response = self.submit(job, output).await;
        assert_eq!(response.status(), 200);
        response
            .json::<hearth_protocol::ResultReply>()
            .await
            .unwrap()
            .receipt
            .expect("a receipt at once")
    }
}

/// A node's report of `job` with its honest [`answer`], asking for no next job.
pub fn honest_result(job: &Job) -> JobResult {
    JobResult {
        lease_id: job.lease_id.clone(),
        output: answer(job),
        started_unix_ms: now_ms(),
        finished_unix_ms: now_ms(),
        energy_wh: None,
        energy_estimated: false,
        next: None,
    }
}

/// An honest answer for a job: unit vectors with the texts' true token counts, a chat answer
/// whose token ids decode to its text, with the prompt's true length.
pub fn answer(job: &Job) -> TaskOutput {
    let meter = meter();
    match &job.task {
        TaskPayload::Embeddings { texts } => TaskOutput::Embeddings {
            vectors: texts.iter().map(|t| unit_vector(marker(t))).collect(),
            tokens: meter.embedding_tokens(&job.model, texts).unwrap(),
        },
        TaskPayload::Chat { messages, .. } => {
            let token_ids = chat_token_ids();
            TaskOutput::Chat {
                text: CHAT_TEXT.into(),
                prompt_tokens: meter.prompt_tokens(&job.model, messages).unwrap(),
                completion_tokens: token_ids.len() as u32,
                token_ids,
                finish_reason: "stop".into(),
            }
        }
        TaskPayload::ChatScore { token_ids, .. } => TaskOutput::ChatScore {
            ranks: vec![0; token_ids.len()],
        },
        TaskPayload::ImageClassification { images, .. } => TaskOutput::ImageClassification {
            results: images
                .iter()
                .map(|_| {
                    vec![ClassScore {
                        class: 285,
                        label: "Egyptian cat".into(),
                        probability: 0.9,
                    }]
                })
                .collect(),
        },
    }
}

pub fn customer(
    url: &str,
    path: &str,
    body: Value,
) -> impl Future<Output = reqwest::Response> + use<> {
    let request = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(KEY)
        .json(&body);
    async move { request.send().await.unwrap() }
}

/// `hearth-pool serve --config CONFIG --data DATA` as a process of its own, and the URL it
/// prints once it listens.
pub async fn serve_binary(
    config: &std::path::Path,
    data: &std::path::Path,
) -> (tokio::process::Child, String) {
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearth-pool"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(serve.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    (serve, url)
}
