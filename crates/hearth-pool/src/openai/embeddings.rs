//! `POST /v1/embeddings`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hearth_protocol::{TaskKind, TaskOutput, TaskPayload};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Customer, JobsGuard, deadline, offer, submit};
use crate::PoolState;
use crate::error::ApiError;
use crate::meter::Metered;
use crate::queue::NewJob;

/// Most inputs in one embeddings request.
const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub(crate) struct EmbeddingsRequest {
    model: String,
    input: EmbeddingInput,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// `POST /v1/embeddings`: inputs split into jobs of `embeddings_per_job` texts, run on as many
/// nodes as take them, reassembled in order.
pub(crate) async fn embeddings(
    State(state): State<Arc<PoolState>>,
    Customer {
        admission,
        body: request,
    }: Customer<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    offer(&state, &request.model, TaskKind::Embeddings)?;
    let texts = match request.input {
        EmbeddingInput::One(text) => vec![text],
        EmbeddingInput::Many(texts) => texts,
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid_param(
            "input",
            format!("input must hold 1 to {MAX_INPUTS} strings"),
        ));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(ApiError::invalid_param(
            "input",
            format!("input[{i}] is empty"),
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("unknown encoding_format {other:?}"),
            ));
        }
    };

    // The pool counts the tokens it bills, with its own copy of the model's tokenizer.
    let counts = state
        .meter
        .embedding_tokens(&request.model, &texts)
        .map_err(|e| ApiError::invalid_param("input", e.to_string()))?;
    let tokens: u64 = counts.iter().map(|&t| u64::from(t)).sum();
    let per_job = state.config.embeddings_per_job;
    let jobs = texts
        .chunks(per_job)
        .zip(counts.chunks(per_job))
        .map(|(chunk, counts)| NewJob {
            task: TaskPayload::Embeddings {
                texts: chunk.to_vec(),
            },
            metered: Metered::Embeddings {
                tokens: counts.to_vec(),
            },
            customer: Some(admission.key_id.clone()),
        })
        .collect();
    let deadline = deadline(&state);
    let submitted = submit(&state, &request.model, jobs, false).await?;
    let mut guard = JobsGuard {
        state: &state,
        ids: submitted.iter().map(|s| s.job_id.clone()).collect(),
    };
    let mut data = Vec::with_capacity(texts.len());
    for job in submitted {
        let completed = guard.wait(&job.job_id, job.done, deadline).await?;
        let TaskOutput::Embeddings { vectors, .. } = completed.output else {
            return Err(ApiError::internal(
                "a node answered with another kind of output".into(),
            ));
        };
        for vector in vectors {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                Value::String(BASE64.encode(bytes))
            } else {
                json!(vector)
            };
            data.push(
                json!({ "object": "embedding", "index": data.len(), "embedding": embedding }),
            );
        }
    }
    guard.ids.clear();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
}
