//! The customer API, compatible with OpenAI's so the official clients work unchanged:
//! `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/chat/completions` (with `stream: true`
//! as server-sent events in OpenAI's chunk format), and `POST /v1/images/classifications`
//! (Hearth's own: `{"model", "images": [base64...], "top_k"}` → labels with probabilities).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::stream::Stream;
use hearth_protocol::{ChatMessage, ChatParams, TaskKind, TaskOutput, TaskPayload};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::PoolState;
use crate::accounts::Admission;
use crate::error::ApiError;
use crate::meter::Metered;
use crate::node_api::{parse, read_body};
use crate::queue::{Completed, JobFailure, NewJob, SubmitError, Submitted, now_unix_ms};

/// Most inputs in one embeddings request, and most images in one classification request.
const MAX_INPUTS: usize = 2048;
const MAX_IMAGES: usize = 64;

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
        .map_err(|e| ApiError::invalid_param("input", e))?;
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

#[derive(Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct RequestMessage {
    role: String,
    content: MessageContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    model: String,
    messages: Vec<RequestMessage>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
}

/// Most tokens one answer may ask for.
const MAX_COMPLETION_TOKENS: u32 = 4096;

fn chat_task(request: &ChatRequest) -> Result<TaskPayload, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty",
        ));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid_param("n", "only n = 1 is supported"));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant"
        ) {
            return Err(ApiError::invalid_param(
                &format!("messages[{i}].role"),
                format!(
                    "unknown role {:?} (expected system, user or assistant)",
                    m.role
                ),
            ));
        }
        let content = match &m.content {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => {
                if let Some(other) = parts.iter().find(|p| p.kind != "text") {
                    return Err(ApiError::invalid_param(
                        &format!("messages[{i}].content"),
                        format!("content parts of type {:?} are not supported", other.kind),
                    ));
                }
                parts
                    .iter()
                    .filter_map(|p| p.text.clone())
                    .collect::<Vec<_>>()
                    .join("")
            }
        };
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        messages.push(ChatMessage {
            role: role.to_owned(),
            content,
        });
    }
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(256);
    if max_tokens == 0 || max_tokens > MAX_COMPLETION_TOKENS {
        return Err(ApiError::invalid_param(
            "max_tokens",
            format!("max_tokens must be 1 to {MAX_COMPLETION_TOKENS}"),
        ));
    }
    let temperature = request.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid_param(
            "temperature",
            "temperature must be between 0 and 2",
        ));
    }
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid_param("top_p", "top_p must be in (0, 1]"));
    }
    let stop = match &request.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(s)) => s.clone(),
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid_param(
            "stop",
            "up to 4 non-empty stop strings",
        ));
    }
    let seed = request
        .seed
        .unwrap_or_else(|| u64::from_le_bytes(hearth_protocol::random_bytes::<8>()));
    Ok(TaskPayload::Chat {
        messages,
        params: ChatParams {
            max_tokens,
            temperature,
            top_p,
            seed,
            stop,
            stream: request.stream,
        },
    })
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<Arc<PoolState>>,
    Customer {
        admission,
        body: request,
    }: Customer<ChatRequest>,
) -> Result<Response, ApiError> {
    offer(&state, &request.model, TaskKind::Chat)?;
    let task = chat_task(&request)?;
    let TaskPayload::Chat { messages, .. } = &task else {
        return Err(ApiError::internal(
            "a chat request made another task".into(),
        ));
    };
    let prompt_tokens = state
        .meter
        .prompt_tokens(&request.model, messages)
        .map_err(|e| ApiError::invalid_param("messages", e))?;
    let deadline = deadline(&state);
    let job = NewJob {
        task,
        metered: Metered::Chat { prompt_tokens },
        customer: Some(admission.key_id.clone()),
    };
    let Some(submitted) = submit(&state, &request.model, vec![job], request.stream)
        .await?
        .into_iter()
        .next()
    else {
        return Err(ApiError::internal("no job was queued".into()));
    };
    let id = format!("chatcmpl-{}", &submitted.job_id[4..]);
    let created = now_unix_ms() / 1000;
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let stream = chat_stream(
            state,
            admission,
            submitted,
            StreamedChat {
                id,
                created,
                model: request.model,
                include_usage,
                deadline,
            },
        );
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let mut guard = JobsGuard {
        state: &state,
        ids: vec![submitted.job_id.clone()],
    };
    let completed = guard
        .wait(&submitted.job_id, submitted.done, deadline)
        .await?;
    guard.ids.clear();
    let TaskOutput::Chat {
        text,
        prompt_tokens,
        completion_tokens,
        finish_reason,
        ..
    } = completed.output
    else {
        return Err(ApiError::internal(
            "a node answered with another kind of output".into(),
        ));
    };
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": u64::from(prompt_tokens) + u64::from(completion_tokens),
        },
    }))
    .into_response())
}

fn chunk(id: &str, created: u64, model: &str, delta: Value, finish_reason: Option<&str>) -> Event {
    Event::default().data(
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        })
        .to_string(),
    )
}

/// What a streamed chat's chunks say of it, and when it must end.
struct StreamedChat {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    deadline: tokio::time::Instant,
}

/// Server-sent events for a streamed chat: the role, each piece of text as the node reports
/// it, then the finish reason (and usage when asked), then `[DONE]`. If the customer hangs up,
/// the job is cancelled and the node told at its next heartbeat.
fn chat_stream(
    state: Arc<PoolState>,
    admission: Admission,
    submitted: Submitted,
    chat: StreamedChat,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let StreamedChat {
        id,
        created,
        model,
        include_usage,
        deadline,
    } = chat;
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        // The request counts against the key's cap until its stream ends.
        let _admission = admission;
        let Submitted {
            job_id,
            done,
            deltas,
        } = submitted;
        let mut deltas = deltas.unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut sent = String::new();
        if tx
            .send(chunk(
                &id,
                created,
                &model,
                json!({ "role": "assistant", "content": "" }),
                None,
            ))
            .await
            .is_err()
        {
            state.queue.cancel(&job_id).await;
            return;
        }
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(timeout);
        tokio::pin!(done);
        let outcome = loop {
            tokio::select! {
                // Every piece already passed goes out before the end.
                biased;
                Some(piece) = deltas.recv() => {
                    sent.push_str(&piece);
                    if tx.send(chunk(&id, created, &model, json!({ "content": piece }), None)).await.is_err() {
                        state.queue.cancel(&job_id).await;
                        return;
                    }
                }
                result = &mut done => break result,
                () = &mut timeout => {
                    state.queue.cancel(&job_id).await;
                    let error = ApiError::timeout("no node finished the job in time".into());
                    let _ = tx.send(Event::default().data(json!(error.body()).to_string())).await;
                    return;
                }
            }
        };
        match outcome {
            Ok(Ok(Completed {
                output:
                    TaskOutput::Chat {
                        text,
                        prompt_tokens,
                        completion_tokens,
                        finish_reason,
                        ..
                    },
                ..
            })) => {
                // Heartbeats may have carried only part of the text: send the rest.
                if let Some(rest) = text.strip_prefix(sent.as_str()).filter(|r| !r.is_empty()) {
                    let _ = tx
                        .send(chunk(
                            &id,
                            created,
                            &model,
                            json!({ "content": rest }),
                            None,
                        ))
                        .await;
                }
                let _ = tx
                    .send(chunk(&id, created, &model, json!({}), Some(&finish_reason)))
                    .await;
                if include_usage {
                    let usage = json!({
                        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [],
                        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                   "total_tokens": u64::from(prompt_tokens) + u64::from(completion_tokens) },
                    });
                    let _ = tx.send(Event::default().data(usage.to_string())).await;
                }
            }
            Ok(Ok(_)) => {
                let error =
                    ApiError::internal("a node answered with another kind of output".into());
                let _ = tx
                    .send(Event::default().data(json!(error.body()).to_string()))
                    .await;
            }
            Ok(Err(failure)) => {
                let error = ApiError::unavailable(failure.to_string());
                let _ = tx
                    .send(Event::default().data(json!(error.body()).to_string()))
                    .await;
            }
            Err(_) => {}
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

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
    let mut guard = JobsGuard {
        state: &state,
        ids: vec![submitted.job_id.clone()],
    };
    let completed = guard
        .wait(&submitted.job_id, submitted.done, deadline)
        .await?;
    guard.ids.clear();
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
