//! Shared by the pool's tests: a pool on loopback, scripted nodes that sign their requests and
//! answer jobs with test outputs, and a customer helper.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use std::sync::Arc;

use hearth_pool::{Pool, PoolConfig, SledStore};
use hearth_protocol::{
    ClassScore, HardwareProfile, Job, JobResult, KeyPair, LeaseReply, LeaseRequest,
    PROTOCOL_VERSION, PublicKey, Registration, RegistrationReply, RequestSigner, SessionSecret,
    TaskOutput, TaskPayload,
};
use serde_json::Value;

pub const KEY: &str = "sk-test-customer";

pub async fn pool(tweak: impl FnOnce(&mut PoolConfig)) -> (Pool, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PoolConfig {
        api_keys: vec![KEY.into()],
        // Tests that want verification ask for it.
        verification_share: 0.0,
        ..PoolConfig::default()
    };
    tweak(&mut config);
    let store = Arc::new(SledStore::open(&dir.path().join("pool")).unwrap());
    (Pool::start(config, store).await.unwrap(), dir)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
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
        let key = KeyPair::generate().unwrap();
        let secret = session.then(|| SessionSecret::generate().unwrap());
        let registration = Registration {
            protocol_version: PROTOCOL_VERSION,
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
        let http = reqwest::Client::new();
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

    async fn send(
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

    pub async fn lease(&self, wait_ms: u64) -> Vec<Job> {
        let reply = self
            .post(
                "/node/v1/lease",
                &LeaseRequest {
                    max_jobs: 1,
                    wait_ms,
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
}

/// A plausible answer for a job: 4-dimensional unit vectors, token counts from word counts.
pub fn answer(job: &Job) -> TaskOutput {
    match &job.task {
        TaskPayload::Embeddings { texts } => TaskOutput::Embeddings {
            vectors: texts
                .iter()
                .map(|t| vec![t.len() as f32, 0.0, 0.0, 1.0])
                .collect(),
            tokens: texts
                .iter()
                .map(|t| t.split(' ').count() as u32 + 2)
                .collect(),
        },
        TaskPayload::Chat { .. } => TaskOutput::Chat {
            text: "Hello there!".into(),
            prompt_tokens: 20,
            completion_tokens: 4,
            token_ids: vec![1, 2, 3, 4],
            finish_reason: "stop".into(),
        },
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
