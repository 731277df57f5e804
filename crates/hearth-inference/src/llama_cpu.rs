//! The Llama forward pass on the CPU, on the host: the same weights as [`LlamaModel`]'s burn
//! path, products through [`cpu_kernels::matmul`] (prompts) or the stored blocks
//! ([`crate::matvec`], decoding steps), and RMSNorm, RoPE, grouped-query attention and SwiGLU
//! as plain loops over host memory. No burn tensor is built per step: a decoding step of a small
//! model is dominated by per-op overhead otherwise.

use rayon::prelude::*;

use crate::cpu_kernels::{self, HeadLayout, MatRef, Threads};
use crate::error::{InferenceError, Result};
use crate::llama::{DenseWeight, KvCache, LlamaModel, Weight};

/// Rotate interleaved pairs of one head (`x · cos + swap_pairs(x) · signed_sin`, as the burn
/// path's `rope`), writing into `out`.
pub(crate) fn rope_into(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    for (((pair, out), cos), sin) in x
        .chunks_exact(2)
        .zip(out.chunks_exact_mut(2))
        .zip(cos.chunks_exact(2))
        .zip(sin.chunks_exact(2))
    {
        out[0] = pair[0] * cos[0] + pair[1] * sin[0];
        out[1] = pair[1] * cos[1] + pair[0] * sin[1];
    }
}

impl LlamaModel {
    /// [`LlamaModel::forward`] on the host (the CPU backend). `tokens` is not empty and fits
    /// the context (checked by the caller).
    pub(crate) fn forward_host(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, hd) = (c.hidden, c.head_dim());
        let kv_width = c.kv_heads * hd;
        let s = tokens.len();
        let start = cache.len;
        let mut x = self.embed_tokens(tokens)?;
        if cache.host.len() != c.layers {
            cache.host = vec![(Vec::new(), Vec::new()); c.layers];
        }
        let mut normed = vec![0.0; s * h];
        let mut q = vec![0.0; s * h];
        let mut context = vec![0.0; s * h];
        let mut gated = vec![0.0; s * c.feed_forward];
        for (layer, (keys, values)) in self.layers.iter().zip(cache.host.iter_mut()) {
            cpu_kernels::rms_norm_rows(&mut normed, &x, &layer.attn_norm_values, c.rms_eps);
            let qkv = self.host_product(&normed, s, &layer.qkv)?;
            keys.resize((start + s) * kv_width, 0.0);
            values.resize((start + s) * kv_width, 0.0);
            for (t, row) in qkv.chunks_exact(h + 2 * kv_width).enumerate() {
                let pos = start + t;
                let cos = &self.rope_cos_values[pos * hd..(pos + 1) * hd];
                let sin = &self.rope_sin_values[pos * hd..(pos + 1) * hd];
                for (head, out) in q[t * h..(t + 1) * h].chunks_exact_mut(hd).enumerate() {
                    rope_into(&row[head * hd..(head + 1) * hd], cos, sin, out);
                }
                let slot = pos * kv_width;
                for (g, out) in keys[slot..slot + kv_width].chunks_exact_mut(hd).enumerate() {
                    rope_into(&row[h + g * hd..h + (g + 1) * hd], cos, sin, out);
                }
                values[slot..slot + kv_width].copy_from_slice(&row[h + kv_width..]);
            }
            self.attention(&q, keys, values, start, &mut context);
            let attended = self.host_product(&context, s, &layer.attn_out)?;
            x.iter_mut().zip(&attended).for_each(|(x, a)| *x += a);

            cpu_kernels::rms_norm_rows(&mut normed, &x, &layer.ffn_norm_values, c.rms_eps);
            let gate_up = self.host_product(&normed, s, &layer.gate_up)?;
            cpu_kernels::silu_mul_rows(&mut gated, &gate_up, c.feed_forward);
            let down = self.host_product(&gated, s, &layer.down)?;
            x.iter_mut().zip(&down).for_each(|(x, d)| *x += d);
        }
        cache.len = start + s;

        let mut last = vec![0.0; h];
        cpu_kernels::rms_norm_rows(
            &mut last,
            &x[(s - 1) * h..],
            &self.final_norm_values,
            c.rms_eps,
        );
        self.host_product(&last, 1, &self.lm_head)
    }

    /// Causal grouped-query attention of `q` (`[s, heads · head_dim]`, queries at positions
    /// `start..start + s`) over the cached keys and values, into `context`. One task per
    /// (query, head).
    fn attention(
        &self,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        start: usize,
        context: &mut [f32],
    ) {
        let c = &self.config;
        let hd = c.head_dim();
        let kv_width = c.kv_heads * hd;
        let groups = c.heads / c.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let one = |scores: &mut Vec<f32>, (task, (out, query)): (usize, (&mut [f32], &[f32]))| {
            let (t, head) = (task / c.heads, task % c.heads);
            scores.resize(start + t + 1, 0.0);
            let layout = HeadLayout {
                stride: kv_width,
                offset: (head / groups) * hd,
                width: hd,
            };
            cpu_kernels::attend(out, query, keys, values, layout, scale, scores);
        };
        context
            .par_chunks_mut(hd)
            .zip(q.par_chunks(hd))
            .enumerate()
            .for_each_init(Vec::new, one);
    }

    /// `x @ w` for `rows` rows of `x`: the stored blocks for one row where there are some,
    /// else the f32 values through [`cpu_kernels::matmul`].
    fn host_product(&self, x: &[f32], rows: usize, w: &Weight) -> Result<Vec<f32>> {
        let DenseWeight::Host {
            values,
            outputs,
            inputs,
        } = &w.dense
        else {
            return Err(InferenceError::Execution(
                "a device weight reached the host path".into(),
            ));
        };
        if rows == 1
            && let Some(blocks) = &w.blocks
        {
            return Ok(blocks.matvec(x));
        }
        let mut out = vec![0.0; rows * outputs];
        cpu_kernels::matmul(
            &mut out,
            *outputs,
            MatRef::row_major(x, rows, *inputs),
            MatRef::row_major(values, *outputs, *inputs).t(),
            Threads::Pool,
        );
        Ok(out)
    }
}
