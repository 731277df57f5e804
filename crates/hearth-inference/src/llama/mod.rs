//! A Llama-family decoder (as in SmolLM2) in burn, loaded from GGUF: RMSNorm, rotary
//! embeddings, grouped-query attention with a KV cache, a SwiGLU MLP, tied or separate output
//! embeddings.
//!
//! GGUF stores the Q and K projections permuted so that each rotary pair is two adjacent
//! values (llama.cpp's layout), so the rotation here works on interleaved pairs; attention
//! scores are unchanged because queries and keys are permuted alike.
//!
//! Weights are dequantised to f32 once at load time for batched products (prompts, and every
//! step on wgpu). On the CPU a decoding step instead reads the weights in their stored blocks
//! ([`BlockMatrix`]): a step is bound by the bytes of weights it reads, and Q4_1 blocks are a
//! sixth of the f32 bytes. Q, K and V share one matrix product, as do the gate and up
//! projections, so each layer makes four weight products per step.
//!
//! On the CPU the whole pass runs on the host ([`crate::llama_cpu`]) with the same weights and
//! tables; burn runs it on wgpu.

use std::sync::Arc;

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use crate::device::{ComputeBackend, ComputeDevice};
use crate::error::{InferenceError, Result};
use crate::gguf::GgufFile;
use crate::matvec::BlockMatrix;
use crate::weights::transpose;

/// Sizes and constants of a Llama model, read from GGUF metadata.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` under grouped-query attention).
    pub kv_heads: usize,
    /// Width of the feed-forward layer.
    pub feed_forward: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Longest sequence (prompt and output) the model was trained for.
    pub context: usize,
}

impl LlamaConfig {
    /// Read the configuration of a `llama`-architecture GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(InferenceError::Unsupported(format!(
                "model architecture {arch:?} in {} (only \"llama\" is supported)",
                file.path().display()
            )));
        }
        let int = |key: &str| -> Result<usize> {
            let v = file.get_u64(&format!("llama.{key}"))?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0 && v <= 1 << 20)
                .ok_or_else(|| file.error(format!("llama.{key} = {v} is out of range")))
        };
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let kv_heads = match file.metadata().get("llama.attention.head_count_kv") {
            Some(_) => int("attention.head_count_kv")?,
            None => heads,
        };
        let token_count = file.get_array("tokenizer.ggml.tokens")?.len();
        let config = Self {
            vocab_size: match file.metadata().get("llama.vocab_size") {
                Some(_) => int("vocab_size")?,
                None => token_count,
            },
            hidden,
            layers: int("block_count")?,
            heads,
            kv_heads,
            feed_forward: int("feed_forward_length")?,
            rope_base: match file.metadata().get("llama.rope.freq_base") {
                Some(_) => file.get_f64("llama.rope.freq_base")? as f32,
                None => 10_000.0,
            },
            rms_eps: file.get_f64("llama.attention.layer_norm_rms_epsilon")? as f32,
            context: int("context_length")?,
        };
        let head_dim = config.head_dim();
        if hidden % heads != 0 || heads % kv_heads != 0 || !head_dim.is_multiple_of(2) {
            return Err(file.error(format!(
                "{hidden} wide with {heads} heads and {kv_heads} key/value heads is not a valid layout"
            )));
        }
        if let Ok(rope_dims) = file.get_u64("llama.rope.dimension_count")
            && rope_dims as usize != head_dim
        {
            return Err(InferenceError::Unsupported(format!(
                "partial rotary embeddings ({rope_dims} of {head_dim} dimensions)"
            )));
        }
        if token_count != config.vocab_size {
            return Err(file.error(format!(
                "{token_count} tokens but a vocabulary of {}",
                config.vocab_size
            )));
        }
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Parameters, for reports.
    pub fn parameters(&self) -> usize {
        let h = self.hidden;
        let kv = self.kv_heads * self.head_dim();
        let per_layer = h * (h + 2 * kv) + h * h + 3 * h * self.feed_forward + 2 * h;
        self.vocab_size * h + self.layers * per_layer + h
    }
}

/// A weight matrix: its f32 values, and on the CPU also its stored blocks for one-row
/// products.
#[derive(Debug)]
pub(crate) struct Weight {
    pub(crate) dense: DenseWeight,
    pub(crate) blocks: Option<BlockMatrix>,
}

/// A weight's values in f32.
#[derive(Debug)]
pub(crate) enum DenseWeight {
    /// On the device, `[in, out]` (wgpu).
    Tensor(Box<Tensor<2>>),
    /// On the host in the stored order, `[out, in]` row-major, multiplied by
    /// [`crate::cpu_kernels::matmul`] reading it transposed (the CPU: one thread pool for every
    /// product, and the tied output layer shares the embeddings' values).
    Host {
        values: Arc<[f32]>,
        outputs: usize,
        inputs: usize,
    },
}

/// One decoder layer's weights.
#[derive(Debug)]
pub(crate) struct LlamaLayer {
    attn_norm: Tensor<1>,
    pub(crate) qkv: Weight,
    pub(crate) attn_out: Weight,
    ffn_norm: Tensor<1>,
    pub(crate) gate_up: Weight,
    pub(crate) down: Weight,
    /// The norms' weights on the host, for the CPU path.
    pub(crate) attn_norm_values: Vec<f32>,
    pub(crate) ffn_norm_values: Vec<f32>,
}

/// Rows a prompt is padded to a multiple of on wgpu (see [`LlamaModel::forward`]).
const PREFILL_BUCKET: usize = 32;
/// Cache slots are added this many at a time, so attention shapes change rarely.
const CACHE_BUCKET: usize = 128;

/// Keys and values of the tokens seen so far, per layer: on the device `[1, kv_heads,
/// capacity, head_dim]` (slots from `len` on are unused and masked), on the CPU path in `host`.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<(Tensor<4>, Tensor<4>)>,
    /// On the CPU path: keys and values per layer on the host, `[position, kv_head, head_dim]`
    /// (growing a sequence only appends).
    pub(crate) host: Vec<(Vec<f32>, Vec<f32>)>,
    pub(crate) len: usize,
    capacity: usize,
}

impl KvCache {
    /// Make room for `needed` slots, growing by whole buckets (never past the context).
    fn reserve(&mut self, model: &LlamaModel, needed: usize) {
        if needed <= self.capacity {
            return;
        }
        let c = &model.config;
        let capacity = needed
            .next_multiple_of(CACHE_BUCKET)
            .min(c.context)
            .max(needed);
        let shape = [1, c.kv_heads, capacity, c.head_dim()];
        let grow = |old: Option<Tensor<4>>| {
            let fresh = Tensor::<4>::zeros(shape, &model.device);
            match old {
                Some(old) => {
                    let [_, _, used, _] = old.dims();
                    fresh.slice_assign([0..1, 0..c.kv_heads, 0..used, 0..c.head_dim()], old)
                }
                None => fresh,
            }
        };
        let old = std::mem::take(&mut self.layers);
        self.layers = if old.is_empty() {
            (0..c.layers).map(|_| (grow(None), grow(None))).collect()
        } else {
            old.into_iter()
                .map(|(k, v)| (grow(Some(k)), grow(Some(v))))
                .collect()
        };
        self.capacity = capacity;
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A loaded Llama model on one burn device.
#[derive(Debug)]
pub struct LlamaModel {
    pub(crate) config: LlamaConfig,
    device: Device,
    /// Token embeddings on the host, `[vocab, hidden]` row-major: a step looks up a few rows.
    embeddings: Arc<[f32]>,
    pub(crate) layers: Vec<LlamaLayer>,
    final_norm: Tensor<1>,
    pub(crate) final_norm_values: Vec<f32>,
    pub(crate) lm_head: Weight,
    /// Per position, cos and signed sin for each value of a head, `[context, head_dim]`.
    rope_cos: Tensor<2>,
    rope_sin: Tensor<2>,
    /// The same tables on the host, `[context, head_dim]` row-major, for the CPU path.
    pub(crate) rope_cos_values: Vec<f32>,
    pub(crate) rope_sin_values: Vec<f32>,
    /// Runs on the CPU backend: the whole forward pass on the host ([`crate::llama_cpu`]).
    on_cpu: bool,
}

impl LlamaModel {
    /// Load every weight of a `llama` GGUF file onto `compute`'s device.
    pub fn load(file: &GgufFile, compute: &ComputeDevice) -> Result<Self> {
        let device = &compute.device;
        let config = LlamaConfig::from_gguf(file)?;
        let h = config.hidden;
        let kv = config.kv_heads * config.head_dim();

        // A weight `[out, in]` (the stored order) with its shape checked.
        let matrix = |name: &str, out: usize, inp: usize| -> Result<Vec<f32>> {
            let (values, shape) = file.tensor_f32(name)?;
            if shape != [out, inp] {
                return Err(file.error(format!(
                    "tensor {name:?} has shape {shape:?}, the model needs [{out}, {inp}]"
                )));
            }
            Ok(values)
        };
        let vector = |name: &str| -> Result<(Tensor<1>, Vec<f32>)> {
            let (values, shape) = file.tensor_f32(name)?;
            if shape != [h] {
                return Err(file.error(format!(
                    "tensor {name:?} has shape {shape:?}, the model needs [{h}]"
                )));
            }
            let tensor = Tensor::from_data(TensorData::new(values.clone(), [h]), device);
            Ok((tensor, values))
        };
        let on_cpu = compute.backend == ComputeBackend::Cpu;
        // The stored blocks of `names` stacked, for one-row products on the CPU.
        let blocks = |names: &[&str], inp: usize| {
            let matrix = on_cpu
                .then(|| BlockMatrix::from_gguf(file, names, inp))
                .flatten();
            if on_cpu && matrix.is_none() {
                tracing::info!(
                    ?names,
                    "stored format not read directly; decoding uses BLAS"
                );
            }
            matrix
        };
        // `[out, in]` values as the backend multiplies them.
        let dense = |values: Arc<[f32]>, out: usize, inp: usize| {
            if on_cpu {
                DenseWeight::Host {
                    values,
                    outputs: out,
                    inputs: inp,
                }
            } else {
                DenseWeight::Tensor(Box::new(Tensor::from_data(
                    TensorData::new(transpose(&values, out, inp), [inp, out]),
                    device,
                )))
            }
        };
        // Stack `[out_i, in]` matrices along `out` as one `[sum out_i, in]` weight.
        let stacked = |parts: &[(&str, usize)], inp: usize| -> Result<Weight> {
            let mut rows = Vec::new();
            let mut out = 0;
            for &(name, n) in parts {
                rows.extend(matrix(name, n, inp)?);
                out += n;
            }
            let names: Vec<&str> = parts.iter().map(|&(name, _)| name).collect();
            Ok(Weight {
                dense: dense(rows.into(), out, inp),
                blocks: blocks(&names, inp),
            })
        };

        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            let (attn_norm, attn_norm_values) = vector(&name("attn_norm"))?;
            let (ffn_norm, ffn_norm_values) = vector(&name("ffn_norm"))?;
            layers.push(LlamaLayer {
                attn_norm,
                attn_norm_values,
                ffn_norm,
                ffn_norm_values,
                qkv: stacked(
                    &[
                        (&name("attn_q"), h),
                        (&name("attn_k"), kv),
                        (&name("attn_v"), kv),
                    ],
                    h,
                )?,
                attn_out: stacked(&[(&name("attn_output"), h)], h)?,
                gate_up: stacked(
                    &[
                        (&name("ffn_gate"), config.feed_forward),
                        (&name("ffn_up"), config.feed_forward),
                    ],
                    h,
                )?,
                down: stacked(&[(&name("ffn_down"), h)], config.feed_forward)?,
            });
        }
        let embeddings: Arc<[f32]> = matrix("token_embd.weight", config.vocab_size, h)?.into();
        // Tied embeddings unless the file has its own output matrix.
        let lm_head = match file.tensor_info("output.weight") {
            Ok(_) => stacked(&[("output.weight", config.vocab_size)], h)?,
            Err(_) => Weight {
                dense: dense(Arc::clone(&embeddings), config.vocab_size, h),
                blocks: blocks(&["token_embd.weight"], h),
            },
        };
        let (rope_cos_values, rope_sin_values) = rope_tables(&config);
        let table = |values: &[f32]| {
            Tensor::from_data(
                TensorData::new(values.to_vec(), [config.context, config.head_dim()]),
                device,
            )
        };
        let (rope_cos, rope_sin) = (table(&rope_cos_values), table(&rope_sin_values));
        let (final_norm, final_norm_values) = vector("output_norm.weight")?;
        Ok(Self {
            config,
            device: device.clone(),
            embeddings,
            layers,
            final_norm,
            final_norm_values,
            rope_cos_values,
            rope_sin_values,
            lm_head,
            rope_cos,
            rope_sin,
            on_cpu,
        })
    }

    /// The model's sizes.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::default()
    }

    /// Run `tokens` (the prompt, or the one newest token) after what `cache` holds; returns the
    /// logits for the last of them. The cache grows by `tokens.len()`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let real = tokens.len();
        let start = cache.len;
        if real == 0 {
            return Err(InferenceError::InvalidRequest("no tokens to run".into()));
        }
        if start + real > self.config.context {
            return Err(InferenceError::InvalidRequest(format!(
                "{} tokens exceed the context window of {}",
                start + real,
                self.config.context
            )));
        }
        if self.on_cpu {
            return self.forward_host(tokens, cache);
        }
        // On wgpu a prompt runs padded to a whole bucket of rows, so that kernels compiled and
        // tuned for one prompt length serve the next; the padding rows' keys and values land in
        // cache slots that stay masked until a real token overwrites them. (Carrying a padding
        // row through CPU decoding steps too measured no faster.)
        let s = if real == 1 {
            real
        } else {
            real.next_multiple_of(PREFILL_BUCKET)
                .min(self.config.context - start)
        };
        let h = self.config.hidden;
        let mut rows = self.embed_tokens(tokens)?;
        rows.resize(s * h, 0.0);
        let mut x = Tensor::<2>::from_data(TensorData::new(rows, [s, h]), &self.device);

        let hd = self.config.head_dim();
        let positions = start..start + s;
        let cos = self
            .rope_cos
            .clone()
            .slice([positions.clone(), 0..hd])
            .reshape([1, 1, s, hd]);
        let sin = self
            .rope_sin
            .clone()
            .slice([positions, 0..hd])
            .reshape([1, 1, s, hd]);

        cache.reserve(self, start + s);
        let mask = self.causal_mask(start, s, cache.capacity);
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = self.layer_forward(layer, x, &cos, &sin, mask.clone(), slot, start)?;
        }
        cache.len = start + real;

        let last = x.slice([real - 1..real, 0..h]);
        let logits = self.dense(
            rms_norm(last, &self.final_norm, self.config.rms_eps),
            &self.lm_head,
        )?;
        crate::weights::tensor_values(logits)
    }

    /// The embeddings of `tokens`, `[tokens, hidden]` row-major; an id outside the vocabulary
    /// is an error.
    pub(crate) fn embed_tokens(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let h = self.config.hidden;
        let mut rows = Vec::with_capacity(tokens.len() * h);
        for &t in tokens {
            let t = t as usize;
            let row = self.embeddings.get(t * h..(t + 1) * h).ok_or_else(|| {
                InferenceError::InvalidRequest(format!(
                    "token id {t} is outside the vocabulary of {}",
                    self.config.vocab_size
                ))
            })?;
            rows.extend_from_slice(row);
        }
        Ok(rows)
    }

    /// `x @ w` on the device. (On the CPU the whole pass runs on the host instead.)
    fn dense(&self, x: Tensor<2>, w: &Weight) -> Result<Tensor<2>> {
        match &w.dense {
            DenseWeight::Tensor(weight) => Ok(x.matmul(weight.as_ref().clone())),
            DenseWeight::Host { .. } => Err(InferenceError::Execution(
                "a host weight reached the device path".into(),
            )),
        }
    }

    /// Additive mask `[1, 1, groups * s, capacity]` letting query `p` see cache slots up to
    /// `start + p`. Rows run over (group, position) because grouped heads share one product.
    fn causal_mask(&self, start: usize, s: usize, capacity: usize) -> Tensor<4> {
        let groups = self.config.heads / self.config.kv_heads;
        let mut values = vec![0.0f32; groups * s * capacity];
        for g in 0..groups {
            for p in 0..s {
                let row = (g * s + p) * capacity;
                values[row + start + p + 1..row + capacity].fill(f32::NEG_INFINITY);
            }
        }
        Tensor::from_data(
            TensorData::new(values, [1, 1, groups * s, capacity]),
            &self.device,
        )
    }

    #[allow(clippy::too_many_arguments)] // one layer's inputs; a struct would only rename them
    fn layer_forward(
        &self,
        layer: &LlamaLayer,
        x: Tensor<2>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: Tensor<4>,
        cache: &mut (Tensor<4>, Tensor<4>),
        start: usize,
    ) -> Result<Tensor<2>> {
        let c = &self.config;
        let [s, h] = x.dims();
        let hd = c.head_dim();
        let kv_width = c.kv_heads * hd;
        let groups = c.heads / c.kv_heads;

        let qkv = self.dense(rms_norm(x.clone(), &layer.attn_norm, c.rms_eps), &layer.qkv)?;
        let heads = |t: Tensor<2>, n: usize| t.reshape([1, s, n, hd]).swap_dims(1, 2);
        let q = heads(qkv.clone().slice([0..s, 0..h]), c.heads);
        let k = heads(qkv.clone().slice([0..s, h..h + kv_width]), c.kv_heads);
        let v = heads(
            qkv.slice([0..s, h + kv_width..h + 2 * kv_width]),
            c.kv_heads,
        );
        let q = rope(q, cos, sin).mul_scalar(1.0 / (hd as f64).sqrt());
        let k = rope(k, cos, sin);
        // Write this step's keys and values into their cache slots, in place.
        let slots = [0..1, 0..c.kv_heads, start..start + s, 0..hd];
        let placeholder = || Tensor::empty([0, 0, 0, 0], &self.device);
        let cached_k = std::mem::replace(&mut cache.0, placeholder());
        let cached_v = std::mem::replace(&mut cache.1, placeholder());
        cache.0 = cached_k.slice_assign(slots.clone(), k);
        cache.1 = cached_v.slice_assign(slots, v);
        let (k, v) = (cache.0.clone(), cache.1.clone());

        // Grouped-query attention without copying keys: the `groups` query heads that share a
        // key/value head are stacked along the sequence axis, `[1, kv_heads, groups * s, hd]`.
        let q = q.reshape([1, c.kv_heads, groups * s, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)) + mask;
        let context = softmax(scores, 3)
            .matmul(v)
            .reshape([1, c.heads, s, hd])
            .swap_dims(1, 2)
            .reshape([s, h]);
        let x = x + self.dense(context, &layer.attn_out)?;

        let gate_up = self.dense(
            rms_norm(x.clone(), &layer.ffn_norm, c.rms_eps),
            &layer.gate_up,
        )?;
        let ff = c.feed_forward;
        let gated = silu(gate_up.clone().slice([0..s, 0..ff])) * gate_up.slice([0..s, ff..2 * ff]);
        Ok(x + self.dense(gated, &layer.down)?)
    }
}

/// `x / rms(x) * weight` over the last axis.
fn rms_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f32) -> Tensor<2> {
    let [_, h] = x.dims();
    let inv_rms = x
        .clone()
        .square()
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    x * inv_rms * weight.clone().reshape([1, h])
}

/// Rotate interleaved pairs `(x[2i], x[2i+1])` of each head by position-dependent angles:
/// `x * cos + swap_pairs(x) * signed_sin`, where `swap_pairs` flips each pair and the table
/// holds `-sin` for even and `+sin` for odd slots.
fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, n, s, hd] = x.dims();
    let swapped = x
        .clone()
        .reshape([b, n, s, hd / 2, 2])
        .flip([4])
        .reshape([b, n, s, hd]);
    x * cos.clone() + swapped * sin.clone()
}

/// Cos and signed sin tables, `[context, head_dim]`, each value of a pair with its pair's angle.
fn rope_tables(config: &LlamaConfig) -> (Vec<f32>, Vec<f32>) {
    let hd = config.head_dim();
    let ctx = config.context;
    let mut cos = Vec::with_capacity(ctx * hd);
    let mut sin = Vec::with_capacity(ctx * hd);
    for pos in 0..ctx {
        for i in 0..hd / 2 {
            let freq = (config.rope_base as f64).powf(-2.0 * i as f64 / hd as f64);
            let (s, c) = (pos as f64 * freq).sin_cos();
            cos.extend([c as f32, c as f32]);
            sin.extend([-s as f32, s as f32]);
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests;
