//! The node side of the pool: `/node/v1/...`. Every request but registration is signed by the
//! node's key; registration is signed by the key it registers.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use hearth_protocol::{
    HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Heartbeat, HeartbeatReply, JobResult,
    LeaseReply, LeaseRequest, PROTOCOL_VERSION, ReceiptsReply, ReceiptsRequest, Registration,
    RegistrationReply, ResultReply, ReturnJob, SessionGrant, SessionSecret, SignedReceipt,
    TaskOutput, TaskPayload, node_id, request_payload, session_grant_payload,
};
use serde::de::DeserializeOwned;

use crate::PoolState;
use crate::error::ApiError;
use crate::nodes::NodeInfo;
use crate::queue::{Completed, LeaseError, now_unix_ms};
use crate::store::Payment;
use crate::verify::{Answer, Verdict};

/// The body, or 413/400 in OpenAI's shape.
pub(crate) fn body_bytes(
    state: &PoolState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.config.body_limit_bytes)
        } else {
            ApiError::invalid(rejection.body_text())
        }
    })
}

/// Parse JSON, with serde's message (line, column, what was expected) on failure.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
}

/// A node request whose signature checked out: the node and the parsed body.
pub(crate) struct Signed<T> {
    pub node_id: String,
    pub node: Arc<NodeInfo>,
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<PoolState>> for Signed<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<PoolState>) -> Result<Self, ApiError> {
        let (method, path, headers) = (
            request.method().clone(),
            request.uri().path().to_owned(),
            request.headers().clone(),
        );
        let bytes = body_bytes(state, Bytes::from_request(request, state).await)?;
        let (node_id, node) = state.nodes.authenticate(&method, &path, &headers, &bytes)?;
        Ok(Self {
            node_id,
            node,
            body: parse(&bytes)?,
        })
    }
}

fn lease_error(e: LeaseError) -> ApiError {
    match e {
        LeaseError::UnknownJob => {
            ApiError::not_found("no such job (finished, expired or never leased)".into())
        }
        LeaseError::NotYourLease => ApiError::conflict(e.to_string()),
    }
}

/// `POST /node/v1/register`.
pub(crate) async fn register(
    State(state): State<Arc<PoolState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RegistrationReply>, ApiError> {
    let body = body_bytes(&state, body)?;
    let registration: Registration = parse(&body)?;
    if registration.protocol_version != PROTOCOL_VERSION {
        return Err(ApiError::invalid(format!(
            "protocol version {} is not supported (this pool speaks {PROTOCOL_VERSION})",
            registration.protocol_version
        )));
    }
    // Proof of possession: the registration is signed by the key it registers.
    let signature = headers
        .get(HEADER_SIGNATURE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing signature".into()))?;
    let timestamp: u64 = headers
        .get(HEADER_TIMESTAMP)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::unauthorized("missing or malformed timestamp".into()))?;
    let nonce = headers
        .get(HEADER_NONCE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing nonce".into()))?;
    if now_unix_ms().abs_diff(timestamp) > hearth_protocol::MAX_CLOCK_SKEW_MS {
        return Err(ApiError::unauthorized(
            "registration timestamp too far from the pool's clock".into(),
        ));
    }
    registration
        .public_key
        .verify(
            &request_payload(method.as_str(), uri.path(), timestamp, nonce, &body),
            signature,
        )
        .map_err(|e| ApiError::unauthorized(format!("bad signature: {e}")))?;
    let id = node_id(&registration.public_key);
    // The node's half of a session key, answered with ours, signed with the pool's key.
    let (session, grant) = match &registration.session_key {
        None => (None, None),
        Some(node_half) => {
            let secret =
                SessionSecret::generate().map_err(|e| ApiError::internal(e.to_string()))?;
            let key = secret
                .agree(node_half, &id)
                .map_err(|e| ApiError::invalid(format!("session_key: {e}")))?;
            let pool_session_key = secret.public();
            let signature = state
                .pool_key
                .sign(&session_grant_payload(&id, &pool_session_key));
            (
                Some(key),
                Some(SessionGrant {
                    pool_session_key,
                    signature,
                }),
            )
        }
    };
    tracing::info!(node = %id, device = %registration.profile.device, models = ?registration.profile.models, "node registered");
    let released = state.queue.release_node(&id);
    if released > 0 {
        tracing::info!(node = %id, released, "node came back: its leases are queued again");
    }
    state.nodes.register(
        id.clone(),
        NodeInfo {
            key: registration.public_key,
            profile: registration.profile,
            strike_count: 0.into(),
            session,
        },
    );
    Ok(Json(RegistrationReply {
        node_id: id,
        pool_public_key: state.pool_key.public_key(),
        pool_name: state.config.name.clone(),
        demo: state.config.demo,
        session: grant,
    }))
}

/// `POST /node/v1/lease`: long poll for work.
pub(crate) async fn lease(
    State(state): State<Arc<PoolState>>,
    Signed {
        node_id: id,
        node: info,
        body: request,
    }: Signed<LeaseRequest>,
) -> Result<Json<LeaseReply>, ApiError> {
    let wait = Duration::from_millis(request.wait_ms.min(state.config.max_lease_wait_ms));
    let max = request.max_jobs.clamp(1, 64) as usize;
    let jobs = state
        .queue
        .lease(&id, &info.profile.models, max, wait)
        .await;
    Ok(Json(LeaseReply { jobs }))
}

/// `POST /node/v1/jobs/{id}/heartbeat`.
pub(crate) async fn heartbeat(
    State(state): State<Arc<PoolState>>,
    Path(job_id): Path<String>,
    Signed {
        node_id: id,
        body: beat,
        ..
    }: Signed<Heartbeat>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let (lease_expires_unix_ms, cancel) = state
        .queue
        .heartbeat(&job_id, &id, &beat.lease_id, &beat.text_delta)
        .map_err(lease_error)?;
    Ok(Json(HeartbeatReply {
        lease_expires_unix_ms,
        cancel,
    }))
}

/// `POST /node/v1/jobs/{id}/return`: no penalty.
pub(crate) async fn give_back(
    State(state): State<Arc<PoolState>>,
    Path(job_id): Path<String>,
    Signed {
        node_id: id,
        body: request,
        ..
    }: Signed<ReturnJob>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .queue
        .give_back(&job_id, &id, &request.lease_id)
        .map_err(lease_error)?;
    tracing::info!(job = %job_id, node = %id, reason = %request.reason, "job returned");
    Ok(Json(serde_json::json!({ "returned": job_id })))
}

/// Check a result against its task: the right kind, one answer per input, sane numbers.
fn check_output(task: &TaskPayload, output: &TaskOutput) -> Result<u64, String> {
    match (task, output) {
        (TaskPayload::Embeddings { texts }, TaskOutput::Embeddings { vectors, tokens }) => {
            if vectors.len() != texts.len() || tokens.len() != texts.len() {
                return Err(format!(
                    "{} vectors and {} token counts for {} texts",
                    vectors.len(),
                    tokens.len(),
                    texts.len()
                ));
            }
            let dims = vectors.first().map_or(0, Vec::len);
            if dims == 0
                || vectors
                    .iter()
                    .any(|v| v.len() != dims || v.iter().any(|x| !x.is_finite()))
            {
                return Err("vectors are empty, ragged or not finite".into());
            }
            Ok(tokens.iter().map(|&t| u64::from(t)).sum())
        }
        (
            TaskPayload::Chat { params, .. },
            TaskOutput::Chat {
                completion_tokens,
                token_ids,
                finish_reason,
                ..
            },
        ) => {
            if *completion_tokens > params.max_tokens
                || token_ids.len() > params.max_tokens as usize + 1
            {
                return Err(format!(
                    "{completion_tokens} tokens for a limit of {}",
                    params.max_tokens
                ));
            }
            if finish_reason != "stop" && finish_reason != "length" {
                return Err(format!("finish reason {finish_reason:?}"));
            }
            Ok(u64::from(*completion_tokens))
        }
        (
            TaskPayload::ImageClassification { images, top_k },
            TaskOutput::ImageClassification { results },
        ) => {
            if results.len() != images.len() {
                return Err(format!(
                    "{} results for {} images",
                    results.len(),
                    images.len()
                ));
            }
            let bad = results.iter().any(|r| {
                r.is_empty()
                    || r.len() > *top_k as usize
                    || r.iter().any(|c| !(0.0..=1.0).contains(&c.probability))
            });
            if bad {
                return Err(
                    "class lists are empty, too long or have probabilities outside 0..1".into(),
                );
            }
            Ok(images.len() as u64)
        }
        (TaskPayload::ChatScore { token_ids, .. }, TaskOutput::ChatScore { ranks }) => {
            if ranks.len() != token_ids.len() {
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

/// Issue and store a receipt to each of `paid` for job `job_id`, durably; returns them.
async fn pay(
    state: &Arc<PoolState>,
    job_id: &str,
    model: &str,
    paid: &[Answer],
) -> Result<Vec<SignedReceipt>, ApiError> {
    let offer = state
        .config
        .model(model)
        .ok_or_else(|| ApiError::internal(format!("model {model} is no longer sold")))?;
    let payments = paid
        .iter()
        .map(|answer| Payment {
            job_id: job_id.to_owned(),
            node_id: answer.node_id.clone(),
            model: model.to_owned(),
            units: answer.units,
            unit: offer.unit().to_owned(),
            micro_credits: offer.price(answer.units),
        })
        .collect();
    state
        .receipts
        .issue(payments)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `POST /node/v1/jobs/{id}/result`: checked, paid once, answered with a signed receipt. A
/// repeat of an accepted result gets the same receipt and pays nothing more.
pub(crate) async fn result(
    State(state): State<Arc<PoolState>>,
    Path(job_id): Path<String>,
    Signed {
        node_id: id,
        node: info,
        body: result,
    }: Signed<JobResult>,
) -> Result<Json<ResultReply>, ApiError> {
    let next = result.next.clone();
    let mut reply = settle(&state, &job_id, &id, result).await?;
    if let Some(next) = next {
        let models = &info.profile.models;
        let wait = Duration::from_millis(next.wait_ms.min(state.config.max_lease_wait_ms));
        let max = next.max_jobs.clamp(1, 64) as usize;
        reply.jobs = state.queue.lease(&id, models, max, wait).await;
    }
    Ok(Json(reply))
}

/// Check, verify and pay one result.
async fn settle(
    state: &Arc<PoolState>,
    job_id: &str,
    id: &str,
    result: JobResult,
) -> Result<ResultReply, ApiError> {
    let (job_id, id) = (job_id.to_owned(), id.to_owned());
    let accepted = match state.queue.accept_result(&job_id, &id, &result.lease_id) {
        Ok(accepted) => accepted,
        Err(error) => {
            // Already paid to this node: the same receipt again (a retry after a lost reply).
            let stored = state
                .store
                .receipt_for_job(&job_id, &id)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            if let Some(receipt) = stored {
                return Ok(ResultReply {
                    receipt: Some(receipt),
                    pending_verification: false,
                    jobs: Vec::new(),
                });
            }
            if state.queue.is_paying(&job_id, &id, &result.lease_id) {
                return Err(ApiError::conflict(
                    "this result is being recorded; retry shortly".into(),
                ));
            }
            return Err(lease_error(error));
        }
    };
    let units = match check_output(&accepted.leased_task, &result.output) {
        Ok(units) => units,
        Err(reason) => {
            let strikes = state.nodes.strike(&id);
            tracing::warn!(job = %job_id, node = %id, strikes, %reason, "result refused");
            state.queue.reject_result(&job_id);
            return Err(ApiError::unprocessable(format!("result refused: {reason}")));
        }
    };
    let answer = Answer {
        node_id: id.clone(),
        output: result.output,
        units,
    };
    if !accepted.verify {
        let receipts = match pay(
            state,
            &job_id,
            &accepted.model,
            std::slice::from_ref(&answer),
        )
        .await
        {
            Ok(receipts) => receipts,
            Err(error) => {
                state.queue.reject_result(&job_id);
                return Err(error);
            }
        };
        let receipt = receipts.into_iter().next();
        if let Some(receipt) = &receipt {
            state.queue.complete(
                &job_id,
                Completed {
                    output: answer.output,
                    receipt: receipt.clone(),
                },
            );
        }
        return Ok(ResultReply {
            receipt,
            pending_verification: false,
            jobs: Vec::new(),
        });
    }

    let (paid, struck, output) = match state.queue.record_answer(&job_id, answer) {
        Verdict::NeedAnother { .. } => {
            return Ok(ResultReply {
                receipt: None,
                pending_verification: true,
                jobs: Vec::new(),
            });
        }
        Verdict::Settled {
            paid,
            struck,
            output,
        } => (paid, struck, Some(output)),
        Verdict::Redo { paid, struck } => (paid, struck, None),
        Verdict::Unresolved => {
            return Err(ApiError::unprocessable(
                "no two answers to this job agreed; nobody is paid for it".into(),
            ));
        }
    };
    for node in &struck {
        let strikes = state.nodes.strike(node);
        tracing::warn!(job = %job_id, %node, strikes, "answer failed verification");
    }
    let receipts = pay(state, &job_id, &accepted.model, &paid).await?;
    if let (Some(output), Some(first)) = (output, receipts.first()) {
        state.queue.complete(
            &job_id,
            Completed {
                output,
                receipt: first.clone(),
            },
        );
    }
    if struck.contains(&id) {
        return Err(ApiError::unprocessable(
            "the result failed verification".into(),
        ));
    }
    Ok(ResultReply {
        receipt: receipts.into_iter().find(|r| r.receipt.node_id == id),
        pending_verification: false,
        jobs: Vec::new(),
    })
}

/// `POST /node/v1/receipts`: the node's receipts in order, to catch its ledger up (also the
/// way to collect receipts of results that were verified later).
pub(crate) async fn receipts(
    State(state): State<Arc<PoolState>>,
    Signed {
        node_id: id,
        body: request,
        ..
    }: Signed<ReceiptsRequest>,
) -> Result<Json<ReceiptsReply>, ApiError> {
    let receipts = state
        .store
        .receipts_after(
            &id,
            request.after_sequence,
            request.limit.clamp(1, 1000) as usize,
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(ReceiptsReply { receipts }))
}
