//! The BERT encoder's forward pass on the CPU, without burn: the weights of a loaded
//! [`BertEncoder`] in plain row-major arrays, sequences packed end to end with no padding, the
//! dense layers as large matrix products ([`cpu_kernels::matmul`]), attention one sequence per
//! task, and every step between products fused into one pass over the rows.
//!
//! burn's CPU backend spends most of a MiniLM forward pass outside its matrix products (one pass
//! per elementwise op, padding, and two thread pools yielding to each other); this path keeps
//! the cores in the products. The numbers are the same model's: the fidelity tests hold it to
//! sentence-transformers exactly as they hold the burn path.

use burn::module::Param;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::bert::{BertConfig, BertEncoder, LAYER_NORM_EPS};
use crate::cpu_kernels::{self, MatRef, Threads};
use crate::error::{InferenceError, Result};
use crate::weights::tensor_values;

/// A dense layer: `y = x · weight + bias`, `weight` row-major `inputs × outputs`.
#[derive(Debug)]
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Dense {
    fn from_burn(linear: burn::nn::Linear) -> Result<Self> {
        let [inputs, outputs] = linear.weight.shape().dims();
        let bias = match linear.bias {
            Some(bias) => values(bias)?,
            None => vec![0.0; outputs],
        };
        Ok(Self {
            weight: values(linear.weight)?,
            bias,
            inputs,
            outputs,
        })
    }

    /// Several layers reading the same input as one, their outputs side by side.
    fn concat(parts: &[Dense]) -> Self {
        let inputs = parts[0].inputs;
        let outputs = parts.iter().map(|p| p.outputs).sum();
        let mut weight = Vec::with_capacity(inputs * outputs);
        for row in 0..inputs {
            for p in parts {
                weight.extend_from_slice(&p.weight[row * p.outputs..(row + 1) * p.outputs]);
            }
        }
        Self {
            weight,
            bias: parts.iter().flat_map(|p| p.bias.iter().copied()).collect(),
            inputs,
            outputs,
        }
    }

    /// `out = x · weight` (the bias is left to the pass that follows).
    fn product(&self, out: &mut [f32], x: &[f32]) {
        let rows = x.len() / self.inputs;
        cpu_kernels::matmul(
            out,
            self.outputs,
            MatRef::row_major(x, rows, self.inputs),
            MatRef::row_major(&self.weight, self.inputs, self.outputs),
            Threads::Pool,
        );
    }
}

/// LayerNorm's scale and shift.
#[derive(Debug)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    fn from_burn(norm: burn::nn::LayerNorm) -> Result<Self> {
        let gamma = values(norm.gamma)?;
        let beta = match norm.beta {
            Some(beta) => values(beta)?,
            None => vec![0.0; gamma.len()],
        };
        Ok(Self { gamma, beta })
    }
}

#[derive(Debug)]
struct Layer {
    /// Query, key and value in one product: `hidden × 3·hidden`.
    qkv: Dense,
    attention_output: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// The encoder's weights for the CPU path.
#[derive(Debug)]
pub(crate) struct CpuBertEncoder {
    config: BertConfig,
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    /// Token type 0's embedding: every sentence is one segment.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

/// The activations of one pass, reused from layer to layer.
struct Buffers {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    intermediate: Vec<f32>,
}

impl CpuBertEncoder {
    /// Take the weights out of a loaded encoder, one part at a time (each burn tensor is let
    /// go once copied, so loading never holds the model twice).
    pub(crate) fn from_burn(encoder: BertEncoder, config: BertConfig) -> Result<Self> {
        let BertEncoder { embeddings, layers } = encoder;
        let layers = layers
            .into_iter()
            .map(|l| {
                Ok(Layer {
                    qkv: Dense::concat(&[
                        Dense::from_burn(l.query)?,
                        Dense::from_burn(l.key)?,
                        Dense::from_burn(l.value)?,
                    ]),
                    attention_output: Dense::from_burn(l.attention_output)?,
                    attention_norm: Norm::from_burn(l.attention_norm)?,
                    intermediate: Dense::from_burn(l.intermediate)?,
                    output: Dense::from_burn(l.output)?,
                    output_norm: Norm::from_burn(l.output_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut token_type = values(embeddings.token_type_embeddings.weight)?;
        token_type.truncate(config.hidden);
        Ok(Self {
            config,
            word_embeddings: values(embeddings.word_embeddings.weight)?,
            position_embeddings: values(embeddings.position_embeddings.weight)?,
            token_type,
            embedding_norm: Norm::from_burn(embeddings.layer_norm)?,
            layers,
        })
    }

    /// The mean over each sequence's tokens of the last hidden states, scaled to unit length
    /// (sentence-transformers' pooling for MiniLM). Sequences are token ids with `[CLS]` and
    /// `[SEP]`, at most `max_positions` long.
    pub(crate) fn embed(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.config.hidden;
        let mut starts = Vec::with_capacity(sequences.len());
        let mut tokens = 0;
        for (index, sequence) in sequences.iter().enumerate() {
            if sequence.is_empty() || sequence.len() > self.config.max_positions {
                return Err(InferenceError::Execution(format!(
                    "sequence {index} has {} tokens; the encoder reads 1 to {}",
                    sequence.len(),
                    self.config.max_positions
                )));
            }
            if let Some(&id) = sequence
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(InferenceError::Execution(format!(
                    "token id {id} is outside the vocabulary ({})",
                    self.config.vocab_size
                )));
            }
            starts.push(tokens);
            tokens += sequence.len();
        }
        let mut buffers = Buffers {
            x: vec![0.0; tokens * h],
            qkv: vec![0.0; tokens * 3 * h],
            context: vec![0.0; tokens * h],
            projected: vec![0.0; tokens * h],
            intermediate: vec![0.0; tokens * self.config.intermediate],
        };
        self.embed_tokens(sequences, &mut buffers.x);
        for layer in &self.layers {
            self.layer(layer, sequences, &mut buffers);
        }
        Ok(sequences
            .iter()
            .zip(starts)
            .map(|(sequence, start)| {
                let rows = &buffers.x[start * h..(start + sequence.len()) * h];
                mean_unit(rows, h)
            })
            .collect())
    }

    /// Word + position + segment embeddings, normalised.
    fn embed_tokens(&self, sequences: &[&[u32]], x: &mut [f32]) {
        let h = self.config.hidden;
        let mut rows = x.chunks_exact_mut(h);
        for sequence in sequences {
            for (position, (&id, row)) in sequence.iter().zip(&mut rows).enumerate() {
                let word = &self.word_embeddings[id as usize * h..(id as usize + 1) * h];
                let place = &self.position_embeddings[position * h..(position + 1) * h];
                for (((v, w), p), t) in row.iter_mut().zip(word).zip(place).zip(&self.token_type) {
                    *v = w + p + t;
                }
            }
        }
        let norm = &self.embedding_norm;
        cpu_kernels::layer_norm(x, &norm.gamma, &norm.beta, LAYER_NORM_EPS as f32);
    }

    fn layer(&self, layer: &Layer, sequences: &[&[u32]], b: &mut Buffers) {
        let eps = LAYER_NORM_EPS as f32;
        layer.qkv.product(&mut b.qkv, &b.x);
        self.attention(&layer.qkv.bias, sequences, &b.qkv, &mut b.context);
        layer.attention_output.product(&mut b.projected, &b.context);
        let norm = &layer.attention_norm;
        cpu_kernels::residual_layer_norm(
            &mut b.x,
            &b.projected,
            &layer.attention_output.bias,
            &norm.gamma,
            &norm.beta,
            eps,
        );
        layer.intermediate.product(&mut b.intermediate, &b.x);
        cpu_kernels::bias_gelu(&mut b.intermediate, &layer.intermediate.bias);
        layer.output.product(&mut b.projected, &b.intermediate);
        let norm = &layer.output_norm;
        cpu_kernels::residual_layer_norm(
            &mut b.x,
            &b.projected,
            &layer.output.bias,
            &norm.gamma,
            &norm.beta,
            eps,
        );
    }

    /// Self-attention of each sequence over itself (no padding, so no mask), one sequence
    /// per task: `qkv` holds the products without their bias, which is added here.
    fn attention(&self, bias: &[f32], sequences: &[&[u32]], qkv: &[f32], context: &mut [f32]) {
        let h = self.config.hidden;
        let mut tasks = Vec::with_capacity(sequences.len());
        let (mut qkv, mut context) = (qkv, context);
        for sequence in sequences {
            let len = sequence.len();
            let (mine, rest) = qkv.split_at(len * 3 * h);
            let (out, others) = std::mem::take(&mut context).split_at_mut(len * h);
            tasks.push((mine, out, len));
            (qkv, context) = (rest, others);
        }
        tasks
            .into_par_iter()
            .for_each(|(qkv, out, len)| self.sequence_attention(bias, qkv, out, len));
    }

    fn sequence_attention(&self, bias: &[f32], qkv: &[f32], out: &mut [f32], len: usize) {
        let h = self.config.hidden;
        let d = h / self.config.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let (mut q, mut k, mut v) = (vec![0.0; len * d], vec![0.0; len * d], vec![0.0; len * d]);
        let mut scores = vec![0.0; len * len];
        for head in 0..self.config.heads {
            let at = head * d;
            for (t, row) in qkv.chunks_exact(3 * h).enumerate() {
                let part = |offset: usize| {
                    row[offset + at..offset + at + d]
                        .iter()
                        .zip(&bias[offset + at..offset + at + d])
                        .map(|(x, b)| x + b)
                };
                // Scale the queries rather than the scores: len·d values instead of len².
                for (dst, value) in q[t * d..(t + 1) * d].iter_mut().zip(part(0)) {
                    *dst = value * scale;
                }
                for (dst, value) in k[t * d..(t + 1) * d].iter_mut().zip(part(h)) {
                    *dst = value;
                }
                for (dst, value) in v[t * d..(t + 1) * d].iter_mut().zip(part(2 * h)) {
                    *dst = value;
                }
            }
            cpu_kernels::matmul(
                &mut scores,
                len,
                MatRef::row_major(&q, len, d),
                MatRef::row_major(&k, len, d).t(),
                Threads::Caller,
            );
            cpu_kernels::softmax_rows(&mut scores, len);
            cpu_kernels::matmul(
                &mut out[at..],
                h,
                MatRef::row_major(&scores, len, len),
                MatRef::row_major(&v, len, d),
                Threads::Caller,
            );
        }
    }
}

/// The mean of `rows` (each `width` wide), scaled to unit length: the sum scaled to unit
/// length, since dividing by the count first changes nothing after normalising.
fn mean_unit(rows: &[f32], width: usize) -> Vec<f32> {
    let mut sum = vec![0f32; width];
    for row in rows.chunks_exact(width) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    let norm = sum.iter().map(|s| s * s).sum::<f32>().sqrt().max(1e-12);
    sum.iter().map(|s| s / norm).collect()
}

/// A parameter's values, row-major.
fn values<const D: usize>(param: Param<Tensor<D>>) -> Result<Vec<f32>> {
    tensor_values(param.into_value())
}
