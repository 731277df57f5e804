//! A GPT-2-style byte-level BPE tokenizer built from a GGUF file's metadata
//! (`tokenizer.ggml.tokens`, `.merges`, `.token_type`, `.pre`), and streaming detokenisation.
//!
//! The BPE itself runs in the `tokenizers` crate; this module assembles it from the GGUF
//! vocabulary the way the model's own tokenizer was configured. Pre-tokenisers follow
//! `tokenizer.ggml.pre`: `smollm` splits digits one by one before GPT-2's byte-level regex,
//! `gpt2`/`default` use the regex alone; others are refused by name.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{InferenceError, Result};
use crate::gguf::GgufFile;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// A tokenizer read from GGUF metadata.
#[derive(Debug)]
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    /// The bytes each token stands for (control tokens: none; they are never shown).
    token_bytes: Vec<Vec<u8>>,
    /// Token text by id, as stored in the file.
    tokens: Vec<String>,
    special: Vec<bool>,
}

impl GgufTokenizer {
    /// Build the tokenizer described by `file`'s metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(InferenceError::Unsupported(format!(
                "tokenizer model {model:?} (only GPT-2-style byte-level BPE is supported)"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            file.get_array(key)?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| file.error(format!("{key} holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| file.error(format!("merge {m:?} has no space")))
            })
            .collect::<Result<_>>()?;
        let token_types: Vec<i64> = match file.metadata().get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .ok_or_else(|| file.error("tokenizer.ggml.token_type is not an array".into()))?
                .iter()
                .map(|t| match t {
                    crate::gguf::MetadataValue::I32(v) => Ok(i64::from(*v)),
                    other => other
                        .as_u64()
                        .map(|v| v as i64)
                        .ok_or_else(|| file.error("a token type is not an integer".into())),
                })
                .collect::<Result<_>>()?,
            None => vec![1; tokens.len()],
        };
        if token_types.len() != tokens.len() {
            return Err(file.error(format!(
                "{} tokens but {} token types",
                tokens.len(),
                token_types.len()
            )));
        }

        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), id as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let pre = match file.get_str("tokenizer.ggml.pre").unwrap_or("default") {
            "smollm" => Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level,
            ]),
            "gpt2" | "default" => Sequence::new(vec![byte_level]),
            other => {
                return Err(InferenceError::Unsupported(format!(
                    "pre-tokenizer {other:?} (supported: smollm, gpt2, default)"
                )));
            }
        };
        tokenizer.with_pre_tokenizer(Some(pre));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

        let special: Vec<bool> = token_types
            .iter()
            .map(|&t| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .collect();
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&special)
            .filter(|(_, s)| **s)
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        tokenizer.add_special_tokens(&added);

        let unicode_to_byte = byte_level_alphabet();
        let token_bytes = tokens
            .iter()
            .zip(&special)
            .map(|(t, &s)| {
                if s {
                    return Vec::new();
                }
                let mut bytes = Vec::with_capacity(t.len());
                for c in t.chars() {
                    match unicode_to_byte.get(&c) {
                        Some(&b) => bytes.push(b),
                        None => {
                            let mut buf = [0u8; 4];
                            bytes.extend(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
                bytes
            })
            .collect();
        Ok(Self {
            tokenizer,
            token_bytes,
            tokens,
            special,
        })
    }

    /// Token ids for `text`; special tokens written in the text (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text for `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.bytes_of(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes token `id` stands for (empty for special and unknown ids).
    pub fn bytes_of(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// How token `id` is written in the vocabulary (`<|im_end|>` for a special token).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of the token written exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == text).map(|i| i as u32)
    }

    /// True for control tokens (`<|im_end|>`, `<|endoftext|>`).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
}

/// GPT-2's byte-level alphabet: each byte maps to a printable character; this is the inverse.
fn byte_level_alphabet() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}

/// Turns a stream of token ids into text pieces, holding back bytes until they form whole
/// UTF-8 characters (one emoji may span several tokens).
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Add a token; returns the text that became complete, if any.
    pub fn push(&mut self, tokenizer: &GgufTokenizer, id: u32) -> String {
        self.pending.extend(tokenizer.bytes_of(id));
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // A sequence cut short at the end may still complete; a bad one never will.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return text;
            }
        };
        let rest = self.pending.split_off(valid);
        String::from_utf8(std::mem::replace(&mut self.pending, rest)).unwrap_or_default()
    }

    /// Whatever is left at the end, invalid bytes replaced.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let map = byte_level_alphabet();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'a'], b'a');
    }
}
