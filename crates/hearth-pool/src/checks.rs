//! What a node's result must be before anyone is paid for it. Units come from the pool's own
//! count ([`crate::meter`]), never from the node: a node's number that disagrees is a protocol
//! violation, and so is anything the model could not have produced (wrong sizes, vectors that
//! are not unit length, probabilities that are not probabilities, text its tokens do not make).

use hearth_protocol::{TaskOutput, TaskPayload};

use crate::meter::{Meter, MeterError, Metered};
use crate::queue::Accepted;

/// How far an embedding's length may be from 1 (the models scale every vector to unit length).
const UNIT_LENGTH_TOLERANCE: f64 = 1e-3;
/// How far above 1 a class list's probabilities may add up (rounding).
const PROBABILITY_SUM_TOLERANCE: f64 = 1e-3;

/// Why a node's result is refused, and nothing paid. Each is a strike against the node.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{vectors} vectors for {texts} texts")]
    VectorCount { vectors: usize, texts: usize },
    #[error("token counts {claimed:?} are not the texts' {counted:?}")]
    TokenCounts {
        claimed: Vec<u32>,
        counted: Vec<u32>,
    },
    #[error("vector {index} has {values} values; the model's have {dimensions}")]
    VectorSize {
        index: usize,
        values: usize,
        dimensions: usize,
    },
    #[error("vector {0} holds values that are not finite")]
    NotFinite(usize),
    #[error("vector {index} has length {length}, not 1")]
    NotUnitLength { index: usize, length: f64 },
    #[error("the text does not begin with what was streamed")]
    StreamDiffers,
    /// The answer does not count up as the pool's meter counts it, or its model cannot be
    /// metered.
    #[error(transparent)]
    Count(#[from] MeterError),
    #[error("{results} results for {images} images")]
    ResultCount { results: usize, images: u32 },
    #[error("result {index} lists {classes} classes for top_k {top_k}")]
    ClassCount {
        index: usize,
        classes: usize,
        top_k: u32,
    },
    #[error("result {0} has probabilities that are not probabilities")]
    NotProbabilities(usize),
    #[error("result {0} is not a list of distinct classes, most likely first")]
    NotRanked(usize),
    #[error("{ranks} ranks for {tokens} tokens")]
    RankCount { ranks: usize, tokens: usize },
    #[error("the output is for another kind of task")]
    WrongTask,
}

/// The units `output` is paid for, or why it is refused.
pub(crate) fn check_output(
    meter: &Meter,
    accepted: &Accepted,
    output: &TaskOutput,
) -> Result<u64, Refusal> {
    let model = accepted.model.as_str();
    match (&accepted.leased_task, &accepted.metered, output) {
        (
            TaskPayload::Embeddings { texts },
            Metered::Embeddings { tokens: expected },
            TaskOutput::Embeddings { vectors, tokens },
        ) => {
            if vectors.len() != texts.len() {
                return Err(Refusal::VectorCount {
                    vectors: vectors.len(),
                    texts: texts.len(),
                });
            }
            if tokens != expected {
                return Err(Refusal::TokenCounts {
                    claimed: tokens.clone(),
                    counted: expected.clone(),
                });
            }
            let dimensions =
                meter
                    .embedding_dimensions(model)
                    .ok_or_else(|| MeterError::WrongKind {
                        model: model.to_owned(),
                        kind: "an embedding",
                    })?;
            for (i, vector) in vectors.iter().enumerate() {
                if vector.len() != dimensions {
                    return Err(Refusal::VectorSize {
                        index: i,
                        values: vector.len(),
                        dimensions,
                    });
                }
                if vector.iter().any(|x| !x.is_finite()) {
                    return Err(Refusal::NotFinite(i));
                }
                let length = vector
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    .sqrt();
                if (length - 1.0).abs() > UNIT_LENGTH_TOLERANCE {
                    return Err(Refusal::NotUnitLength { index: i, length });
                }
            }
            Ok(accepted.metered.input_units())
        }
        (
            TaskPayload::Chat { params, .. },
            Metered::Chat { prompt_tokens },
            TaskOutput::Chat {
                text,
                prompt_tokens: claimed_prompt,
                completion_tokens,
                token_ids,
                finish_reason,
            },
        ) => {
            if !text.starts_with(accepted.streamed.as_str()) {
                return Err(Refusal::StreamDiffers);
            }
            let count = meter.check_chat(
                model,
                params,
                *prompt_tokens,
                text,
                token_ids,
                *claimed_prompt,
                *completion_tokens,
                finish_reason,
            )?;
            Ok(u64::from(count.completion_tokens))
        }
        (
            TaskPayload::ImageClassification { top_k, .. },
            Metered::Images { count },
            TaskOutput::ImageClassification { results },
        ) => {
            if results.len() != *count as usize {
                return Err(Refusal::ResultCount {
                    results: results.len(),
                    images: *count,
                });
            }
            for (i, classes) in results.iter().enumerate() {
                if classes.is_empty() || classes.len() > *top_k as usize {
                    return Err(Refusal::ClassCount {
                        index: i,
                        classes: classes.len(),
                        top_k: *top_k,
                    });
                }
                let probabilities_fit = classes
                    .iter()
                    .all(|c| c.probability.is_finite() && (0.0..=1.0).contains(&c.probability));
                let sum: f64 = classes.iter().map(|c| f64::from(c.probability)).sum();
                if !probabilities_fit || sum > 1.0 + PROBABILITY_SUM_TOLERANCE {
                    return Err(Refusal::NotProbabilities(i));
                }
                let descending = classes
                    .windows(2)
                    .all(|w| w[0].probability >= w[1].probability);
                let mut ids: Vec<u32> = classes.iter().map(|c| c.class).collect();
                ids.sort_unstable();
                ids.dedup();
                if !descending || ids.len() != classes.len() {
                    return Err(Refusal::NotRanked(i));
                }
            }
            Ok(u64::from(*count))
        }
        (TaskPayload::ChatScore { token_ids, .. }, _, TaskOutput::ChatScore { ranks }) => {
            if ranks.is_empty() || ranks.len() != token_ids.len() {
                return Err(Refusal::RankCount {
                    ranks: ranks.len(),
                    tokens: token_ids.len(),
                });
            }
            Ok(token_ids.len() as u64)
        }
        _ => Err(Refusal::WrongTask),
    }
}
