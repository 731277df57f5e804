//! How this process's waiters hear of jobs: the store's events, from whichever process sent
//! them, routed to the customers and nodes waiting here.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::job::{JobState, Outcome, QueueEvent};
use super::waiters::{Completed, LocalWaiters};
use crate::store::PoolStore;

/// Give `job_id`'s customer in this process `outcome`; false when none waits.
pub(super) fn tell(local: &LocalWaiters, job_id: &str, outcome: Outcome) -> bool {
    let Some(customer) = local.remove_customer(job_id) else {
        return false;
    };
    customer
        .done
        .send(outcome.map(|output| Completed { output }))
        .is_ok()
}

/// Route the store's events to this process's waiters until the queue or the store is gone
/// (neither is kept alive by this task: a stopped pool lets go of its database).
pub(super) async fn follow_events(
    mut events: broadcast::Receiver<QueueEvent>,
    local: std::sync::Weak<LocalWaiters>,
    store: std::sync::Weak<dyn PoolStore>,
) {
    loop {
        let event = events.recv().await;
        let (Some(waiters), Some(store)) = (local.upgrade(), store.upgrade()) else {
            return;
        };
        match event {
            Ok(QueueEvent::Work {
                model,
                established_only,
                jobs,
                not_for,
            }) => {
                waiters.heard_of_work();
                waiters
                    .lock()
                    .wake(&model, established_only, jobs, &not_for);
            }
            Ok(QueueEvent::Finished { job_id }) => {
                if waiters.lock().customers.contains_key(&job_id) {
                    tokio::spawn(look_at_job(Arc::clone(&store), waiters, job_id, true));
                }
            }
            Ok(QueueEvent::Streamed { job_id }) => {
                if waiters.lock().customers.contains_key(&job_id) {
                    tokio::spawn(look_at_job(Arc::clone(&store), waiters, job_id, false));
                }
            }
            Ok(QueueEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                waiters.heard_of_work();
                let jobs: Vec<String> = {
                    let mut local = waiters.lock();
                    local.wake_all();
                    local.customers.keys().cloned().collect()
                };
                tracing::debug!(customers = jobs.len(), "looking at every waiting job again");
                for job_id in jobs {
                    tokio::spawn(look_at_job(
                        Arc::clone(&store),
                        Arc::clone(&waiters),
                        job_id,
                        false,
                    ));
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Pass a waiting customer of this process what its job has now: streamed text, then its
/// outcome (after which the job is forgotten), or the first answer of a streamed chat still
/// under verification. A job `finished` (as its event says) is read and forgotten in one step.
async fn look_at_job(
    store: Arc<dyn PoolStore>,
    local: Arc<LocalWaiters>,
    job_id: String,
    finished: bool,
) {
    let taken = if finished {
        store.take_finished_job(&job_id).await
    } else {
        Ok(None)
    };
    let (job, forgotten) = match taken {
        Ok(Some(job)) => (job, true),
        Ok(None) => match store.job(&job_id).await {
            Ok(Some(job)) => (job, false),
            Ok(None) => {
                // Gone without an outcome (purged, or its answer already given).
                return;
            }
            Err(error) => {
                tracing::warn!(job = %job_id, %error, "cannot read a job for its customer; it is looked at again after the next event");
                return;
            }
        },
        Err(error) => {
            tracing::warn!(job = %job_id, %error, "cannot read a job for its customer; it is looked at again after the next event");
            return;
        }
    };
    let outcome = {
        let mut waiters = local.lock();
        let Some(customer) = waiters.customers.get_mut(&job_id) else {
            return;
        };
        customer.pass_stream(&job.body.streamed, &job.body.stream_breaks);
        match (&job.state, &job.body.outcome) {
            (JobState::Finished, Some(outcome)) => Some(outcome.clone()),
            _ if job.body.answered => job.body.answers.first().map(|a| Ok(a.output.clone())),
            _ => None,
        }
    };
    let Some(outcome) = outcome else {
        return;
    };
    tell(&local, &job_id, outcome);
    if job.state == JobState::Finished
        && !forgotten
        && let Err(error) = store.take_finished_job(&job_id).await
    {
        tracing::warn!(job = %job_id, %error, "a finished job was not forgotten; it is purged after its deadline");
    }
}
