//! Sentence embeddings: tokenise, run the BERT encoder in length-sorted batches, mean-pool
//! over real tokens, and scale to unit length (as sentence-transformers does for MiniLM).

use burn::tensor::{Int, Tensor, TensorData};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bert::{BertConfig, BertEncoder};
use crate::bert_cpu::CpuBertEncoder;
use crate::device::{ComputeBackend, ComputeDevice};
use crate::error::{InferenceError, Result};
use crate::store::{ModelStore, TaskKind};

/// Model id of the default embedding model.
pub const MINILM_ID: &str = "all-minilm-l6-v2";
/// Texts in one request, at most.
pub const MAX_INPUTS: usize = 2048;
/// Bytes in one text, at most. Longer texts are refused before tokenising; anything past the
/// token limit is cut off anyway, so this only bounds the tokeniser's work.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Sequences per forward pass on burn (padded to the longest of them), at most.
const BATCH_SIZE: usize = 32;
/// Tokens per forward pass on the CPU path (packed without padding), at most: enough rows to
/// keep the matrix products efficient, few enough that the activations stay in cache.
const CPU_BATCH_TOKENS: usize = 2048;

/// Embeddings for a request, in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingOutput {
    /// One unit-length vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens per input after truncation (what the pool bills).
    pub tokens: Vec<usize>,
}

/// A loaded sentence-embedding model.
#[derive(Debug)]
pub struct TextEmbedder {
    tokenizer: EmbeddingTokenizer,
    encoder: Encoder,
    config: BertConfig,
    device: ComputeDevice,
}

/// An embedding model's tokenizer alone: what the node feeds the encoder, and what the pool
/// counts to bill a request (without loading any weights).
#[derive(Debug)]
pub struct EmbeddingTokenizer {
    tokenizer: Tokenizer,
    max_tokens: usize,
    /// Length of the model's vectors.
    dimensions: usize,
}

impl EmbeddingTokenizer {
    /// The tokenizer of embedding model `id` in `store` (its tokenizer file verified).
    pub fn load(store: &ModelStore, id: &str) -> Result<Self> {
        let manifest = store.manifest(id)?;
        if manifest.task != TaskKind::Embeddings {
            return Err(InferenceError::UnknownModel(format!(
                "{id} is not an embedding model"
            )));
        }
        let file = manifest
            .files
            .iter()
            .find(|f| f.name == "tokenizer.json")
            .ok_or_else(|| InferenceError::Manifest {
                path: store.model_dir(id),
                reason: "lists no tokenizer.json".into(),
            })?;
        let path = store.model_dir(id).join("weights").join(&file.name);
        crate::store::verify_file(&path, file.size, &file.sha256)?;
        let max_tokens = manifest.setting_f64("max_tokens").unwrap_or(256.0) as usize;
        Ok(Self {
            tokenizer: load_tokenizer(&path, max_tokens)?,
            max_tokens,
            dimensions: BertConfig::from_manifest(&manifest)?.hidden,
        })
    }

    /// Token ids (with `[CLS]` and `[SEP]`, truncated to the model's limit) for each text.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        check_texts(texts)?;
        let failed = |e: tokenizers::Error| InferenceError::Tokenizer(e.to_string());
        // One text on the calling thread: a batch spreads over rayon's threads, and for one
        // short text the hand-offs cost more than the tokenizing (the pool counts every
        // result's tokens).
        if let [text] = texts {
            let encoding = self.tokenizer.encode(*text, true).map_err(failed)?;
            return Ok(vec![encoding.get_ids().to_vec()]);
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(failed)?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Tokens of each text as the model reads it: the units a pool bills.
    pub fn count(&self, texts: &[&str]) -> Result<Vec<u32>> {
        Ok(self
            .tokenize(texts)?
            .iter()
            .map(|ids| ids.len() as u32)
            .collect())
    }

    /// The longest sequence the model reads, in tokens.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Length of the model's vectors.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }
}

/// The encoder, where it runs.
#[derive(Debug)]
enum Encoder {
    /// burn, on wgpu.
    Burn(Box<BertEncoder>),
    /// Hearth's own CPU forward pass ([`crate::bert_cpu`]), several times faster than burn's
    /// CPU backend on this model.
    Cpu(CpuBertEncoder),
}

impl TextEmbedder {
    /// Verify and load model `id` from `store` onto `device`.
    pub fn load(store: &ModelStore, id: &str, device: ComputeDevice) -> Result<Self> {
        let model = store.verify(id)?;
        if model.manifest.task != TaskKind::Embeddings {
            return Err(InferenceError::UnknownModel(format!(
                "{id} is not an embedding model"
            )));
        }
        let tokenizer = EmbeddingTokenizer::load(store, id)?;
        let config = BertConfig::from_manifest(&model.manifest)?;
        let encoder = config
            .init(&device.device)
            .load_safetensors(&model.file("model.safetensors")?)?;
        let encoder = match device.backend {
            ComputeBackend::Cpu => Encoder::Cpu(CpuBertEncoder::from_burn(encoder, config)?),
            ComputeBackend::Wgpu => Encoder::Burn(Box::new(encoder)),
        };
        tracing::info!(model = id, device = %device.describe(), "embedding model loaded");
        Ok(Self {
            tokenizer,
            encoder,
            config,
            device,
        })
    }

    /// The device this model runs on.
    pub fn device(&self) -> &ComputeDevice {
        &self.device
    }

    /// The encoder's sizes.
    pub fn config(&self) -> BertConfig {
        self.config
    }

    /// Token ids (with `[CLS]` and `[SEP]`, truncated to the model's limit) for each text.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        self.tokenizer.tokenize(texts)
    }

    /// Embed `texts`. Sequences are sorted by length and batched so padding stays small; the
    /// output is in input order.
    pub fn embed(&self, texts: &[&str]) -> Result<EmbeddingOutput> {
        let ids = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut vectors = vec![Vec::new(); ids.len()];
        let (max_rows, max_tokens) = match self.encoder {
            Encoder::Burn(_) => (BATCH_SIZE, usize::MAX),
            Encoder::Cpu(_) => (usize::MAX, CPU_BATCH_TOKENS),
        };
        for chunk in batches(&order, |i| ids[i].len(), max_rows, max_tokens) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let embedded = match &self.encoder {
                Encoder::Burn(encoder) => self.embed_batch(encoder, &batch)?,
                Encoder::Cpu(encoder) => encoder.embed(&batch)?,
            };
            for (&index, vector) in chunk.iter().zip(embedded) {
                vectors[index] = vector;
            }
        }
        Ok(EmbeddingOutput {
            vectors,
            tokens: ids.iter().map(Vec::len).collect(),
        })
    }

    /// The longest sequence this model reads, in tokens.
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_tokens
    }

    fn embed_batch(&self, encoder: &BertEncoder, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let rows = batch.len();
        let width = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0f32; rows * width];
        for (row, sequence) in batch.iter().enumerate() {
            for (col, &id) in sequence.iter().enumerate() {
                ids[row * width + col] = i64::from(id);
                mask[row * width + col] = 1.0;
            }
        }
        let device = &self.device.device;
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, width]), device);
        // Batches are sorted by length, so many (all the truncated ones) have no padding at all.
        let padded = batch.iter().any(|s| s.len() != width);
        let mean = if padded {
            let mask = Tensor::<2>::from_data(TensorData::new(mask, [rows, width]), device);
            let hidden = encoder.forward(ids, Some(mask.clone()));
            // Mean over real tokens only.
            let mask3 = mask.unsqueeze_dim::<3>(2);
            let summed = (hidden * mask3.clone()).sum_dim(1);
            let counts = mask3.sum_dim(1).clamp_min(1e-9);
            summed / counts
        } else {
            encoder.forward(ids, None).mean_dim(1)
        }
        .reshape([rows, self.config.hidden]);
        let norm = mean
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        let flat = crate::weights::tensor_values(mean / norm)?;
        Ok(flat
            .chunks(self.config.hidden)
            .map(<[f32]>::to_vec)
            .collect())
    }
}

/// `order` cut into consecutive batches of at most `max_rows` items and `max_tokens` tokens
/// (an item longer than that is a batch of its own).
fn batches(
    order: &[usize],
    tokens: impl Fn(usize) -> usize,
    max_rows: usize,
    max_tokens: usize,
) -> Vec<&[usize]> {
    let mut batches = Vec::new();
    let (mut start, mut in_batch) = (0, 0);
    for (at, &item) in order.iter().enumerate() {
        let n = tokens(item);
        if at > start && (at - start == max_rows || in_batch + n > max_tokens) {
            batches.push(&order[start..at]);
            (start, in_batch) = (at, 0);
        }
        in_batch += n;
    }
    if start < order.len() {
        batches.push(&order[start..]);
    }
    batches
}

/// Refuse empty, oversized and too many texts before any work is done.
fn check_texts(texts: &[&str]) -> Result<()> {
    if texts.len() > MAX_INPUTS {
        return Err(InferenceError::TooManyInputs {
            actual: texts.len(),
            limit: MAX_INPUTS,
        });
    }
    for (index, text) in texts.iter().enumerate() {
        if text.trim().is_empty() {
            return Err(InferenceError::EmptyInput { index });
        }
        if text.len() > MAX_INPUT_BYTES {
            return Err(InferenceError::InputTooLong {
                index,
                actual: text.len(),
                limit: MAX_INPUT_BYTES,
            });
        }
    }
    Ok(())
}

/// Texts from the wire: refuse anything that is not UTF-8, naming the input and the offset.
pub fn texts_from_wire(inputs: &[Vec<u8>]) -> Result<Vec<&str>> {
    inputs
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            std::str::from_utf8(bytes).map_err(|e| InferenceError::InvalidUtf8 {
                index,
                offset: e.valid_up_to(),
            })
        })
        .collect()
}

/// The tokenizer from `tokenizer.json`, set to truncate at `max_tokens` and never pad (the
/// file asks for padding to 128; batches here are padded to their own longest sequence).
fn load_tokenizer(path: &std::path::Path, max_tokens: usize) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| InferenceError::Tokenizer(format!("{}: {e}", path.display())))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_text_must_be_utf8() {
        let inputs = vec![b"fine".to_vec(), vec![b'o', b'k', 0xff, b'!']];
        match texts_from_wire(&inputs) {
            Err(InferenceError::InvalidUtf8 {
                index: 1,
                offset: 2,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(texts_from_wire(&inputs[..1]).unwrap(), ["fine"]);
    }

    #[test]
    fn batches_keep_to_their_row_and_token_limits() {
        let lens = [3, 3, 4, 10, 1];
        let order = [0, 1, 2, 3, 4];
        let by_tokens = batches(&order, |i| lens[i], usize::MAX, 10);
        assert_eq!(by_tokens, [&[0, 1, 2][..], &[3], &[4]]);
        let by_rows = batches(&order, |i| lens[i], 2, usize::MAX);
        assert_eq!(by_rows, [&[0, 1][..], &[2, 3], &[4]]);
        assert!(batches(&[], |i| lens[i], 2, 10).is_empty());
    }

    #[test]
    fn empty_and_oversized_texts_are_refused() {
        assert!(matches!(
            check_texts(&["a", "  "]),
            Err(InferenceError::EmptyInput { index: 1 })
        ));
        let huge = "x".repeat(MAX_INPUT_BYTES + 1);
        assert!(matches!(
            check_texts(&[&huge]),
            Err(InferenceError::InputTooLong { index: 0, .. })
        ));
        let many = vec!["a"; MAX_INPUTS + 1];
        assert!(matches!(
            check_texts(&many),
            Err(InferenceError::TooManyInputs { .. })
        ));
    }
}
