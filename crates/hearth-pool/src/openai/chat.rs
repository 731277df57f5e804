//! `POST /v1/chat/completions`, whole or streamed as server-sent events in OpenAI's chunks.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use hearth_protocol::{ChatMessage, ChatParams, TaskKind, TaskOutput, TaskPayload};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Customer, deadline, offer, submit, wait_for_one};
use crate::PoolState;
use crate::accounts::Admission;
use crate::error::ApiError;
use crate::meter::Metered;
use crate::queue::{Completed, NewJob, Submitted, now_unix_ms};

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
        .map_err(|e| ApiError::invalid_param("messages", e.to_string()))?;
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
    let completed = wait_for_one(&state, submitted, deadline).await?;
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
