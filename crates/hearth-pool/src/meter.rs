//! What the pool counts for itself, so that it pays for what it can check and never for what a
//! node says: input tokens of embeddings by the pool's own copy of the model's tokenizer, chat
//! prompts by the model's own template, and a chat answer's tokens replayed into its text.
//!
//! The tokenizers come from the same verified model files the nodes run
//! ([`hearth_inference::ModelStore`]); no weights are loaded. The meter also keeps what it
//! read of each model sold, its manifest and where its files are, which the pool hands to
//! nodes that lack them (`/node/v1/models`, `/node/v1/files/{sha256}`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

use hearth_inference::{
    ChatTemplate, EmbeddingTokenizer, FinishReason, Manifest, ModelStore, Role,
};
use hearth_protocol::{ChatMessage, ChatParams};

use crate::config::ModelOffer;
use hearth_protocol::TaskKind;

/// The pool's own units for one job, fixed when the customer's request comes in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metered {
    /// Tokens of each text, as the model reads them.
    Embeddings { tokens: Vec<u32> },
    /// Tokens of the prompt; the answer's tokens are counted from the result.
    Chat { prompt_tokens: u32 },
    /// Images in the job.
    Images { count: u32 },
}

impl Metered {
    /// Units billed that are known from the request alone (embeddings and images).
    pub fn input_units(&self) -> u64 {
        match self {
            Metered::Embeddings { tokens } => tokens.iter().map(|&t| u64::from(t)).sum(),
            Metered::Chat { .. } => 0,
            Metered::Images { count } => u64::from(*count),
        }
    }
}

/// The checked figures of a chat answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatCount {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

enum ModelMeter {
    Embeddings(EmbeddingTokenizer),
    Chat(ChatTemplate),
    Images,
}

/// Why a model cannot be metered, or a request or answer does not count up.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("the pool cannot meter model {0}")]
    Unmetered(String),
    #[error("{model} is not {kind} model")]
    WrongKind { model: String, kind: &'static str },
    #[error("offered for {offered}, but its manifest says {manifest}")]
    OfferTask {
        offered: TaskKind,
        manifest: TaskKind,
    },
    /// The model's files or the text (a tokenizer's or template's refusal, an unknown role).
    #[error(transparent)]
    Model(#[from] hearth_inference::InferenceError),
    #[error(
        "the prompt is {prompt} tokens; the model's context window is {context}, so nothing is left to answer with"
    )]
    PromptTooLong { prompt: usize, context: usize },
    #[error("{tokens} answer tokens for a limit of {max}")]
    AnswerTokens { tokens: usize, max: usize },
    #[error("completion_tokens {claimed} but {actual} token ids")]
    CompletionCount { claimed: u32, actual: u32 },
    #[error("prompt_tokens {claimed}, the prompt has {actual}")]
    PromptCount { claimed: u32, actual: u32 },
    #[error("the text is not what the token ids decode to")]
    TextMismatch,
    #[error("the answer stops after {tokens} of {max} tokens without an end")]
    NoEnd { tokens: usize, max: usize },
    #[error("finish reason {claimed:?}, the tokens say {expected:?}")]
    FinishReason {
        claimed: String,
        expected: &'static str,
    },
}

/// A model file the pool hands to nodes: where it is in the pool's model store, and its size
/// (from the manifest; the node checks the hash of what it receives).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedFile {
    pub path: PathBuf,
    pub size: u64,
}

/// The tokenizer that counts `offer`'s units, checked against its manifest.
fn meter_for(store: &ModelStore, offer: &ModelOffer) -> Result<(ModelMeter, Manifest), MeterError> {
    let manifest = store.manifest(&offer.id)?;
    if manifest.task != offer.task {
        return Err(MeterError::OfferTask {
            offered: offer.task,
            manifest: manifest.task,
        });
    }
    let loaded = match offer.task {
        TaskKind::Embeddings => {
            EmbeddingTokenizer::load(store, &offer.id).map(ModelMeter::Embeddings)
        }
        TaskKind::Chat => ChatTemplate::load(store, &offer.id).map(ModelMeter::Chat),
        TaskKind::ImageClassification => Ok(ModelMeter::Images),
    };
    Ok((loaded?, manifest))
}

/// Tokenizers of every model the pool sells, and the offers they make up.
pub struct Meter {
    models: HashMap<String, ModelMeter>,
    offers: Vec<ModelOffer>,
    /// The manifests of the models metered, by id.
    manifests: Vec<Manifest>,
    /// Their files, by sha256.
    files: HashMap<String, ServedFile>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Meter {
    /// Tokenizers for `offers` from `store`, or, when `offers` is empty, for every model of
    /// `store` whose manifest states a price (offered at that price). Each model that cannot be
    /// metered (its files are missing or damaged, its manifest says another task) is left out
    /// and named with the reason.
    pub fn load(store: &ModelStore, offers: &[ModelOffer]) -> (Self, Vec<(String, MeterError)>) {
        let mut missing = Vec::new();
        let offers = if offers.is_empty() {
            match store.list() {
                Ok(manifests) => manifests
                    .into_iter()
                    .filter_map(|m| {
                        Some(ModelOffer {
                            micro_credits_per_unit: m.price?.micro_credits_per_unit,
                            id: m.id,
                            task: m.task,
                        })
                    })
                    .collect(),
                Err(error) => {
                    missing.push((store.root().display().to_string(), error.into()));
                    Vec::new()
                }
            }
        } else {
            offers.to_vec()
        };
        let mut models = HashMap::new();
        let mut metered = Vec::new();
        let mut manifests = Vec::new();
        let mut files = HashMap::new();
        for offer in offers {
            match meter_for(store, &offer) {
                Ok((meter, manifest)) => {
                    models.insert(offer.id.clone(), meter);
                    metered.push(offer);
                    let weights = store.model_dir(&manifest.id).join("weights");
                    for file in &manifest.files {
                        files.insert(
                            file.sha256.to_ascii_lowercase(),
                            ServedFile {
                                path: weights.join(&file.name),
                                size: file.size,
                            },
                        );
                    }
                    manifests.push(manifest);
                }
                Err(error) => missing.push((offer.id.clone(), error)),
            }
        }
        (
            Self {
                models,
                offers: metered,
                manifests,
                files,
            },
            missing,
        )
    }

    /// The manifests of the models this meter covers.
    pub fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    /// The file of a model sold whose sha256 is `sha256` (lower-case hex).
    pub fn file(&self, sha256: &str) -> Option<&ServedFile> {
        self.files.get(sha256)
    }

    /// The models this meter covers, with their prices.
    pub fn offers(&self) -> &[ModelOffer] {
        &self.offers
    }

    /// Whether model `id` can be metered.
    pub fn covers(&self, id: &str) -> bool {
        self.models.contains_key(id)
    }

    fn model(&self, id: &str) -> Result<&ModelMeter, MeterError> {
        self.models
            .get(id)
            .ok_or_else(|| MeterError::Unmetered(id.to_owned()))
    }

    /// Tokens of each text as embedding model `model` reads them; an error names a text the
    /// model would refuse (empty, too long).
    pub fn embedding_tokens(&self, model: &str, texts: &[String]) -> Result<Vec<u32>, MeterError> {
        match self.model(model)? {
            ModelMeter::Embeddings(tokenizer) => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                Ok(tokenizer.count(&texts)?)
            }
            _ => Err(wrong_kind(model, "an embedding")),
        }
    }

    /// Length of embedding model `model`'s vectors.
    pub fn embedding_dimensions(&self, model: &str) -> Option<usize> {
        match self.models.get(model)? {
            ModelMeter::Embeddings(tokenizer) => Some(tokenizer.dimensions()),
            _ => None,
        }
    }

    /// Tokens of the prompt chat model `model` reads for `messages`.
    pub fn prompt_tokens(&self, model: &str, messages: &[ChatMessage]) -> Result<u32, MeterError> {
        let ModelMeter::Chat(template) = self.model(model)? else {
            return Err(wrong_kind(model, "a chat"));
        };
        let messages = to_inference(messages)?;
        let prompt = template.prompt_tokens(&messages)?;
        if prompt.len() >= template.context() {
            return Err(MeterError::PromptTooLong {
                prompt: prompt.len(),
                context: template.context(),
            });
        }
        Ok(prompt.len() as u32)
    }

    /// Check a chat answer against what the model's tokenizer makes of its `token_ids`: no
    /// more tokens than asked for, the text exactly what the tokens decode to (cut at a stop
    /// string as generation cuts it), the finish reason the one the tokens give, and the
    /// node's counts equal to the pool's. Returns the pool's counts, or what disagrees.
    #[allow(clippy::too_many_arguments)] // the answer's fields as the node sent them
    pub fn check_chat(
        &self,
        model: &str,
        params: &ChatParams,
        prompt_tokens: u32,
        text: &str,
        token_ids: &[u32],
        claimed_prompt_tokens: u32,
        claimed_completion_tokens: u32,
        finish_reason: &str,
    ) -> Result<ChatCount, MeterError> {
        let ModelMeter::Chat(template) = self.model(model)? else {
            return Err(wrong_kind(model, "a chat"));
        };
        let max = params.max_tokens as usize;
        if token_ids.is_empty() || token_ids.len() > max {
            return Err(MeterError::AnswerTokens {
                tokens: token_ids.len(),
                max,
            });
        }
        let completion_tokens = token_ids.len() as u32;
        if claimed_completion_tokens != completion_tokens {
            return Err(MeterError::CompletionCount {
                claimed: claimed_completion_tokens,
                actual: completion_tokens,
            });
        }
        if claimed_prompt_tokens != prompt_tokens {
            return Err(MeterError::PromptCount {
                claimed: claimed_prompt_tokens,
                actual: prompt_tokens,
            });
        }
        let (replayed, finish) = template.replay(token_ids, &params.stop)?;
        if replayed != text {
            return Err(MeterError::TextMismatch);
        }
        let context_full = prompt_tokens as usize + token_ids.len() >= template.context();
        let expected = match finish {
            FinishReason::Stop => "stop",
            FinishReason::Length if token_ids.len() == max || context_full => "length",
            FinishReason::Length | FinishReason::Cancelled => {
                return Err(MeterError::NoEnd {
                    tokens: token_ids.len(),
                    max,
                });
            }
        };
        if finish_reason != expected {
            return Err(MeterError::FinishReason {
                claimed: finish_reason.to_owned(),
                expected,
            });
        }
        Ok(ChatCount {
            prompt_tokens,
            completion_tokens,
        })
    }

    /// The token ids of `text` under chat model `model`'s tokenizer, for tests and tools that
    /// play a node.
    pub fn chat_token_ids(&self, model: &str, text: &str) -> Result<Vec<u32>, MeterError> {
        match self.model(model)? {
            ModelMeter::Chat(template) => Ok(template.tokenizer().encode(text)?),
            _ => Err(wrong_kind(model, "a chat")),
        }
    }
}

fn wrong_kind(model: &str, kind: &'static str) -> MeterError {
    MeterError::WrongKind {
        model: model.to_owned(),
        kind,
    }
}

fn to_inference(
    messages: &[ChatMessage],
) -> Result<Vec<hearth_inference::ChatMessage>, MeterError> {
    messages
        .iter()
        .map(|m| {
            Ok(hearth_inference::ChatMessage {
                role: Role::from_str(&m.role)?,
                content: m.content.clone(),
            })
        })
        .collect()
}
