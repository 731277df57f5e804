//! The embedded pool: what the desktop app starts by default, so a fresh install does real
//! work at once. It listens on 127.0.0.1 (a free port), calls itself "Local demo pool", and
//! comes with a demo customer that sends a steady, realistic mix of embeddings, chat and image
//! requests through the same OpenAI-compatible HTTP API a real customer uses. Credits earned
//! here are demo credits: the pool says so to every node (`demo: true`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use hearth_inference::ModelStore;

use crate::queue::random_id;
use crate::{Meter, ModelOffer, Pool, PoolConfig, SledStore, StartError, TaskKind};

/// Photos the demo customer has classified (public domain, from scikit-image).
const DEMO_IMAGES: [&[u8]; 2] = [
    include_bytes!("../../hearth-inference/fixtures/chelsea.png"),
    include_bytes!("../../hearth-inference/fixtures/coffee.png"),
];

/// Texts the demo customer has embedded: the kind of snippets a search index holds.
const DEMO_TEXTS: &[&str] = &[
    "How do I reset my router to factory settings?",
    "Best practices for storing sourdough starter in the fridge.",
    "The quarterly report shows revenue grew 12% year over year.",
    "Symptoms of dehydration include headache, fatigue and dizziness.",
    "Kubernetes pods restart when the liveness probe fails repeatedly.",
    "A gentle introduction to linear algebra for machine learning.",
    "Train timetable changes for the winter holidays.",
    "Recipe: roasted pumpkin soup with ginger and coconut milk.",
    "The museum opens a new exhibition of early photography on Friday.",
    "Customer asked whether the warranty covers accidental damage.",
    "Tips for keeping houseplants alive through a dark winter.",
    "Error 0x80070005 means access is denied when installing updates.",
];

/// Questions the demo customer asks the chat model.
const DEMO_QUESTIONS: &[&str] = &[
    "Give me three ideas for a rainy Sunday afternoon.",
    "What is the difference between weather and climate?",
    "Write a two-line poem about a warm fireplace.",
    "How do I boil an egg so the yolk stays soft?",
    "Explain what a graphics card does, in one paragraph.",
    "Suggest a name for a friendly robot vacuum.",
];

/// What the demo customer has done so far.
#[derive(Debug, Default)]
pub struct DemoStats {
    pub sent: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// A running embedded pool (and its demo customer). Dropping it stops both.
#[derive(Debug)]
pub struct EmbeddedPool {
    pool: Pool,
    api_key: String,
    stats: Arc<DemoStats>,
    customer: Option<tokio::task::JoinHandle<()>>,
}

impl EmbeddedPool {
    /// The pool's URL on loopback.
    pub fn url(&self) -> String {
        self.pool.url()
    }

    /// The pool itself.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The key the demo customer (or a local script) uses.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The demo customer's counters.
    pub fn demo_stats(&self) -> &Arc<DemoStats> {
        &self.stats
    }
}

impl Drop for EmbeddedPool {
    fn drop(&mut self) {
        if let Some(customer) = self.customer.take() {
            customer.abort();
        }
    }
}

/// Start the local demo pool with its database in `data_dir`, selling the models of `models`
/// that it can meter, and the demo customer sending a request every `pace` (one at a time)
/// when `pace` is given.
pub async fn start(
    data_dir: &Path,
    models: &ModelStore,
    pace: Option<Duration>,
) -> Result<EmbeddedPool, StartError> {
    start_from(data_dir, models, pace, PoolConfig::default()).await
}

/// [`start`] from `base` (e.g. a release to announce): the demo pool's own settings (its name,
/// its key, no verification) replace those of `base`.
pub async fn start_from(
    data_dir: &Path,
    models: &ModelStore,
    pace: Option<Duration>,
    base: PoolConfig,
) -> Result<EmbeddedPool, StartError> {
    let api_key = random_id("sk-local-");
    let mut config = PoolConfig {
        name: "Local demo pool".into(),
        demo: true,
        api_keys: vec![api_key.clone()],
        // The demo customer waits for the node that is this very app: no hurry, no
        // verification (there is no second node to check against, and the node is the
        // owner's own machine).
        request_timeout_ms: 600_000,
        verification_share: 0.0,
        probation_jobs: 0,
        ..base
    };
    let (meter, unmetered) = Meter::load(models, &config.models);
    for (model, reason) in &unmetered {
        tracing::warn!(%model, %reason, "the demo pool does not offer this model");
    }
    config.models = meter.offers().to_vec();
    let store = Arc::new(SledStore::open(&data_dir.join("local-pool.sled"))?);
    let pool = Pool::start(config, store, Arc::new(meter)).await?;
    let stats = Arc::new(DemoStats::default());
    let offers = pool.state().config.models.clone();
    let customer = pace.map(|pace| {
        tokio::spawn(demo_customer(
            pool.url(),
            api_key.clone(),
            offers,
            pace,
            Arc::clone(&stats),
        ))
    });
    Ok(EmbeddedPool {
        pool,
        api_key,
        stats,
        customer,
    })
}

/// The demo mix: half embeddings, a third chat, a sixth images.
const DEMO_MIX: [TaskKind; 6] = [
    TaskKind::Embeddings,
    TaskKind::Chat,
    TaskKind::Embeddings,
    TaskKind::ImageClassification,
    TaskKind::Embeddings,
    TaskKind::Chat,
];

/// The `n`-th request of the demo mix among the models `offers` sells, each kind's models in
/// turn: the endpoint and the body. A kind the pool does not sell is skipped for the next in
/// the mix; `None` when it sells nothing.
pub fn demo_request(n: u64, offers: &[ModelOffer]) -> Option<(&'static str, Value)> {
    let pick = |list: &[&'static str], k: u64| list[(k as usize) % list.len()];
    let (kind, models) = (0..DEMO_MIX.len()).find_map(|i| {
        let kind = DEMO_MIX[(n as usize + i) % DEMO_MIX.len()];
        let models: Vec<&str> = offers
            .iter()
            .filter(|o| o.task == kind)
            .map(|o| o.id.as_str())
            .collect();
        (!models.is_empty()).then_some((kind, models))
    })?;
    let round = n / DEMO_MIX.len() as u64;
    let model = models[round as usize % models.len()];
    Some(match kind {
        TaskKind::Embeddings => {
            let texts: Vec<&str> = (0..4).map(|i| pick(DEMO_TEXTS, n + i * 5)).collect();
            ("/v1/embeddings", json!({ "model": model, "input": texts }))
        }
        TaskKind::Chat => (
            "/v1/chat/completions",
            json!({
                "model": model,
                "messages": [{ "role": "user", "content": pick(DEMO_QUESTIONS, round) }],
                "max_tokens": 64,
                "temperature": 0.7,
            }),
        ),
        TaskKind::ImageClassification => (
            "/v1/images/classifications",
            json!({
                "model": model,
                "images": [BASE64.encode(DEMO_IMAGES[round as usize % DEMO_IMAGES.len()])],
                "top_k": 3,
            }),
        ),
    })
}

async fn demo_customer(
    url: String,
    api_key: String,
    offers: Vec<ModelOffer>,
    pace: Duration,
    stats: Arc<DemoStats>,
) {
    let http = reqwest::Client::new();
    let mut n = 0u64;
    loop {
        let Some((path, body)) = demo_request(n, &offers) else {
            tracing::warn!("the demo pool sells no model: the demo customer has nothing to ask");
            return;
        };
        n += 1;
        stats.sent.fetch_add(1, Ordering::Relaxed);
        let outcome = http
            .post(format!("{url}{path}"))
            .bearer_auth(&api_key)
            .json(&body)
            .send()
            .await;
        match outcome {
            Ok(response) if response.status().is_success() => {
                stats.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(status = %response.status(), path, "demo request failed");
            }
            Err(error) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, path, "demo request failed");
            }
        }
        tokio::time::sleep(pace).await;
    }
}
