//! What the pool counts for itself, so that it pays for what it can check and never for what a
//! node says: input tokens of embeddings by the pool's own copy of the model's tokenizer, chat
//! prompts by the model's own template, and a chat answer's tokens replayed into its text.
//!
//! The tokenizers come from the same verified model files the nodes run
//! ([`hearth_inference::ModelStore`]); no weights are loaded.

use std::collections::HashMap;
use std::str::FromStr;

use hearth_inference::{ChatTemplate, EmbeddingTokenizer, FinishReason, ModelStore, Role};
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

/// The tokenizer that counts `offer`'s units, checked against its manifest.
fn meter_for(store: &ModelStore, offer: &ModelOffer) -> Result<ModelMeter, String> {
    let manifest = store.manifest(&offer.id).map_err(|e| e.to_string())?;
    if manifest.task != offer.task {
        return Err(format!(
            "offered for {}, but its manifest says {}",
            offer.task, manifest.task
        ));
    }
    let loaded = match offer.task {
        TaskKind::Embeddings => {
            EmbeddingTokenizer::load(store, &offer.id).map(ModelMeter::Embeddings)
        }
        TaskKind::Chat => ChatTemplate::load(store, &offer.id).map(ModelMeter::Chat),
        TaskKind::ImageClassification => Ok(ModelMeter::Images),
    };
    loaded.map_err(|e| e.to_string())
}

/// Tokenizers of every model the pool sells, and the offers they make up.
pub struct Meter {
    models: HashMap<String, ModelMeter>,
    offers: Vec<ModelOffer>,
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
    pub fn load(store: &ModelStore, offers: &[ModelOffer]) -> (Self, Vec<(String, String)>) {
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
                    missing.push((store.root().display().to_string(), error.to_string()));
                    Vec::new()
                }
            }
        } else {
            offers.to_vec()
        };
        let mut models = HashMap::new();
        let mut metered = Vec::new();
        for offer in offers {
            match meter_for(store, &offer) {
                Ok(meter) => {
                    models.insert(offer.id.clone(), meter);
                    metered.push(offer);
                }
                Err(error) => missing.push((offer.id.clone(), error)),
            }
        }
        (
            Self {
                models,
                offers: metered,
            },
            missing,
        )
    }

    /// The models this meter covers, with their prices.
    pub fn offers(&self) -> &[ModelOffer] {
        &self.offers
    }

    /// Whether model `id` can be metered.
    pub fn covers(&self, id: &str) -> bool {
        self.models.contains_key(id)
    }

    fn model(&self, id: &str) -> Result<&ModelMeter, String> {
        self.models
            .get(id)
            .ok_or_else(|| format!("the pool cannot meter model {id}"))
    }

    /// Tokens of each text as embedding model `model` reads them; an error names a text the
    /// model would refuse (empty, too long).
    pub fn embedding_tokens(&self, model: &str, texts: &[String]) -> Result<Vec<u32>, String> {
        match self.model(model)? {
            ModelMeter::Embeddings(tokenizer) => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                tokenizer.count(&texts).map_err(|e| e.to_string())
            }
            _ => Err(format!("{model} is not an embedding model")),
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
    pub fn prompt_tokens(&self, model: &str, messages: &[ChatMessage]) -> Result<u32, String> {
        let ModelMeter::Chat(template) = self.model(model)? else {
            return Err(format!("{model} is not a chat model"));
        };
        let messages = to_inference(messages)?;
        let prompt = template
            .prompt_tokens(&messages)
            .map_err(|e| e.to_string())?;
        if prompt.len() >= template.context() {
            return Err(format!(
                "the prompt is {} tokens; the model's context window is {}, so nothing is left to answer with",
                prompt.len(),
                template.context()
            ));
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
    ) -> Result<ChatCount, String> {
        let ModelMeter::Chat(template) = self.model(model)? else {
            return Err(format!("{model} is not a chat model"));
        };
        let max = params.max_tokens as usize;
        if token_ids.is_empty() || token_ids.len() > max {
            return Err(format!(
                "{} answer tokens for a limit of {max}",
                token_ids.len()
            ));
        }
        let completion_tokens = token_ids.len() as u32;
        if claimed_completion_tokens != completion_tokens {
            return Err(format!(
                "completion_tokens {claimed_completion_tokens} but {completion_tokens} token ids"
            ));
        }
        if claimed_prompt_tokens != prompt_tokens {
            return Err(format!(
                "prompt_tokens {claimed_prompt_tokens}, the prompt has {prompt_tokens}"
            ));
        }
        let (replayed, finish) = template
            .replay(token_ids, &params.stop)
            .map_err(|e| e.to_string())?;
        if replayed != text {
            return Err("the text is not what the token ids decode to".into());
        }
        let context_full = prompt_tokens as usize + token_ids.len() >= template.context();
        let expected = match finish {
            FinishReason::Stop => "stop",
            FinishReason::Length if token_ids.len() == max || context_full => "length",
            FinishReason::Length | FinishReason::Cancelled => {
                return Err(format!(
                    "the answer stops after {} of {max} tokens without an end",
                    token_ids.len()
                ));
            }
        };
        if finish_reason != expected {
            return Err(format!(
                "finish reason {finish_reason:?}, the tokens say {expected:?}"
            ));
        }
        Ok(ChatCount {
            prompt_tokens,
            completion_tokens,
        })
    }

    /// The token ids of `text` under chat model `model`'s tokenizer, for tests and tools that
    /// play a node.
    pub fn chat_token_ids(&self, model: &str, text: &str) -> Result<Vec<u32>, String> {
        match self.model(model)? {
            ModelMeter::Chat(template) => {
                template.tokenizer().encode(text).map_err(|e| e.to_string())
            }
            _ => Err(format!("{model} is not a chat model")),
        }
    }
}

fn to_inference(messages: &[ChatMessage]) -> Result<Vec<hearth_inference::ChatMessage>, String> {
    messages
        .iter()
        .map(|m| {
            Ok(hearth_inference::ChatMessage {
                role: Role::from_str(&m.role).map_err(|e| e.to_string())?,
                content: m.content.clone(),
            })
        })
        .collect()
}
