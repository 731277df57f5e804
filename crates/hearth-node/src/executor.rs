//! Runs a pool job with Hearth's models. Models load on first use and stay warm.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hearth_inference::chat::SMOLLM2_ID;
use hearth_inference::embeddings::MINILM_ID;
use hearth_inference::images::EFFICIENTNET_ID;
use hearth_inference::{
    CancelToken, ChatGenerator, ChatMessage, ComputeDevice, GenerationParams, ImageClassifier,
    InferenceError, ModelStore, TextEmbedder,
};
use hearth_protocol::{ClassScore, TaskOutput, TaskPayload};

/// What a job failed with.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("model {0} is not offered by this node")]
    UnknownModel(String),
    #[error("the job's input is unusable: {0}")]
    BadInput(String),
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// Loads and runs the models on one compute device.
#[derive(Debug)]
pub struct Executor {
    store: ModelStore,
    device: ComputeDevice,
    embedder: Mutex<Option<Arc<TextEmbedder>>>,
    classifier: Mutex<Option<Arc<ImageClassifier>>>,
    chat: Mutex<Option<Arc<ChatGenerator>>>,
}

/// Load once, keep, hand out shared.
fn warm<T>(
    slot: &Mutex<Option<Arc<T>>>,
    load: impl FnOnce() -> Result<T, InferenceError>,
) -> Result<Arc<T>, InferenceError> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(model) = slot.as_ref() {
        return Ok(Arc::clone(model));
    }
    let model = Arc::new(load()?);
    *slot = Some(Arc::clone(&model));
    Ok(model)
}

impl Executor {
    /// Models from `store`, run on `device`.
    pub fn new(store: ModelStore, device: ComputeDevice) -> Self {
        Self {
            store,
            device,
            embedder: Mutex::new(None),
            classifier: Mutex::new(None),
            chat: Mutex::new(None),
        }
    }

    /// Model ids this node can run: those whose weights are present (their hashes are checked
    /// when they load, not a second time here).
    pub fn available_models(&self) -> Vec<String> {
        [MINILM_ID, SMOLLM2_ID, EFFICIENTNET_ID]
            .into_iter()
            .filter(|id| self.store.is_present(id))
            .map(str::to_owned)
            .collect()
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
        match task {
            TaskPayload::Embeddings { texts } if model == MINILM_ID => {
                let embedder = warm(&self.embedder, || {
                    TextEmbedder::load(&self.store, MINILM_ID, self.device.clone())
                })?;
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let out = embedder.embed(&refs)?;
                Ok(TaskOutput::Embeddings {
                    vectors: out.vectors,
                    tokens: out.tokens.into_iter().map(|t| t as u32).collect(),
                })
            }
            TaskPayload::ImageClassification { images, top_k } if model == EFFICIENTNET_ID => {
                let classifier = warm(&self.classifier, || {
                    ImageClassifier::load(&self.store, EFFICIENTNET_ID, self.device.clone())
                })?;
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
            TaskPayload::Chat { messages, params } if model == SMOLLM2_ID => {
                let chat = warm(&self.chat, || {
                    ChatGenerator::load(&self.store, SMOLLM2_ID, &self.device)
                })?;
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
            TaskPayload::ChatScore {
                messages,
                token_ids,
            } if model == SMOLLM2_ID => {
                let chat = warm(&self.chat, || {
                    ChatGenerator::load(&self.store, SMOLLM2_ID, &self.device)
                })?;
                let ranks = chat.score_tokens(&to_messages(messages)?, token_ids)?;
                Ok(TaskOutput::ChatScore { ranks })
            }
            _ => Err(ExecError::UnknownModel(model.to_owned())),
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
