//! The job queue: customers' jobs wait here until a node that can run them leases them.
//!
//! Jobs live in the [`PoolStore`] ([`job::JobRow`]), so with PostgreSQL any pool process
//! leases any job and takes any result; who waits (customers for outcomes, nodes for work)
//! lives in the process they are connected to ([`waiters`]), and learns of changes from the
//! store's events, whichever process made them.
//!
//! A lease lasts [`PoolConfig::lease_ms`] and heartbeats extend it. An expired lease puts the
//! job back at the front of the queue; after [`PoolConfig::max_attempts`] lost leases the
//! customer gets an error. A node may give a job back (its owner needs the GPU) without
//! penalty. A result is accepted once: the job is marked as being paid (in the store, under
//! its row's lock) before any payment, so a duplicate arriving meanwhile, at any process,
//! cannot be paid twice.

mod events;
pub mod job;
mod results;
mod waiters;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hearth_protocol::Job;
use tokio::sync::{mpsc, oneshot};

use crate::config::PoolConfig;
use crate::store::{PoolStore, StoreError};
use crate::verify::{self, Answer, Verdict};
use events::{follow_events, tell};
pub use job::{Accepted, JobFailure, LeaseError, NewJob, SubmitError, Submitted};
use job::{Claim, Edit, JobBody, JobRow, JobState, Outcome, QueueEvent};
pub use waiters::Completed;
pub use waiters::IdleMemo;
use waiters::{Customer, LocalWaiters, NodeWaiter};

/// Most streamed text kept per job to check against the final answer.
const MAX_STREAMED_BYTES: usize = 1 << 20;
/// Expired leases handled per look.
const EXPIRY_BATCH: usize = 1000;

pub use hearth_protocol::now_unix_ms;

/// A random id: `prefix` and 16 bytes of hex.
pub fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        hearth_protocol::hex(&hearth_protocol::random_bytes::<16>())
    )
}

/// The queue of one pool process over the shared store.
pub struct Queue {
    store: Arc<dyn PoolStore>,
    config: Arc<PoolConfig>,
    local: Arc<LocalWaiters>,
    /// Set when the pool drains: nothing more is leased or submitted here.
    closed: AtomicBool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("customers_waiting", &self.local.lock().customers.len())
            .finish()
    }
}

impl Queue {
    /// A queue over `store`'s jobs; its event task starts with it.
    pub fn start(store: Arc<dyn PoolStore>, config: Arc<PoolConfig>) -> Self {
        let local = Arc::new(LocalWaiters::default());
        tokio::spawn(follow_events(
            store.events(),
            Arc::downgrade(&local),
            Arc::downgrade(&store),
        ));
        Self {
            store,
            config,
            local,
            closed: AtomicBool::new(false),
        }
    }

    /// Add a request's jobs, all or none (a process already holding `max_queued_jobs`
    /// customers' jobs takes none); nodes waiting for work are woken, one per job.
    pub async fn submit(
        &self,
        model: &str,
        jobs: Vec<NewJob>,
        stream: bool,
    ) -> Result<Vec<Submitted>, SubmitError> {
        if self.is_closed() {
            return Err(SubmitError::Closed);
        }
        let deadline_unix_ms = now_unix_ms() + self.config.request_timeout_ms;
        let mut rows = Vec::with_capacity(jobs.len());
        let mut submitted = Vec::with_capacity(jobs.len());
        {
            let mut local = self.local.lock();
            if local.customers.len() + jobs.len() > self.config.max_queued_jobs {
                return Err(SubmitError::Full(local.customers.len()));
            }
            for NewJob {
                task,
                metered,
                customer,
            } in jobs
            {
                let id = random_id("job-");
                let (done_tx, done) = oneshot::channel();
                let (deltas_tx, deltas) = if stream {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                local.customers.insert(
                    id.clone(),
                    Customer {
                        done: done_tx,
                        deltas: deltas_tx,
                        passed: 0,
                    },
                );
                rows.push(JobRow::queued(
                    id.clone(),
                    model.to_owned(),
                    deadline_unix_ms,
                    JobBody {
                        task: Some(task),
                        metered: Some(metered),
                        customer,
                        stream,
                        ..JobBody::default()
                    },
                ));
                submitted.push(Submitted {
                    job_id: id,
                    done,
                    deltas,
                });
            }
        }
        if let Err(error) = self.store.insert_jobs(&rows, &[]).await {
            let mut local = self.local.lock();
            for row in &rows {
                local.customers.remove(&row.id);
            }
            return Err(error.into());
        }
        // Nodes waiting here take the jobs first, with no round trip through the database;
        // only jobs left over are announced to every process.
        let jobs = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        self.local.heard_of_work();
        let woken = self.local.lock().wake(model, false, jobs, &[]);
        if woken < jobs {
            let work = QueueEvent::Work {
                model: model.to_owned(),
                established_only: false,
                jobs: jobs - woken,
                not_for: Vec::new(),
            };
            if let Err(error) = self.store.publish(&[work]).await {
                // The jobs are queued; nodes find them at their next lease.
                tracing::warn!(%error, "new jobs were not announced to other processes");
            }
        }
        Ok(submitted)
    }

    /// Up to `max` queued jobs for a node that runs `models`, waiting up to `wait` for some.
    /// Only `established` nodes get jobs whose answer is being checked. `memo` is this
    /// node's [`IdleMemo`]: the store is not asked again while nothing new was heard of.
    pub async fn lease(
        &self,
        node_id: &str,
        models: &[String],
        max: usize,
        wait: Duration,
        established: bool,
        memo: &IdleMemo,
    ) -> Result<Vec<Job>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.is_closed() {
                return Ok(Vec::new());
            }
            // In line before looking, so that work queued meanwhile wakes this node; what
            // was heard of read before looking, so that work heard of meanwhile makes the
            // next lease look again.
            let waiter = NodeWaiter::new(node_id, established);
            self.local.lock().wait_for_work(&waiter, models);
            let heard = self.local.work_heard();
            if !memo.nothing_new(heard, established) {
                let jobs = self.claim(node_id, models, max, established).await;
                if !matches!(&jobs, Ok(jobs) if jobs.is_empty()) {
                    waiter.retire();
                    return jobs;
                }
                memo.found_nothing(heard, established);
            }
            self.local.nodes_waiting.fetch_add(1, Ordering::Relaxed);
            let woken = tokio::time::timeout_at(deadline, waiter.notify.notified()).await;
            self.local.nodes_waiting.fetch_sub(1, Ordering::Relaxed);
            waiter.retire();
            if woken.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn claim(
        &self,
        node_id: &str,
        models: &[String],
        max: usize,
        established: bool,
    ) -> Result<Vec<Job>, StoreError> {
        let lease_id = random_id("lease-");
        let now = now_unix_ms();
        let expires_unix_ms = now + self.config.lease_ms;
        let rows = self
            .store
            .claim_jobs(&Claim {
                node_id,
                models,
                max,
                established,
                lease_id: &lease_id,
                now_unix_ms: now,
                expires_unix_ms,
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let task = row.leased_task().cloned();
                if task.is_none() {
                    tracing::error!(job = %row.id, "a stored job has no task");
                }
                Some(Job {
                    id: row.id,
                    lease_id: lease_id.clone(),
                    model: row.model,
                    task: task?,
                    lease_expires_unix_ms: expires_unix_ms,
                })
            })
            .collect())
    }

    /// Edit job `job_id`; [`LeaseError::UnknownJob`] when there is none.
    async fn edit<T: Send>(
        &self,
        job_id: &str,
        mut edit: impl FnMut(&mut JobRow) -> (Edit, T) + Send,
    ) -> Result<T, LeaseError> {
        let mut out = None;
        let found = self
            .store
            .edit_job(job_id, &mut |job: &mut JobRow| {
                let (change, value) = edit(job);
                out = Some(value);
                change
            })
            .await?;
        match out {
            Some(value) if found => Ok(value),
            _ => Err(LeaseError::UnknownJob),
        }
    }

    /// Extend a lease and pass on streamed text; true when the customer has gone (the node
    /// should stop and give the job back).
    pub async fn heartbeat(
        &self,
        job_id: &str,
        node_id: &str,
        lease_id: &str,
        text_delta: &str,
    ) -> Result<(u64, bool), LeaseError> {
        let expires = now_unix_ms() + self.config.lease_ms;
        self.edit(job_id, |job| {
            if !job.is_leased_to(node_id, lease_id) {
                return (Edit::keep(), Err(LeaseError::NotYourLease));
            }
            if let JobState::Leased {
                expires_unix_ms, ..
            } = &mut job.state
            {
                *expires_unix_ms = expires;
            }
            let mut events = Vec::new();
            if !text_delta.is_empty()
                && job.body.stream
                && job.body.answers.is_empty()
                && job.body.streamed.len() + text_delta.len() <= MAX_STREAMED_BYTES
            {
                job.body.streamed.push_str(text_delta);
                job.body.stream_breaks.push(job.body.streamed.len());
                events.push(QueueEvent::Streamed {
                    job_id: job.id.clone(),
                });
            }
            (Edit::put(events), Ok((expires, job.body.cancelled)))
        })
        .await?
    }

    /// The node gives the job back: it goes to the front of the queue, no attempt counted
    /// (the hand-back is: see [`JobRow::hand_back`]).
    pub async fn give_back(
        &self,
        job_id: &str,
        node_id: &str,
        lease_id: &str,
    ) -> Result<(), LeaseError> {
        self.edit(job_id, |job| {
            if !job.is_leased_to(node_id, lease_id) {
                return (Edit::keep(), Err(LeaseError::NotYourLease));
            }
            (job.hand_back(self.config.max_handbacks), Ok(()))
        })
        .await?
    }

    /// Put jobs whose lease ran out back in the queue (or fail them). A job whose payment
    /// ran out (the process paying it died) is finished if its receipt was stored, and
    /// queued again if not. Returns how many expired.
    pub async fn expire_leases(&self) -> Result<usize, StoreError> {
        let now = now_unix_ms();
        let expired = self.store.expired_leases(now, EXPIRY_BATCH).await?;
        for id in &expired {
            let Some(job) = self.store.job(id).await? else {
                continue;
            };
            if let JobState::Paying { node_id, .. } = &job.state
                && self.store.receipt_for_job(id, node_id).await?.is_some()
            {
                tracing::warn!(job = %id, node = %node_id, "a payment's process stopped after paying; the answer is lost");
                let paid_state = job.state.clone();
                let _ = self
                    .edit(id, |job| {
                        if job.state != paid_state {
                            return (Edit::keep(), ());
                        }
                        (job.finish(Err(JobFailure::PaymentInterrupted)), ())
                    })
                    .await;
                continue;
            }
            tracing::info!(job = %id, "lease expired");
            self.requeue_or_fail(id, |job| job.expires_unix_ms().is_some_and(|t| t <= now))
                .await?;
        }
        Ok(expired.len())
    }

    /// When the next held lease runs out, if any is held.
    pub async fn next_expiry(&self) -> Result<Option<u64>, StoreError> {
        self.store.next_lease_expiry().await
    }

    /// A node registered afresh (it restarted, perhaps after a crash): whatever it held is
    /// lost with the process, so its leases go back to the front of the queue at once instead
    /// of waiting to expire. No attempt is counted: the job did nothing wrong. Returns how many.
    pub async fn release_node(&self, node_id: &str) -> Result<usize, StoreError> {
        let held = self.store.jobs_leased_to(node_id).await?;
        let mut released = 0;
        for id in &held {
            let edited = self
                .edit(id, |job| {
                    if job.holder() != Some(node_id)
                        || !matches!(job.state, JobState::Leased { .. })
                    {
                        return (Edit::keep(), false);
                    }
                    (job.hand_back(self.config.max_handbacks), true)
                })
                .await;
            match edited {
                Ok(true) => released += 1,
                Ok(false) | Err(LeaseError::UnknownJob | LeaseError::NotYourLease) => {}
                Err(LeaseError::Store(error)) => return Err(error),
            }
        }
        Ok(released)
    }

    /// The customer went away: drop a queued job, tell the node of a leased one. The customer
    /// hears nothing more.
    pub async fn cancel(&self, job_id: &str) {
        self.local.remove_customer(job_id);
        let cancelled = self
            .edit(job_id, |job| match job.state {
                JobState::Queued | JobState::Finished => (Edit::delete(), ()),
                _ => {
                    job.body.cancelled = true;
                    (Edit::put(Vec::new()), ())
                }
            })
            .await;
        if let Err(LeaseError::Store(error)) = cancelled {
            tracing::warn!(job = %job_id, %error, "could not cancel a job; it ends by its deadline");
        }
    }

    /// Cancel `job_ids` without waiting (for a request dropped mid-flight).
    pub fn cancel_later(self: &Arc<Self>, job_ids: Vec<String>) {
        if job_ids.is_empty() {
            return;
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            for id in &job_ids {
                queue.cancel(id).await;
            }
        });
    }

    /// Whether `node_id` is being paid for `job_id` under `lease_id` right now (a result for
    /// a job already paid is looked up in the store instead).
    pub async fn is_paying(&self, job_id: &str, node_id: &str, lease_id: &str) -> bool {
        matches!(self.store.job(job_id).await, Ok(Some(job)) if job.is_paying(node_id, lease_id))
    }

    /// Drain: lease nothing more and take no new jobs here; this process's customers of jobs
    /// no node holds are told at once that the pool is going away (leased jobs may still
    /// finish and be paid). Returns how many were told.
    pub async fn close(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        self.local.lock().wake_all();
        let mut told = 0;
        for id in self.customer_jobs() {
            let dropped = self
                .edit(&id, |job| match job.state {
                    JobState::Queued => (Edit::delete(), true),
                    _ => (Edit::keep(), false),
                })
                .await;
            if matches!(dropped, Ok(true)) && self.tell(&id, Err(JobFailure::ShuttingDown)) {
                told += 1;
            }
        }
        told
    }

    /// The end of a drain: every customer of this process still waiting is told, and its job
    /// cancelled. Returns how many.
    pub async fn abandon(&self) -> usize {
        let mut told = 0;
        for id in self.customer_jobs() {
            if self.tell(&id, Err(JobFailure::ShuttingDown)) {
                told += 1;
            }
            self.cancel(&id).await;
        }
        told
    }

    fn customer_jobs(&self) -> Vec<String> {
        self.local.lock().customers.keys().cloned().collect()
    }

    /// Answer this process's customer of `job_id`, if it still waits.
    fn tell(&self, job_id: &str, outcome: Outcome) -> bool {
        tell(&self.local, job_id, outcome)
    }

    /// Whether the pool is draining.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Customers of this process still waiting for a node (a draining pool waits for them).
    pub fn leased(&self) -> usize {
        self.local.lock().customers.len()
    }

    /// Nodes in a long poll at this process right now.
    pub fn nodes_waiting(&self) -> usize {
        self.local.nodes_waiting.load(Ordering::Relaxed)
    }

    /// Wait until the last customer of this process stops waiting (at once if that happened
    /// since the last call).
    pub async fn went_idle(&self) {
        self.local.idle.notified().await;
    }

    /// Jobs waiting and held by nodes, in the whole store, for status pages and tests.
    pub async fn counts(&self) -> Result<(usize, usize), StoreError> {
        let counts = self.store.job_counts().await?;
        Ok((counts.queued, counts.leased))
    }
}

/// Uniform in [0, 1), from a cryptographically secure generator (a node cannot tell which of
/// its results will be checked).
fn draw() -> f64 {
    let bytes = hearth_protocol::random_bytes::<8>();
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::SledStore;

    fn queued(id: &str) -> JobRow {
        let task = hearth_protocol::TaskPayload::Embeddings {
            texts: vec!["a text".into()],
        };
        JobRow::queued(
            id.into(),
            "m".into(),
            u64::MAX,
            JobBody {
                task: Some(task),
                ..JobBody::default()
            },
        )
    }

    /// A node whose look found nothing does not ask the store again until this process
    /// hears of work; when it does, the waiting node is woken and takes the job.
    #[tokio::test]
    async fn a_node_that_found_nothing_looks_again_only_once_work_is_heard_of() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn PoolStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let queue = Queue::start(Arc::clone(&store), Arc::new(PoolConfig::default()));
        let (memo, models) = (IdleMemo::default(), vec!["m".to_owned()]);
        let lease = |wait_ms| {
            queue.lease(
                "node-a",
                &models,
                1,
                Duration::from_millis(wait_ms),
                true,
                &memo,
            )
        };
        assert!(lease(0).await.unwrap().is_empty());
        // Queued with no word to this process (as if its event were still on the way): the
        // node is not told, and does not ask.
        store.insert_jobs(&[queued("job-1")], &[]).await.unwrap();
        assert!(lease(0).await.unwrap().is_empty());
        assert_eq!(store.job_counts().await.unwrap().queued, 1);
        // The word comes while the node waits: it looks again and takes the job.
        let announce = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let work = QueueEvent::Work {
                model: "m".into(),
                established_only: false,
                jobs: 1,
                not_for: Vec::new(),
            };
            store.publish(&[work]).await.unwrap();
        };
        let (jobs, ()) = tokio::join!(lease(5_000), announce);
        let jobs = jobs.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].id, "job-1");
    }
}
