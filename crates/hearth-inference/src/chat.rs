//! Chat generation: ChatML prompts, sampling, stop conditions, streaming and cancellation,
//! over a [`LlamaModel`] loaded from GGUF.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chat_template::{AnswerText, ChatTemplate, gguf_path};
use crate::device::ComputeDevice;
use crate::error::{InferenceError, Result};
use crate::gguf::GgufFile;
use crate::gguf_tokenizer::GgufTokenizer;
use crate::llama::{LlamaConfig, LlamaModel};
use crate::store::ModelStore;

/// The chat model shipped with Hearth.
pub const SMOLLM2_ID: &str = "smollm2-135m-instruct";

pub use crate::chat_template::MAX_PROMPT_BYTES;
/// Most stop strings one request may set, and their longest length in bytes.
pub const MAX_STOP_STRINGS: usize = 8;
const MAX_STOP_BYTES: usize = 256;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl FromStr for Role {
    type Err = InferenceError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "system" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            other => Err(InferenceError::InvalidRequest(format!(
                "unknown role {other:?} (expected system, user or assistant)"
            ))),
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// How to pick tokens and when to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationParams {
    /// Most tokens to generate (1 ..= the context window).
    pub max_tokens: usize,
    /// 0 picks the most likely token every time (greedy); higher flattens the distribution.
    pub temperature: f32,
    /// Sample only from the most likely tokens whose probabilities sum to this (0 < p ≤ 1).
    pub top_p: f32,
    /// Sample only from this many most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Seed of the sampler: the same seed and request give the same text.
    pub seed: u64,
    /// Texts that end the answer when generated (not included in it).
    pub stop: Vec<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

impl GenerationParams {
    /// Greedy decoding of up to `max_tokens`.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ..Self::default()
        }
    }

    fn check(&self, context: usize) -> Result<()> {
        let bad = |m: String| Err(InferenceError::InvalidRequest(m));
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        if self.max_tokens > context {
            return bad(format!(
                "max_tokens {} exceeds the context window of {context} tokens",
                self.max_tokens
            ));
        }
        if !self.temperature.is_finite() || !(0.0..=100.0).contains(&self.temperature) {
            return bad(format!(
                "temperature {} is not in 0..=100",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} is not in (0, 1]", self.top_p));
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return bad(format!("more than {MAX_STOP_STRINGS} stop strings"));
        }
        if self
            .stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
        {
            return bad(format!("stop strings must be 1 to {MAX_STOP_BYTES} bytes"));
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn, or a stop string appeared.
    Stop,
    /// `max_tokens` reached, or the context window is full.
    Length,
    /// The caller cancelled.
    Cancelled,
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        })
    }
}

/// What one generation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The answer (without the end-of-turn token or a stop string).
    pub text: String,
    /// Every generated token id, including a final end-of-turn token.
    pub tokens: Vec<u32>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
    /// Time to run the prompt (to the first generated token).
    pub prefill: Duration,
    /// Time for the remaining tokens.
    pub decode: Duration,
}

/// Stops a generation from another thread: checked before every token.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the generation to stop after the token in progress.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// True once [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a streaming generation sends.
#[derive(Debug)]
pub enum ChatEvent {
    /// New text (may be empty while bytes of a character are held back).
    Token { id: u32, text: String },
    /// The end: the whole generation, or the error that ended it.
    Done(Result<Generation>),
}

/// A chat model ready to answer: weights on a device, the tokenizer and the prompt template.
#[derive(Debug)]
pub struct ChatGenerator {
    model: LlamaModel,
    template: ChatTemplate,
}

impl ChatGenerator {
    /// Load a verified chat model from the store.
    pub fn load(store: &ModelStore, model_id: &str, device: &ComputeDevice) -> Result<Self> {
        Self::from_gguf(&gguf_path(store, model_id)?, device)
    }

    /// Load any Llama-architecture GGUF file with a ChatML vocabulary.
    pub fn from_gguf(path: &Path, device: &ComputeDevice) -> Result<Self> {
        let file = GgufFile::open(path)?;
        // The architecture first: a file of another family fails with that, not a detail.
        LlamaConfig::from_gguf(&file)?;
        let template = ChatTemplate::from_gguf(&file, path)?;
        let model = LlamaModel::load(&file, device)?;
        Ok(Self { model, template })
    }

    /// The model's sizes.
    pub fn config(&self) -> &LlamaConfig {
        self.model.config()
    }

    /// The network itself, for callers that drive decoding step by step.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        self.template.tokenizer()
    }

    /// The tokenizer and prompt template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The prompt's token ids (see [`ChatTemplate::prompt_tokens`]).
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.template.prompt_tokens(messages)
    }

    /// Answer `messages`, calling `on_token` with each token and the text it completes.
    pub fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenerationParams,
        cancel: &CancelToken,
        on_token: &mut dyn FnMut(u32, &str),
    ) -> Result<Generation> {
        let prompt = self.prompt_tokens(messages)?;
        self.generate_from_tokens(&prompt, params, cancel, on_token)
    }

    /// Continue from prompt token ids.
    pub fn generate_from_tokens(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        cancel: &CancelToken,
        on_token: &mut dyn FnMut(u32, &str),
    ) -> Result<Generation> {
        let context = self.model.config().context;
        params.check(context)?;
        if prompt.is_empty() {
            return Err(InferenceError::InvalidRequest("empty prompt".into()));
        }
        if prompt.len() >= context {
            return Err(InferenceError::InvalidRequest(format!(
                "the prompt is {} tokens; the context window is {context}, so nothing is left to answer with",
                prompt.len()
            )));
        }
        let started = Instant::now();
        let mut sampler = Sampler::new(params);
        let mut answer = AnswerText::new(&self.template, &params.stop);
        let mut cache = self.model.new_cache();
        let mut tokens = Vec::new();
        let mut prefill = None;
        let mut logits = self.model.forward(prompt, &mut cache)?;
        let finish_reason = loop {
            if cancel.is_cancelled() {
                break FinishReason::Cancelled;
            }
            let id = sampler.pick(&logits);
            tokens.push(id);
            prefill.get_or_insert_with(|| started.elapsed());
            let pushed = answer.push(id);
            if !self.template.ends_turn(id) {
                on_token(id, &pushed.shown);
            }
            if pushed.ended {
                break FinishReason::Stop;
            }
            if tokens.len() >= params.max_tokens || cache.len() >= context {
                break FinishReason::Length;
            }
            logits = self.model.forward(&[id], &mut cache)?;
        };
        // Bytes of an unfinished character and text held back for a stop string.
        let rest = answer.finish();
        if let Some(&last) = tokens.last()
            && !rest.is_empty()
        {
            on_token(last, &rest);
        }
        let prefill = prefill.unwrap_or_else(|| started.elapsed());
        Ok(Generation {
            text: answer.into_text(),
            tokens,
            prompt_tokens: prompt.len(),
            finish_reason,
            prefill,
            decode: started.elapsed().saturating_sub(prefill),
        })
    }

    /// Teacher forcing, for checking another node's answer: run the conversation, then feed
    /// `answer` token by token, and give each token's rank among the model's predictions at its
    /// position (0 = what greedy decoding would have picked).
    pub fn score_tokens(&self, messages: &[ChatMessage], answer: &[u32]) -> Result<Vec<u32>> {
        let prompt = self.prompt_tokens(messages)?;
        let context = self.model.config().context;
        if prompt.len() + answer.len() > context {
            return Err(InferenceError::InvalidRequest(format!(
                "{} prompt and {} answer tokens exceed the context window of {context}",
                prompt.len(),
                answer.len()
            )));
        }
        let mut cache = self.model.new_cache();
        let mut logits = self.model.forward(&prompt, &mut cache)?;
        let mut ranks = Vec::with_capacity(answer.len());
        for (i, &token) in answer.iter().enumerate() {
            let chosen = logits.get(token as usize).copied().ok_or_else(|| {
                InferenceError::InvalidRequest(format!(
                    "token id {token} is outside the vocabulary"
                ))
            })?;
            ranks.push(logits.iter().filter(|&&l| l > chosen).count() as u32);
            if i + 1 < answer.len() {
                logits = self.model.forward(&[token], &mut cache)?;
            }
        }
        Ok(ranks)
    }

    /// Generate on a new thread, streaming [`ChatEvent`]s; cancel with the returned token.
    pub fn stream(
        self: &Arc<Self>,
        messages: Vec<ChatMessage>,
        params: GenerationParams,
    ) -> (mpsc::Receiver<ChatEvent>, CancelToken) {
        let (tx, rx) = mpsc::channel();
        let cancel = CancelToken::new();
        let this = Arc::clone(self);
        let token = cancel.clone();
        std::thread::spawn(move || {
            let result = this.generate(&messages, &params, &token, &mut |id, text| {
                // A closed receiver means nobody listens: stop generating.
                if tx
                    .send(ChatEvent::Token {
                        id,
                        text: text.to_owned(),
                    })
                    .is_err()
                {
                    token.cancel();
                }
            });
            let _ = tx.send(ChatEvent::Done(result));
        });
        (rx, cancel)
    }
}

/// Greedy or seeded temperature / top-k / top-p sampling.
#[derive(Debug)]
struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    rng: SplitMix64,
}

impl Sampler {
    fn new(params: &GenerationParams) -> Self {
        Self {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            rng: SplitMix64(params.seed),
        }
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        let k = if self.top_k == 0 {
            logits.len()
        } else {
            self.top_k.min(logits.len())
        };
        if k < order.len() {
            order.select_nth_unstable_by(k - 1, by_logit);
            order.truncate(k);
        }
        order.sort_by(by_logit);
        let max = logits[order[0] as usize];
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| (((logits[i as usize] - max) / self.temperature) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        // Smallest prefix whose mass reaches top_p (at least one token).
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= f64::from(self.top_p) {
                keep = n + 1;
                break;
            }
        }
        let mut target = self.rng.next_f64() * probs[..keep].iter().sum::<f64>();
        for (n, p) in probs[..keep].iter().enumerate() {
            target -= p;
            if target <= 0.0 {
                return order[n];
            }
        }
        order[keep - 1]
    }
}

/// Index of the largest logit (the first, on ties).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A small, fixed PRNG, so a seed gives the same text on every platform and version.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_is_greedy_at_zero_temperature_and_seeded_otherwise() {
        let logits = [0.1f32, 2.0, 1.9, -1.0];
        let mut greedy = Sampler::new(&GenerationParams::default());
        assert_eq!(greedy.pick(&logits), 1);

        let params = GenerationParams {
            temperature: 1.0,
            seed: 7,
            ..GenerationParams::default()
        };
        let draw = |params: &GenerationParams| {
            let mut s = Sampler::new(params);
            (0..64).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params), "same seed, same tokens");
        assert!(
            a.contains(&1) && a.contains(&2),
            "both likely tokens drawn: {a:?}"
        );
        let top1 = GenerationParams {
            top_k: 1,
            ..params.clone()
        };
        assert!(draw(&top1).iter().all(|&t| t == 1));
        let nucleus = GenerationParams {
            top_p: 0.4,
            ..params
        };
        assert!(
            draw(&nucleus).iter().all(|&t| t == 1),
            "token 1 alone holds 0.475 of the mass"
        );
    }

    #[test]
    fn params_are_checked() {
        let ok = GenerationParams::greedy(16);
        assert!(ok.check(100).is_ok());
        for bad in [
            GenerationParams::greedy(0),
            GenerationParams::greedy(101),
            GenerationParams {
                temperature: f32::NAN,
                ..ok.clone()
            },
            GenerationParams {
                top_p: 0.0,
                ..ok.clone()
            },
            GenerationParams {
                stop: vec![String::new()],
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.check(100), Err(InferenceError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roles_parse_and_unknown_roles_are_refused() {
        assert_eq!("assistant".parse::<Role>().unwrap(), Role::Assistant);
        let err = "wizard".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("wizard"), "{err}");
    }
}
