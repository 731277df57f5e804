//! A BERT encoder (as in all-MiniLM-L6-v2) in burn.
//!
//! Field names follow the Hugging Face checkpoint after [`BertEncoder::load_safetensors`]'s key
//! remapping, so the weights load without any copying by hand.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::store::{PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor};

use crate::error::{InferenceError, Result};
use crate::store::Manifest;

/// Sizes of a BERT encoder, as a manifest's `[config]` states them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate: usize,
    /// Longest sequence the position table covers.
    pub max_positions: usize,
    /// Token type (segment) count.
    pub type_vocab: usize,
}

impl BertConfig {
    /// all-MiniLM-L6-v2: 6 layers, 384 wide, 12 heads.
    pub const MINILM_L6: Self = Self {
        vocab_size: 30522,
        hidden: 384,
        layers: 6,
        heads: 12,
        intermediate: 1536,
        max_positions: 512,
        type_vocab: 2,
    };

    /// The sizes a BERT model's manifest states in its `[config]` table.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self> {
        let bad = |reason: String| InferenceError::Manifest {
            path: PathBuf::from(&manifest.id),
            reason,
        };
        let table = manifest
            .config
            .clone()
            .ok_or_else(|| bad("a BERT model needs its sizes in [config]".into()))?;
        toml::Value::Table(table)
            .try_into()
            .map_err(|e| bad(format!("[config]: {e}")))
    }

    /// A model with these sizes and untrained weights.
    pub fn init(&self, device: &Device) -> BertEncoder {
        let norm = || {
            LayerNormConfig::new(self.hidden)
                .with_epsilon(LAYER_NORM_EPS)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        BertEncoder {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, self.hidden).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_positions, self.hidden)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab, self.hidden)
                    .init(device),
                layer_norm: norm(),
            },
            layers: (0..self.layers)
                .map(|_| BertLayer {
                    query: linear(self.hidden, self.hidden),
                    key: linear(self.hidden, self.hidden),
                    value: linear(self.hidden, self.hidden),
                    attention_output: linear(self.hidden, self.hidden),
                    attention_norm: norm(),
                    intermediate: linear(self.hidden, self.intermediate),
                    output: linear(self.intermediate, self.hidden),
                    output_norm: norm(),
                    heads: self.heads,
                })
                .collect(),
        }
    }

    /// FLOPs of one forward pass over `tokens` tokens in sequences of length `seq_len`
    /// (multiply-adds counted as two), for throughput reports.
    pub fn flops(&self, tokens: usize, seq_len: usize) -> f64 {
        let h = self.hidden as f64;
        let per_token_dense = 2.0 * (4.0 * h * h + 2.0 * h * self.intermediate as f64);
        let per_token_attention = 2.0 * 2.0 * seq_len as f64 * h;
        tokens as f64 * self.layers as f64 * (per_token_dense + per_token_attention)
    }
}

/// The checkpoint's LayerNorm epsilon.
pub(crate) const LAYER_NORM_EPS: f64 = 1e-12;

/// Token, position and segment embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub(crate) word_embeddings: Embedding,
    pub(crate) position_embeddings: Embedding,
    pub(crate) token_type_embeddings: Embedding,
    pub(crate) layer_norm: LayerNorm,
}

/// One transformer layer: self-attention, then a GELU feed-forward, each with a residual.
#[derive(Module, Debug)]
pub struct BertLayer {
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    pub(crate) attention_output: Linear,
    pub(crate) attention_norm: LayerNorm,
    pub(crate) intermediate: Linear,
    pub(crate) output: Linear,
    pub(crate) output_norm: LayerNorm,
    #[module(skip)]
    heads: usize,
}

/// The encoder: embeddings, then the layers. Returns the last hidden states.
#[derive(Module, Debug)]
pub struct BertEncoder {
    pub(crate) embeddings: BertEmbeddings,
    pub(crate) layers: Vec<BertLayer>,
}

impl BertLayer {
    /// `x` is `[batch * seq, hidden]`: keeping the dense layers two-dimensional makes each of
    /// them one large matrix product instead of one per sequence.
    fn forward(
        &self,
        x: Tensor<2>,
        batch: usize,
        seq: usize,
        mask_bias: Option<Tensor<4>>,
    ) -> Tensor<2> {
        let [_, hidden] = x.dims();
        let head_dim = hidden / self.heads;
        let split = |t: Tensor<2>| {
            t.reshape([batch, seq, self.heads, head_dim])
                .swap_dims(1, 2)
        };
        // Scale the queries rather than the scores: seq x head_dim values instead of seq x seq.
        let q = split(self.query.forward(x.clone())).mul_scalar(1.0 / (head_dim as f64).sqrt());
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let mut scores = q.matmul(k.swap_dims(2, 3));
        if let Some(bias) = mask_bias {
            scores = scores + bias;
        }
        let context = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch * seq, hidden]);
        let x = self
            .attention_norm
            .forward(self.attention_output.forward(context) + x);
        let ff = self
            .output
            .forward(gelu(self.intermediate.forward(x.clone())));
        self.output_norm.forward(ff + x)
    }
}

impl BertEncoder {
    /// Hidden states `[batch, seq, hidden]` for token ids `[batch, seq]` and a 0/1 attention
    /// mask of the same shape (1 = real token, 0 = padding). `None` means no padding: every
    /// sequence fills the batch, and the masking pass is skipped.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2>>,
    ) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .repeat_dim(0, batch);
        let token_types = Tensor::<2, Int>::zeros([batch, seq], &device);
        let e = &self.embeddings;
        let embedded = e.layer_norm.forward(
            e.word_embeddings.forward(input_ids)
                + e.position_embeddings.forward(positions)
                + e.token_type_embeddings.forward(token_types),
        );
        let hidden = embedded.dims()[2];
        let mut x = embedded.reshape([batch * seq, hidden]);
        // Padding gets a large negative score so softmax gives it no weight.
        let mask_bias = attention_mask.map(|mask| {
            (mask.neg() + 1.0)
                .mul_scalar(-1.0e4)
                .reshape([batch, 1, 1, seq])
        });
        for layer in &self.layers {
            x = layer.forward(x, batch, seq, mask_bias.clone());
        }
        x.reshape([batch, seq, hidden])
    }

    /// Load a Hugging Face BERT checkpoint (PyTorch layout) from safetensors. Every tensor of
    /// the model must be present with its shape; extra tensors (the pooler) are ignored.
    pub fn load_safetensors(mut self, path: &Path) -> Result<Self> {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^embeddings\.LayerNorm\.", "embeddings.layer_norm.")
            .with_key_remapping(
                r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.",
                "layers.$1.$2.",
            )
            .with_key_remapping(
                r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.",
                "layers.$1.attention_output.",
            )
            .with_key_remapping(
                r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.",
                "layers.$1.attention_norm.",
            )
            .with_key_remapping(
                r"^encoder\.layer\.(\d+)\.intermediate\.dense\.",
                "layers.$1.intermediate.",
            )
            .with_key_remapping(
                r"^encoder\.layer\.(\d+)\.output\.dense\.",
                "layers.$1.output.",
            )
            .with_key_remapping(
                r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.",
                "layers.$1.output_norm.",
            )
            .allow_partial(true);
        crate::weights::load_complete(&mut self, &mut store, path)?;
        Ok(self)
    }
}
