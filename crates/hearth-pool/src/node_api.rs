//! The node side of the pool: `/node/v1/...`. A node asks for a challenge, registers signed by
//! the key it registers and quoting the challenge, and authenticates every later request with
//! its session MAC (or a signature). Results are checked ([`crate::checks`]) and, for a share
//! drawn from the node's record, verified by an established node before anyone is paid.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use hearth_protocol::{
    Challenge, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HardwareProfile, Heartbeat,
    HeartbeatReply, JobResult, LeaseReply, LeaseRequest, PROTOCOL_VERSION, ReceiptsReply,
    ReceiptsRequest, Registration, RegistrationReply, ResultReply, ReturnJob, SessionGrant,
    SessionSecret, SignedReceipt, node_id, request_payload, session_grant_payload,
};
use serde::de::DeserializeOwned;

use crate::PoolState;
use crate::checks::check_output;
use crate::error::ApiError;
use crate::metrics::Outcome;
use crate::nodes::{MAX_PROFILE_MODELS, MAX_PROFILE_TEXT, NodeInfo};
use crate::queue::{Completed, IdleMemo, LeaseError, now_unix_ms};
use crate::verify::{Answer, Verdict};
use hearth_protocol::Payment;

/// Largest registration body, in bytes (a profile lists a few model ids).
const MAX_REGISTRATION_BYTES: usize = 64 << 10;

/// Read a request body of at most `limit` bytes within the pool's body deadline: 413, 408 or
/// 400 in OpenAI's shape otherwise. A declared length over the limit is refused unread.
pub(crate) async fn read_body(
    state: &PoolState,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let deadline = Duration::from_millis(state.config.body_timeout_ms);
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            let over_limit = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(ApiError::too_large(limit))
            } else {
                Err(ApiError::invalid(format!(
                    "could not read the body: {error}"
                )))
            }
        }
        Err(_) => Err(ApiError::body_timeout(deadline)),
    }
}

/// Parse JSON, with serde's message (line, column, what was expected) on failure.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
}

/// A node request whose MAC or signature checked out: the node and the parsed body. The
/// headers are checked (known node, fresh time, not quarantined) before the body is read.
pub(crate) struct Signed<T> {
    pub node_id: String,
    pub node: Arc<NodeInfo>,
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<PoolState>> for Signed<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<PoolState>) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let mut caller = state.nodes.check_headers(&parts.headers).await?;
        let bytes = read_body(
            state,
            &parts.headers,
            body,
            state.config.node_body_limit_bytes,
        )
        .await?;
        state
            .nodes
            .verify_body(&mut caller, &parts.method, parts.uri.path(), &bytes)
            .await?;
        Ok(Self {
            node_id: caller.node_id,
            node: caller.node,
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
        LeaseError::Store(error) => error.into(),
    }
}

/// `POST /node/v1/challenge`: a fresh value for one registration. Limited per source address,
/// so identities cost a round trip each and cannot be made by the thousand.
pub(crate) async fn challenge(
    State(state): State<Arc<PoolState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<Challenge>, ApiError> {
    state.nodes.limit_registrations(peer.ip())?;
    Ok(Json(state.nodes.challenge()))
}

/// Refuse profiles too large to keep for every node; keep only the models this pool sells, so
/// a lease costs the same whatever a node lists.
fn check_profile(state: &PoolState, profile: &mut HardwareProfile) -> Result<(), ApiError> {
    if profile.models.len() > MAX_PROFILE_MODELS
        || profile.models.iter().any(|m| m.len() > MAX_PROFILE_TEXT)
        || profile.device.len() > MAX_PROFILE_TEXT
        || profile.backend.len() > MAX_PROFILE_TEXT
    {
        return Err(ApiError::invalid_param(
            "profile",
            format!(
                "a profile lists at most {MAX_PROFILE_MODELS} models, each name at most {MAX_PROFILE_TEXT} bytes"
            ),
        ));
    }
    profile.models.retain(|m| state.config.model(m).is_some());
    profile.models.dedup();
    Ok(())
}

/// `POST /node/v1/register`: signed with the key it registers (proof of possession), quoting
/// a challenge the pool gave out and that no registration used before.
pub(crate) async fn register(
    State(state): State<Arc<PoolState>>,
    request: Request,
) -> Result<Json<RegistrationReply>, ApiError> {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized(format!("missing {name} header")))
    };
    let signature = header(HEADER_SIGNATURE)?;
    let nonce = header(HEADER_NONCE)?;
    let timestamp: u64 = header(HEADER_TIMESTAMP)?
        .parse()
        .map_err(|_| ApiError::unauthorized("malformed timestamp".into()))?;
    if now_unix_ms().abs_diff(timestamp) > hearth_protocol::MAX_CLOCK_SKEW_MS {
        return Err(ApiError::unauthorized(
            "registration timestamp too far from the pool's clock".into(),
        ));
    }
    let body = read_body(&state, &parts.headers, body, MAX_REGISTRATION_BYTES).await?;
    let mut registration: Registration = parse(&body)?;
    if registration.protocol_version != PROTOCOL_VERSION {
        return Err(ApiError::invalid(format!(
            "protocol version {} is not supported (this pool speaks {PROTOCOL_VERSION}): update Hearth",
            registration.protocol_version
        )));
    }
    check_profile(&state, &mut registration.profile)?;
    registration
        .public_key
        .verify(
            &request_payload(
                parts.method.as_str(),
                parts.uri.path(),
                timestamp,
                nonce,
                &body,
            ),
            signature,
        )
        .map_err(|e| ApiError::unauthorized(format!("bad signature: {e}")))?;
    if !state.nodes.take_challenge(&registration.challenge) {
        return Err(ApiError::unauthorized(
            "the registration quotes no live challenge (unknown, used or expired): ask /node/v1/challenge for a new one".into(),
        ));
    }
    let id = node_id(&registration.public_key);
    if let Some(reason) = state.nodes.record(&id).await?.quarantined {
        return Err(ApiError::quarantined(&reason));
    }
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
    let released = state.queue.release_node(&id).await?;
    if released > 0 {
        tracing::info!(node = %id, released, "node came back: its leases are queued again");
    }
    state
        .nodes
        .register(
            id.clone(),
            NodeInfo {
                key: registration.public_key,
                profile: registration.profile,
                session,
                idle: IdleMemo::default(),
            },
        )
        .await?;
    Ok(Json(RegistrationReply {
        node_id: id,
        pool_public_key: state.pool_key.public_key(),
        pool_name: state.config.name.clone(),
        demo: state.config.demo,
        terms: Some(hearth_protocol::PayoutTerms {
            credit_value: state.config.credit_value,
            currency: state.config.currency.clone(),
            settlement_ms: state.config.settlement_ms,
        }),
        session: grant,
        release: state.config.release.clone(),
    }))
}

/// Up to `request.max_jobs` jobs for node `id` (one at a time while it is on probation).
async fn lease_for(
    state: &PoolState,
    id: &str,
    info: &NodeInfo,
    request: &LeaseRequest,
) -> Result<Vec<hearth_protocol::Job>, ApiError> {
    let established = state
        .nodes
        .record(id)
        .await?
        .is_established(&state.config, id);
    let wait = Duration::from_millis(request.wait_ms.min(state.config.max_lease_wait_ms));
    let max = if established {
        request.max_jobs.clamp(1, 64) as usize
    } else {
        1
    };
    // A node may say what it runs now instead of what it registered: without a model whose
    // files it found damaged, with one it fetched since. Only models this pool sells count,
    // as in a registration's profile.
    let models: Vec<String> = match &request.models {
        Some(now) => {
            let mut models: Vec<String> = now
                .iter()
                .filter(|m| m.len() <= MAX_PROFILE_TEXT && state.config.model(m).is_some())
                .take(MAX_PROFILE_MODELS)
                .cloned()
                .collect();
            models.sort_unstable();
            models.dedup();
            models
        }
        None => info.profile.models.clone(),
    };
    let jobs = state
        .queue
        .lease(id, &models, max, wait, established, &info.idle)
        .await?;
    if request.models.is_some() {
        // What a narrowed look found says nothing about the node's other models.
        info.idle.forget();
    }
    Ok(jobs)
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
    let jobs = lease_for(&state, &id, &info, &request).await?;
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
        .await
        .map_err(lease_error)?;
    Ok(Json(HeartbeatReply {
        lease_expires_unix_ms,
        cancel,
    }))
}

/// `POST /node/v1/jobs/{id}/return`: no penalty (the hand-back is counted, so a job no node
/// answers still ends).
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
        .await
        .map_err(lease_error)?;
    let reason: String = request.reason.chars().take(200).collect();
    tracing::info!(job = %job_id, node = %id, reason = ?reason, "job returned");
    Ok(Json(serde_json::json!({ "returned": job_id })))
}

/// Issue and store a receipt to each of `paid` for job `job_id`, durably, and with them
/// charge its customer (if `charged`: an accepted answer) for `units` plus the pool's fee;
/// returns the receipts.
async fn pay(
    state: &Arc<PoolState>,
    job_id: &str,
    accepted: &crate::queue::Accepted,
    paid: &[Answer],
    charged: Option<u64>,
) -> Result<Vec<SignedReceipt>, ApiError> {
    let model = accepted.model.as_str();
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
        .collect::<Vec<Payment>>();
    let charge = match (&accepted.customer, charged) {
        (Some(customer), Some(units)) => {
            let to_nodes = payments
                .iter()
                .fold(0u64, |sum, p| sum.saturating_add(p.micro_credits));
            Some(state.accounts.charge_for(customer, model, units, to_nodes))
        }
        _ => None,
    };
    let receipts = state
        .receipts
        .issue(payments, charge.clone())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(charge) = &charge
        && !receipts.is_empty()
    {
        state.accounts.charged(charge);
    }
    Ok(receipts)
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
        reply.jobs = lease_for(&state, &id, &info, &next).await?;
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
    let share = state
        .nodes
        .record(&id)
        .await?
        .verification_share(&state.config, &id);
    let accepted = match state
        .queue
        .accept_result(&job_id, &id, &result.lease_id, share)
        .await
    {
        Ok(accepted) => accepted,
        Err(error) => {
            // Already paid to this node: the same receipt again (a retry after a lost reply).
            let stored = state.store.receipt_for_job(&job_id, &id).await?;
            if let Some(receipt) = stored {
                return Ok(ResultReply {
                    receipt: Some(receipt),
                    pending_verification: false,
                    jobs: Vec::new(),
                });
            }
            if state.queue.is_paying(&job_id, &id, &result.lease_id).await {
                return Err(ApiError::conflict(
                    "this result is being recorded; retry shortly".into(),
                ));
            }
            return Err(lease_error(error));
        }
    };
    let units = match check_output(&state.meter, &accepted, &result.output) {
        Ok(units) => units,
        Err(reason) => {
            state.metrics.count(Outcome::Refused, 1);
            let record = state.nodes.strike(&id, &reason.to_string()).await;
            tracing::warn!(job = %job_id, node = %id, strikes = record.strikes, %reason, "result refused");
            state.queue.reject_result(&job_id).await?;
            return Err(ApiError::unprocessable(format!(
                "result refused, nothing paid: {reason}"
            )));
        }
    };
    state.metrics.lease_to_result(accepted.lease_to_result_ms);
    let answer = Answer {
        node_id: id.clone(),
        output: result.output,
        units,
    };
    if !accepted.verify {
        let receipts = match pay(
            state,
            &job_id,
            &accepted,
            std::slice::from_ref(&answer),
            Some(answer.units),
        )
        .await
        {
            Ok(receipts) => receipts,
            Err(error) => {
                state.queue.reject_result(&job_id).await?;
                return Err(error);
            }
        };
        state.metrics.count(Outcome::Paid, receipts.len() as u64);
        let receipt = receipts.into_iter().next();
        if receipt.is_some() {
            state
                .queue
                .complete(
                    &job_id,
                    Completed {
                        output: answer.output,
                    },
                )
                .await?;
        }
        return Ok(ResultReply {
            receipt,
            pending_verification: false,
            jobs: Vec::new(),
        });
    }

    let (paid, struck, output) = match state.queue.record_answer(&job_id, answer).await? {
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
            state.metrics.count(Outcome::Unresolved, 1);
            return Err(ApiError::unprocessable(
                "no two answers to this job agreed; nobody is paid for it".into(),
            ));
        }
    };
    state
        .metrics
        .count(Outcome::FailedVerification, struck.len() as u64);
    for node in &struck {
        let record = state
            .nodes
            .strike(node, "its answer failed verification")
            .await;
        tracing::warn!(job = %job_id, %node, strikes = record.strikes, "answer failed verification");
    }
    for answer in &paid {
        state.nodes.passed(&answer.node_id).await;
    }
    // The customer pays for the accepted answer and its check (not for a failed one).
    let charged = output.as_ref().map(|_| paid.first().map_or(0, |a| a.units));
    let receipts = pay(state, &job_id, &accepted, &paid, charged).await?;
    state.metrics.count(Outcome::Paid, receipts.len() as u64);
    if let Some(output) = output
        && !receipts.is_empty()
    {
        state.queue.complete(&job_id, Completed { output }).await?;
    }
    if struck.contains(&id) {
        return Err(ApiError::unprocessable(
            "the result failed verification".into(),
        ));
    }
    Ok(ResultReply {
        receipt: receipts
            .into_iter()
            .find(|r| r.receipt.payment.node_id == id),
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
        .await?;
    Ok(Json(ReceiptsReply { receipts }))
}
