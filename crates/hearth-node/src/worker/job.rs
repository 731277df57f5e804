//! One job, from lease to ledger: compute it (heartbeating, and giving it back when the owner
//! needs the machine or Hearth stops), deliver the result, record the receipt, then rest as long
//! as the duty cycle asks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_inference::{CancelToken, InferenceError};
use hearth_ledger::{JobOutcome, JobStatus, LedgerError};
use hearth_protocol::{Heartbeat, HeartbeatReply, Job, JobResult, ResultReply, TaskOutput};
use tokio::sync::watch;

use super::{Context, Slot, WorkerError, WorkerEvent, collect_receipts, give_back, rest_after};
use crate::executor::ExecError;

use hearth_protocol::now_unix_ms as now_ms;

/// Why a job stopped before it finished.
enum Interrupted {
    Paused,
    Stopping,
    CancelledByPool,
}

impl Interrupted {
    /// What the ledger says about a job given back for this.
    fn reason(&self) -> &'static str {
        match self {
            Self::Paused => "paused for the owner",
            Self::Stopping => "Hearth is stopping",
            Self::CancelledByPool => "the customer cancelled the request",
        }
    }
}

/// What computing a job came to: its output (or why there is none), and whether it was
/// interrupted.
struct Computed {
    output: Result<Result<TaskOutput, ExecError>, tokio::task::JoinError>,
    interrupted: Option<Interrupted>,
    /// Chat text generated since the last heartbeat.
    streamed: Arc<Mutex<String>>,
}

/// The job's times and energy, as the result and the ledger record them.
#[derive(Clone, Copy)]
struct Measured {
    started: u64,
    ended: u64,
    energy_wh: Option<f64>,
    energy_estimated: bool,
}

impl Measured {
    fn outcome(
        self,
        status: JobStatus,
        receipt: Option<hearth_protocol::SignedReceipt>,
        note: Option<String>,
    ) -> JobOutcome {
        JobOutcome {
            status,
            ended_unix_ms: self.ended,
            energy_wh: self.energy_wh,
            energy_estimated: self.energy_estimated,
            receipt,
            note,
        }
    }
}

/// Run `job` in `slot` to its end: every job ends in the ledger (completed with its receipt,
/// given back, or failed with the reason) before the node hears of it.
pub(super) async fn run_job(
    context: &Context,
    job: Job,
    slot: Slot<'_>,
    paused: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let started = now_ms();
    let record = context
        .ledger
        .start_job(&job.id, &job.model, job.task.name(), started)?;
    // The start reaches the disk while the job runs, not before it.
    let flush_start = {
        let ledger = Arc::clone(&context.ledger);
        tokio::task::spawn_blocking(move || ledger.flush())
    };
    (context.events)(WorkerEvent::JobStarted(record));
    let computed = compute(context, &job, paused, stop.clone()).await;
    let ended = now_ms();
    if let Ok(Err(error)) = flush_start.await {
        tracing::warn!(job = %job.id, %error, "could not flush the job's start");
    }
    let (energy_wh, energy_estimated) = match &context.energy {
        Some(meter) => meter(started, ended).map_or((None, false), |(wh, est)| (Some(wh), est)),
        None => (None, false),
    };
    let measured = Measured {
        started,
        ended,
        energy_wh,
        energy_estimated,
    };
    let output = match (computed.output, computed.interrupted) {
        (Ok(Ok(output)), None) => output,
        (output, interrupted) => {
            let (status, reason) = match (interrupted, output) {
                (Some(why), _) => (JobStatus::Returned, why.reason().to_owned()),
                (None, Ok(Err(ExecError::BrokenModel { model, reason }))) => {
                    // Handed back once: the model is left out of leases until its files
                    // are fetched again.
                    context.trouble.repair(&context.executor, &model);
                    (
                        JobStatus::Returned,
                        format!(
                            "this node's copy of {model} is damaged ({reason}); fetching it again"
                        ),
                    )
                }
                (None, Ok(Err(e))) => {
                    // A customer's unusable input is not the node's failure.
                    if !matches!(
                        e,
                        ExecError::BadInput(_)
                            | ExecError::Inference(InferenceError::InvalidRequest(_))
                    ) {
                        context.trouble.job_failed(&e.to_string());
                    }
                    (JobStatus::Failed, e.to_string())
                }
                (None, Err(e)) => {
                    let reason = format!("the job crashed: {e}");
                    context.trouble.job_failed(&reason);
                    (JobStatus::Failed, reason)
                }
                (None, Ok(Ok(_))) => (JobStatus::Failed, "no output".to_owned()),
            };
            give_back(context, &job, &reason).await;
            let record = context.ledger.finish_job(
                &job.id,
                measured.outcome(status, None, Some(reason)),
                &context.pool_key,
            )?;
            (context.events)(WorkerEvent::JobEnded(record));
            return Ok(());
        }
    };
    context.trouble.job_completed();
    send_last_text(context, &job, &computed.streamed).await;
    let reply = match deliver(context, &job, output, measured, &stop).await {
        Ok(reply) => reply,
        Err(error) => {
            // The pool is gone (or refuses the result): nothing is owed for it. If it did pay
            // after all, the receipt is collected when the node next joins.
            let note = format!("result not delivered: {error}");
            let record = context.ledger.finish_job(
                &job.id,
                measured.outcome(JobStatus::Failed, None, Some(note)),
                &context.pool_key,
            )?;
            (context.events)(WorkerEvent::JobEnded(record));
            return Err(error);
        }
    };
    // Throttled: the slot rests in proportion to the compute time (a `d`% duty cycle), and
    // the ledger write below overlaps the rest. Stopping ends the rest at once.
    let duty = context
        .config
        .duty_percent
        .as_ref()
        .map_or(100, |duty| *duty.borrow());
    let rest = rest_after(Duration::from_millis(ended.saturating_sub(started)), duty);
    let rest_until = tokio::time::Instant::now() + rest;
    let hold_slot = if rest.is_zero() {
        drop(slot);
        None
    } else {
        Some(slot)
    };
    if record_receipt(context, &job, reply, measured).await?
        && let Some(slot) = hold_slot
    {
        rest_in_slot(context, slot, rest_until, &mut stop).await;
    }
    Ok(())
}

/// Run the job on the executor until it ends or is interrupted, heartbeating meanwhile: the
/// pool may cancel it, a pause gives it `pause_grace` to finish before it is stopped, and
/// stopping Hearth stops it at once.
async fn compute(
    context: &Context,
    job: &Job,
    mut paused: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Computed {
    let cancel = CancelToken::new();
    let streamed = Arc::new(Mutex::new(String::new()));
    let work = {
        let (executor, job, cancel, streamed) = (
            Arc::clone(&context.executor),
            job.clone(),
            cancel.clone(),
            Arc::clone(&streamed),
        );
        tokio::task::spawn_blocking(move || {
            executor.run(&job.model, &job.task, &cancel, &mut |text| {
                streamed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(text);
            })
        })
    };
    tokio::pin!(work);
    // The first heartbeat is due one period in (an interval's first tick would fire at once
    // and cost every short job a round trip).
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + context.config.heartbeat,
        context.config.heartbeat,
    );
    let mut interrupted = None;
    let mut give_back_at: Option<tokio::time::Instant> = None;
    let output = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = tick.tick() => {
                let delta = std::mem::take(&mut *streamed.lock().unwrap_or_else(|e| e.into_inner()));
                let beat = Heartbeat { lease_id: job.lease_id.clone(), text_delta: delta };
                let reply: Result<HeartbeatReply, _> = context.client.post(&format!("/node/v1/jobs/{}/heartbeat", job.id), &beat).await;
                if let Ok(reply) = reply && reply.cancel {
                    cancel.cancel();
                    interrupted.get_or_insert(Interrupted::CancelledByPool);
                }
            }
            Ok(()) = paused.changed(), if interrupted.is_none() && give_back_at.is_none() => {
                if *paused.borrow() {
                    // The owner needs the GPU: a job that ends within the grace period
                    // finishes (and is paid); one that does not is stopped and given back.
                    give_back_at = Some(tokio::time::Instant::now() + context.config.pause_grace);
                }
            }
            () = async {
                match give_back_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if interrupted.is_none() && give_back_at.is_some() => {
                give_back_at = None;
                if *paused.borrow() {
                    cancel.cancel();
                    interrupted = Some(Interrupted::Paused);
                }
            }
            Ok(()) = stop.changed(), if interrupted.is_none() => {
                if *stop.borrow() {
                    cancel.cancel();
                    interrupted = Some(Interrupted::Stopping);
                }
            }
        }
    };
    Computed {
        output,
        interrupted,
        streamed,
    }
}

/// Text produced since the last heartbeat goes out before the result.
async fn send_last_text(context: &Context, job: &Job, streamed: &Mutex<String>) {
    let delta = std::mem::take(&mut *streamed.lock().unwrap_or_else(|e| e.into_inner()));
    if delta.is_empty() {
        return;
    }
    let beat = Heartbeat {
        lease_id: job.lease_id.clone(),
        text_delta: delta,
    };
    // The result carries the whole text anyway: a lost last beat only delays the stream.
    let sent: Result<HeartbeatReply, _> = context
        .client
        .post(&format!("/node/v1/jobs/{}/heartbeat", job.id), &beat)
        .await;
    if let Err(error) = sent {
        tracing::warn!(job = %job.id, %error, "the last streamed text did not reach the pool before the result");
    }
}

/// Submit the result, trying again three times (backing off) unless Hearth is stopping.
async fn deliver(
    context: &Context,
    job: &Job,
    output: TaskOutput,
    measured: Measured,
    stop: &watch::Receiver<bool>,
) -> Result<ResultReply, WorkerError> {
    let result = JobResult {
        lease_id: job.lease_id.clone(),
        output,
        started_unix_ms: measured.started,
        finished_unix_ms: measured.ended,
        energy_wh: measured.energy_wh,
        energy_estimated: measured.energy_estimated,
        next: None,
    };
    let path = format!("/node/v1/jobs/{}/result", job.id);
    let mut attempt = 0;
    loop {
        match context.client.post(&path, &result).await {
            Ok(reply) => return Ok(reply),
            Err(error) if attempt < 3 && !*stop.borrow() => {
                attempt += 1;
                tracing::warn!(job = %job.id, %error, attempt, "result not delivered; retrying");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Record the completed job with the pool's receipt (or the note that it comes once another
/// node confirms). A receipt that does not follow the chain sends the node to collect the ones
/// it missed; one that still does not verify is refused and the job kept without it. `false`
/// when the collected receipts already recorded the job (nothing more to announce).
async fn record_receipt(
    context: &Context,
    job: &Job,
    reply: ResultReply,
    measured: Measured,
) -> Result<bool, WorkerError> {
    let note = reply
        .pending_verification
        .then(|| "paid once another node confirms the result".to_owned());
    let record = match context.ledger.finish_job(
        &job.id,
        measured.outcome(JobStatus::Completed, reply.receipt, note),
        &context.pool_key,
    ) {
        Ok(record) => record,
        Err(LedgerError::BadReceipt { reason, .. }) => {
            // Either an earlier receipt is missing (collect them, this one included) or the
            // pool sent one that does not verify: keep the job, refuse the receipt.
            let collected = collect_receipts(context).await;
            let stored = context
                .ledger
                .job(&job.id)?
                .is_some_and(|r| r.receipt.is_some());
            if collected.is_ok() && stored {
                return Ok(false);
            }
            tracing::error!(job = %job.id, %reason, "the pool's receipt was refused");
            context.ledger.finish_job(
                &job.id,
                measured.outcome(
                    JobStatus::Completed,
                    None,
                    Some(format!("receipt refused: {reason}")),
                ),
                &context.pool_key,
            )?
        }
        Err(error) => return Err(error.into()),
    };
    (context.events)(WorkerEvent::JobEnded(record));
    Ok(true)
}

/// Hold the slot until `until`: the throttle's rest. It ends early when Hearth stops or the
/// throttle is lifted (the owner went away).
async fn rest_in_slot(
    context: &Context,
    slot: Slot<'_>,
    until: tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
) {
    let mut duty = context.config.duty_percent.clone();
    let unthrottled = async {
        match duty.as_mut() {
            Some(duty) => {
                let _ = duty.wait_for(|percent| *percent >= 100).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        _ = stop.wait_for(|stopping| *stopping) => {}
        () = unthrottled => {}
    }
    drop(slot);
}
