//! The customer API, compatible with OpenAI's so the official clients work unchanged:
//! `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/chat/completions` (with `stream: true`
//! as server-sent events in OpenAI's chunk format), and `POST /v1/images/classifications`
//! (Hearth's own: `{"model", "images": [base64...], "top_k"}` → labels with probabilities).
//!
//! Each endpoint has its room: [`embeddings`], [`chat`] (with streaming), [`images`]; here is
//! what they share: admission by API key, the model's offer, the request's deadline, and
//! putting jobs in the queue and waiting for them.

mod chat;
mod embeddings;
mod images;

pub(crate) use chat::chat_completions;
pub(crate) use embeddings::embeddings;
pub(crate) use images::classify_images;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::HeaderMap;
use hearth_protocol::TaskKind;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::PoolState;
use crate::accounts::Admission;
use crate::error::ApiError;
use crate::node_api::{parse, read_body};
use crate::queue::{Completed, JobFailure, NewJob, SubmitError, Submitted};

/// A customer request let in by its API key (within the key's rate, cap and quota): the
/// admission, held until the request ends, and the parsed body.
pub(crate) struct Customer<T> {
    pub admission: Admission,
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<PoolState>> for Customer<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<PoolState>) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let admission = state.accounts.admit(&parts.headers)?;
        let bytes = read_body(state, &parts.headers, body, state.config.body_limit_bytes).await?;
        Ok(Self {
            admission,
            body: parse(&bytes)?,
        })
    }
}

fn offer(state: &PoolState, model: &str, task: TaskKind) -> Result<(), ApiError> {
    match state.config.model(model) {
        Some(m) if m.task == task => Ok(()),
        Some(_) => Err(ApiError::invalid_param(
            "model",
            format!("The model `{model}` does not support this endpoint."),
        )),
        None => Err(ApiError::unknown_model(model)),
    }
}

/// The one deadline of a customer request, however many jobs it splits into.
fn deadline(state: &PoolState) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(state.config.request_timeout_ms)
}

/// Put a request's jobs in the queue: 503 with `Retry-After` at once when it is full.
async fn submit(
    state: &PoolState,
    model: &str,
    jobs: Vec<NewJob>,
    stream: bool,
) -> Result<Vec<Submitted>, ApiError> {
    let count = jobs.len() as u64;
    let submitted = state.queue.submit(model, jobs, stream).await;
    if submitted.is_ok() {
        state.metrics.submitted(count);
    }
    submitted.map_err(|e: SubmitError| match e {
        SubmitError::Store(error) => error.into(),
        other => ApiError::overloaded(other.to_string(), 5),
    })
}

/// Wait for a job until the request's `deadline`, cancelling it if the time runs out.
async fn wait(
    state: &PoolState,
    job_id: &str,
    done: oneshot::Receiver<Result<Completed, JobFailure>>,
    deadline: tokio::time::Instant,
) -> Result<Completed, ApiError> {
    match tokio::time::timeout_at(deadline, done).await {
        Ok(Ok(Ok(completed))) => Ok(completed),
        Ok(Ok(Err(JobFailure::ShuttingDown))) => Err(ApiError::overloaded(
            JobFailure::ShuttingDown.to_string(),
            5,
        )),
        Ok(Ok(Err(failure))) => Err(ApiError::unavailable(failure.to_string())),
        Ok(Err(_)) => Err(ApiError::internal("the job was dropped".into())),
        Err(_) => {
            state.queue.cancel(job_id).await;
            Err(ApiError::timeout(format!(
                "no node finished the job within {} s",
                state.config.request_timeout_ms / 1000
            )))
        }
    }
}

/// Cancels its jobs when dropped (the customer hung up, or one job failed).
struct JobsGuard<'a> {
    state: &'a PoolState,
    ids: Vec<String>,
}

impl JobsGuard<'_> {
    /// Wait for `job`; on failure every job of the request is cancelled before the error is
    /// returned (the request is over).
    async fn wait(
        &mut self,
        job: &str,
        done: oneshot::Receiver<Result<Completed, JobFailure>>,
        deadline: tokio::time::Instant,
    ) -> Result<Completed, ApiError> {
        let waited = wait(self.state, job, done, deadline).await;
        if waited.is_err() {
            for id in std::mem::take(&mut self.ids) {
                self.state.queue.cancel(&id).await;
            }
        }
        waited
    }
}

/// Wait for a request's one job until `deadline`: cancelled if the customer hangs up meanwhile.
async fn wait_for_one(
    state: &PoolState,
    submitted: Submitted,
    deadline: tokio::time::Instant,
) -> Result<Completed, ApiError> {
    let mut guard = JobsGuard {
        state,
        ids: vec![submitted.job_id.clone()],
    };
    let completed = guard
        .wait(&submitted.job_id, submitted.done, deadline)
        .await?;
    guard.ids.clear();
    Ok(completed)
}

impl Drop for JobsGuard<'_> {
    /// The customer hung up mid-request: its jobs are cancelled in the background.
    fn drop(&mut self) {
        self.state.queue.cancel_later(std::mem::take(&mut self.ids));
    }
}

/// `GET /v1/models`.
pub(crate) async fn models(
    State(state): State<Arc<PoolState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _admission = state.accounts.admit(&headers)?;
    let data: Vec<Value> = state
        .config
        .models
        .iter()
        .map(|m| json!({ "id": m.id, "object": "model", "created": 0, "owned_by": "hearth" }))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}
