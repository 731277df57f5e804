//! What a node's result must be before anyone is paid for it. Units come from the pool's own
//! count ([`crate::meter`]), never from the node: a node's number that disagrees is a protocol
//! violation, and so is anything the model could not have produced (wrong sizes, vectors that
//! are not unit length, probabilities that are not probabilities, text its tokens do not make).

use hearth_protocol::{TaskOutput, TaskPayload};

use crate::meter::{Meter, Metered};
use crate::queue::Accepted;

/// How far an embedding's length may be from 1 (the models scale every vector to unit length).
const UNIT_LENGTH_TOLERANCE: f64 = 1e-3;
/// How far above 1 a class list's probabilities may add up (rounding).
const PROBABILITY_SUM_TOLERANCE: f64 = 1e-3;

/// The units `output` is paid for, or why it is refused.
pub(crate) fn check_output(
    meter: &Meter,
    accepted: &Accepted,
    output: &TaskOutput,
) -> Result<u64, String> {
    let model = accepted.model.as_str();
    match (&accepted.leased_task, &accepted.metered, output) {
        (
            TaskPayload::Embeddings { texts },
            Metered::Embeddings { tokens: expected },
            TaskOutput::Embeddings { vectors, tokens },
        ) => {
            if vectors.len() != texts.len() {
                return Err(format!(
                    "{} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                ));
            }
            if tokens != expected {
                return Err(format!(
                    "token counts {tokens:?} are not the texts' {expected:?}"
                ));
            }
            let dimensions = meter
                .embedding_dimensions(model)
                .ok_or_else(|| format!("{model} is not an embedding model"))?;
            for (i, vector) in vectors.iter().enumerate() {
                if vector.len() != dimensions {
                    return Err(format!(
                        "vector {i} has {} values; the model's have {dimensions}",
                        vector.len()
                    ));
                }
                if vector.iter().any(|x| !x.is_finite()) {
                    return Err(format!("vector {i} holds values that are not finite"));
                }
                let length = vector
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    .sqrt();
                if (length - 1.0).abs() > UNIT_LENGTH_TOLERANCE {
                    return Err(format!("vector {i} has length {length}, not 1"));
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
                return Err("the text does not begin with what was streamed".into());
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
                return Err(format!("{} results for {count} images", results.len()));
            }
            for (i, classes) in results.iter().enumerate() {
                if classes.is_empty() || classes.len() > *top_k as usize {
                    return Err(format!(
                        "result {i} lists {} classes for top_k {top_k}",
                        classes.len()
                    ));
                }
                let probabilities_fit = classes
                    .iter()
                    .all(|c| c.probability.is_finite() && (0.0..=1.0).contains(&c.probability));
                let sum: f64 = classes.iter().map(|c| f64::from(c.probability)).sum();
                if !probabilities_fit || sum > 1.0 + PROBABILITY_SUM_TOLERANCE {
                    return Err(format!(
                        "result {i} has probabilities that are not probabilities"
                    ));
                }
                let descending = classes
                    .windows(2)
                    .all(|w| w[0].probability >= w[1].probability);
                let mut ids: Vec<u32> = classes.iter().map(|c| c.class).collect();
                ids.sort_unstable();
                ids.dedup();
                if !descending || ids.len() != classes.len() {
                    return Err(format!(
                        "result {i} is not a list of distinct classes, most likely first"
                    ));
                }
            }
            Ok(u64::from(*count))
        }
        (TaskPayload::ChatScore { token_ids, .. }, _, TaskOutput::ChatScore { ranks }) => {
            if ranks.is_empty() || ranks.len() != token_ids.len() {
                return Err(format!(
                    "{} ranks for {} tokens",
                    ranks.len(),
                    token_ids.len()
                ));
            }
            Ok(token_ids.len() as u64)
        }
        _ => Err("the output is for another kind of task".into()),
    }
}
