//! `POST /v1/images/classifications`: Hearth's own endpoint for image classification.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hearth_protocol::{TaskKind, TaskOutput, TaskPayload};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Customer, deadline, offer, submit, wait_for_one};
use crate::PoolState;
use crate::error::ApiError;
use crate::meter::Metered;
use crate::queue::NewJob;

/// Most images in one classification request.
const MAX_IMAGES: usize = 64;

#[derive(Deserialize)]
pub(crate) struct ClassifyRequest {
    model: String,
    images: Vec<String>,
    #[serde(default = "default_top_k")]
    top_k: u32,
}

fn default_top_k() -> u32 {
    5
}

/// `POST /v1/images/classifications`: `{"model", "images": [base64 PNG/JPEG], "top_k"}` →
/// `{"object": "list", "data": [{"index", "labels": [{"class", "label", "probability"}]}]}`.
pub(crate) async fn classify_images(
    State(state): State<Arc<PoolState>>,
    Customer {
        admission,
        body: request,
    }: Customer<ClassifyRequest>,
) -> Result<Json<Value>, ApiError> {
    offer(&state, &request.model, TaskKind::ImageClassification)?;
    if request.images.is_empty() || request.images.len() > MAX_IMAGES {
        return Err(ApiError::invalid_param(
            "images",
            format!("images must hold 1 to {MAX_IMAGES} images"),
        ));
    }
    if let Some(i) = request
        .images
        .iter()
        .position(|b| BASE64.decode(b).is_err())
    {
        return Err(ApiError::invalid_param(
            "images",
            format!("images[{i}] is not base64"),
        ));
    }
    if !(1..=100).contains(&request.top_k) {
        return Err(ApiError::invalid_param("top_k", "top_k must be 1 to 100"));
    }
    let count = request.images.len();
    let deadline = deadline(&state);
    let job = NewJob {
        task: TaskPayload::ImageClassification {
            images: request.images,
            top_k: request.top_k,
        },
        metered: Metered::Images {
            count: count as u32,
        },
        customer: Some(admission.key_id.clone()),
    };
    let Some(submitted) = submit(&state, &request.model, vec![job], false)
        .await?
        .into_iter()
        .next()
    else {
        return Err(ApiError::internal("no job was queued".into()));
    };
    let completed = wait_for_one(&state, submitted, deadline).await?;
    let TaskOutput::ImageClassification { results } = completed.output else {
        return Err(ApiError::internal(
            "a node answered with another kind of output".into(),
        ));
    };
    let data: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(index, labels)| json!({ "index": index, "labels": labels }))
        .collect();
    Ok(Json(
        json!({ "object": "list", "data": data, "model": request.model, "usage": { "images": count } }),
    ))
}
