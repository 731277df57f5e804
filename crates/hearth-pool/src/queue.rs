//! The job queue: customers' jobs wait here until a node that can run them leases them.
//!
//! A lease lasts [`PoolConfig::lease_ms`] and heartbeats extend it. An expired lease puts the
//! job back at the front of the queue; after [`PoolConfig::max_attempts`] lost leases the
//! customer gets an error. A node may give a job back (its owner needs the GPU) without
//! penalty. A result is accepted once: the job is marked as being paid before any storage
//! I/O, so a duplicate arriving meanwhile cannot be paid twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hearth_protocol::{Job, TaskOutput, TaskPayload};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::PoolConfig;
use crate::meter::Metered;
use crate::verify::{self, Answer, Verdict};

/// Most streamed text kept per job to check against the final answer.
const MAX_STREAMED_BYTES: usize = 1 << 20;

pub use hearth_protocol::now_unix_ms;

/// A random id: `prefix` and 16 bytes of hex.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness is a broken machine; fall back to time and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&now_unix_ms().to_le_bytes());
        bytes[8..].copy_from_slice(&n.to_le_bytes());
    }
    format!("{prefix}{}", hearth_protocol::hex(&bytes))
}

/// A finished job as the customer receives it.
#[derive(Debug)]
pub struct Completed {
    pub output: TaskOutput,
}

/// The queue has no room for the request's jobs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the pool's queue is full ({0} jobs waiting); retry shortly")]
    Full(usize),
    #[error("the pool is shutting down; retry shortly")]
    Closed,
}

/// Why a job ended without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobFailure {
    #[error("the job lost {0} leases (nodes timed out or went away)")]
    Exhausted(u32),
    #[error("the nodes' answers did not agree, so none was accepted")]
    Unverified,
    #[error("the pool is shutting down before the job finished; retry")]
    ShuttingDown,
    #[error(
        "the streamed answer broke off (its node stopped or was refused); nothing is charged, retry"
    )]
    StreamBroken,
}

/// Why a node's request about a job was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("no such job")]
    UnknownJob,
    #[error("the lease is not held by this node, or has expired")]
    NotYourLease,
}

enum JobState {
    Queued,
    Leased {
        node_id: String,
        lease_id: String,
        expires: Instant,
    },
    /// A result was accepted and its receipt is being written.
    Paying {
        node_id: String,
        lease_id: String,
    },
}

struct JobEntry {
    model: String,
    task: TaskPayload,
    /// The pool's own units for the job.
    metered: Metered,
    /// The customer key charged for it.
    customer: Option<String>,
    /// Checked by a second node before anyone is paid (drawn when the first answer comes,
    /// so the node answering cannot know).
    verify: bool,
    /// The customer reads the text as it is made.
    stream: bool,
    /// Text passed to the customer so far (the final answer must begin with it).
    streamed: String,
    /// The customer already has the answer (a streamed chat still under verification).
    answered: bool,
    /// Answers so far (under verification), each from a different node.
    answers: Vec<Answer>,
    /// Nodes that may not take the job again (they answered, or were struck).
    exclude: Vec<String>,
    /// What the next node runs instead of `task` (chat scoring).
    check_task: Option<TaskPayload>,
    attempts: u32,
    state: JobState,
    done: Option<oneshot::Sender<Result<Completed, JobFailure>>>,
    deltas: Option<mpsc::UnboundedSender<String>>,
    cancelled: bool,
}

#[derive(Default)]
struct QueueState {
    jobs: HashMap<String, JobEntry>,
    queued: VecDeque<String>,
}

/// What a customer holds for a submitted job.
#[derive(Debug)]
pub struct Submitted {
    pub job_id: String,
    pub done: oneshot::Receiver<Result<Completed, JobFailure>>,
    /// Streamed text of a chat job, when asked for.
    pub deltas: Option<mpsc::UnboundedReceiver<String>>,
}

/// A result the caller may now check and pay for (see [`Queue::accept_result`]).
#[derive(Debug)]
pub struct Accepted {
    pub model: String,
    /// What the node was asked to run (the job, or a check of another node's answer).
    pub leased_task: TaskPayload,
    /// The customer's job.
    pub task: TaskPayload,
    /// The pool's own units for the job.
    pub metered: Metered,
    /// The customer key charged for it.
    pub customer: Option<String>,
    /// Text already streamed to the customer from this lease.
    pub streamed: String,
    /// The result goes through [`Queue::record_answer`] before anyone is paid.
    pub verify: bool,
}

/// One job of a customer's request.
#[derive(Debug)]
pub struct NewJob {
    pub task: TaskPayload,
    pub metered: Metered,
    /// The customer key charged for it (none: nobody is charged, as in benchmarks).
    pub customer: Option<String>,
}

/// The queue.
pub struct Queue {
    state: Mutex<QueueState>,
    work_ready: Notify,
    config: Arc<PoolConfig>,
    /// Set when the pool drains: nothing more is leased or submitted.
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Queue")
            .field("jobs", &state.jobs.len())
            .field("queued", &state.queued.len())
            .finish()
    }
}

impl Queue {
    /// An empty queue.
    pub fn new(config: Arc<PoolConfig>) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            work_ready: Notify::new(),
            config,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a request's jobs, all or none (a full queue takes none); nodes waiting for work
    /// are woken.
    pub fn submit(
        &self,
        model: &str,
        jobs: Vec<NewJob>,
        stream: bool,
    ) -> Result<Vec<Submitted>, SubmitError> {
        if self.is_closed() {
            return Err(SubmitError::Closed);
        }
        let mut submitted = Vec::with_capacity(jobs.len());
        {
            let mut state = self.lock();
            if state.jobs.len() + jobs.len() > self.config.max_queued_jobs {
                return Err(SubmitError::Full(state.jobs.len()));
            }
            for NewJob {
                task,
                metered,
                customer,
            } in jobs
            {
                let job_id = random_id("job-");
                let (done_tx, done) = oneshot::channel();
                let (deltas_tx, deltas) = if stream {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                state.jobs.insert(
                    job_id.clone(),
                    JobEntry {
                        model: model.to_owned(),
                        task,
                        metered,
                        customer,
                        verify: false,
                        stream,
                        streamed: String::new(),
                        answered: false,
                        answers: Vec::new(),
                        exclude: Vec::new(),
                        check_task: None,
                        attempts: 0,
                        state: JobState::Queued,
                        done: Some(done_tx),
                        deltas: deltas_tx,
                        cancelled: false,
                    },
                );
                state.queued.push_back(job_id.clone());
                submitted.push(Submitted {
                    job_id,
                    done,
                    deltas,
                });
            }
        }
        self.work_ready.notify_waiters();
        Ok(submitted)
    }

    /// Up to `max` queued jobs for a node that runs `models`, waiting up to `wait` for some.
    /// Only `established` nodes get jobs whose answer is being checked.
    pub async fn lease(
        &self,
        node_id: &str,
        models: &[String],
        max: usize,
        wait: Duration,
        established: bool,
    ) -> Vec<Job> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so a job added meanwhile is not missed.
            let notified = self.work_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return Vec::new();
            }
            let jobs = self.try_lease(node_id, models, max, established);
            if !jobs.is_empty() {
                return jobs;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    fn try_lease(
        &self,
        node_id: &str,
        models: &[String],
        max: usize,
        established: bool,
    ) -> Vec<Job> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut leased = Vec::new();
        let lease = self.config.lease();
        let mut i = 0;
        while i < state.queued.len() && leased.len() < max {
            let id = &state.queued[i];
            let fits = state.jobs.get(id).is_some_and(|j| {
                models.contains(&j.model)
                    && !j.exclude.iter().any(|n| n == node_id)
                    && (established || j.answers.is_empty())
            });
            if !fits {
                i += 1;
                continue;
            }
            let Some(id) = state.queued.remove(i) else {
                break;
            };
            let Some(entry) = state.jobs.get_mut(&id) else {
                continue;
            };
            let lease_id = random_id("lease-");
            entry.state = JobState::Leased {
                node_id: node_id.to_owned(),
                lease_id: lease_id.clone(),
                expires: Instant::now() + lease,
            };
            leased.push(Job {
                id,
                lease_id,
                model: entry.model.clone(),
                task: entry
                    .check_task
                    .clone()
                    .unwrap_or_else(|| entry.task.clone()),
                lease_expires_unix_ms: now_unix_ms() + lease.as_millis() as u64,
            });
        }
        leased
    }

    fn held_lease<'a>(
        state: &'a mut QueueState,
        job_id: &str,
        node_id: &str,
        lease_id: &str,
    ) -> Result<&'a mut JobEntry, LeaseError> {
        let entry = state.jobs.get_mut(job_id).ok_or(LeaseError::UnknownJob)?;
        match &entry.state {
            JobState::Leased {
                node_id: n,
                lease_id: l,
                ..
            } if n == node_id && l == lease_id => Ok(entry),
            _ => Err(LeaseError::NotYourLease),
        }
    }

    /// Extend a lease and pass on streamed text; true when the customer has gone (the node
    /// should stop and give the job back).
    pub fn heartbeat(
        &self,
        job_id: &str,
        node_id: &str,
        lease_id: &str,
        text_delta: &str,
    ) -> Result<(u64, bool), LeaseError> {
        let mut state = self.lock();
        let entry = Self::held_lease(&mut state, job_id, node_id, lease_id)?;
        let lease = self.config.lease();
        if let JobState::Leased { expires, .. } = &mut entry.state {
            *expires = Instant::now() + lease;
        }
        if !text_delta.is_empty()
            && let Some(deltas) = &entry.deltas
            && entry.answers.is_empty()
            && entry.streamed.len() + text_delta.len() <= MAX_STREAMED_BYTES
        {
            entry.streamed.push_str(text_delta);
            // The customer may have hung up; the job is cancelled at its next look.
            let _ = deltas.send(text_delta.to_owned());
        }
        Ok((
            now_unix_ms() + lease.as_millis() as u64,
            entry.cancelled || entry.done.as_ref().is_some_and(|d| d.is_closed()),
        ))
    }

    /// The node gives the job back: it goes to the front of the queue, no attempt counted.
    pub fn give_back(&self, job_id: &str, node_id: &str, lease_id: &str) -> Result<(), LeaseError> {
        {
            let mut state = self.lock();
            let entry = Self::held_lease(&mut state, job_id, node_id, lease_id)?;
            if entry.cancelled {
                state.jobs.remove(job_id);
                return Ok(());
            }
            if Self::fail_if_partly_streamed(&mut state, job_id) {
                return Ok(());
            }
            if let Some(entry) = state.jobs.get_mut(job_id) {
                entry.state = JobState::Queued;
            }
            state.queued.push_front(job_id.to_owned());
        }
        self.work_ready.notify_waiters();
        Ok(())
    }

    /// Take a result for payment: the lease must be this node's and live. The job is marked so
    /// that no second result is accepted while the receipt is written. A first answer is
    /// checked by another node with chance `verification_share` (the answering node's).
    pub fn accept_result(
        &self,
        job_id: &str,
        node_id: &str,
        lease_id: &str,
        verification_share: f64,
    ) -> Result<Accepted, LeaseError> {
        let mut state = self.lock();
        let entry = Self::held_lease(&mut state, job_id, node_id, lease_id)?;
        entry.state = JobState::Paying {
            node_id: node_id.to_owned(),
            lease_id: lease_id.to_owned(),
        };
        if entry.answers.is_empty() {
            entry.verify = draw() < verification_share;
        }
        Ok(Accepted {
            model: entry.model.clone(),
            leased_task: entry
                .check_task
                .clone()
                .unwrap_or_else(|| entry.task.clone()),
            task: entry.task.clone(),
            metered: entry.metered.clone(),
            customer: entry.customer.clone(),
            streamed: entry.streamed.clone(),
            verify: entry.verify,
        })
    }

    /// Add an answer to a job under verification and decide. On [`Verdict::NeedAnother`] and
    /// [`Verdict::Redo`] the job is back in the queue for a node that has not answered it; on
    /// [`Verdict::Unresolved`] the customer gets an error. On [`Verdict::Settled`] the caller
    /// pays and then calls [`Queue::complete`].
    pub fn record_answer(&self, job_id: &str, answer: Answer) -> Verdict {
        let mut state = self.lock();
        let Some(entry) = state.jobs.get_mut(job_id) else {
            return Verdict::Unresolved;
        };
        entry.exclude.push(answer.node_id.clone());
        entry.answers.push(answer);
        let verdict = verify::judge(&entry.task, &entry.answers);
        match &verdict {
            Verdict::NeedAnother { check_task } => {
                if entry.stream && !entry.answered {
                    // The customer has read the text as it came: they get the answer now,
                    // and the node is paid once the check holds.
                    if let (Some(done), Some(first)) = (entry.done.take(), entry.answers.first()) {
                        let _ = done.send(Ok(Completed {
                            output: first.output.clone(),
                        }));
                    }
                    entry.answered = true;
                }
                entry.check_task = check_task.clone();
                entry.state = JobState::Queued;
                state.queued.push_front(job_id.to_owned());
                drop(state);
                self.work_ready.notify_waiters();
            }
            Verdict::Redo { .. } if entry.answered => {
                // The customer already has the streamed text: nothing to redo.
                state.jobs.remove(job_id);
            }
            Verdict::Redo { .. } => {
                // A fresh answer from another node, drawn for a check like any other.
                entry.answers.clear();
                entry.check_task = None;
                entry.state = JobState::Queued;
                state.queued.push_front(job_id.to_owned());
                drop(state);
                self.work_ready.notify_waiters();
            }
            Verdict::Unresolved => {
                if let Some(mut entry) = state.jobs.remove(job_id)
                    && let Some(done) = entry.done.take()
                {
                    let _ = done.send(Err(JobFailure::Unverified));
                }
            }
            Verdict::Settled { .. } => {}
        }
        verdict
    }

    /// The receipt is stored: hand the result to the customer and forget the job.
    pub fn complete(&self, job_id: &str, completed: Completed) {
        let entry = self.lock().jobs.remove(job_id);
        if let Some(done) = entry.and_then(|mut e| e.done.take()) {
            let _ = done.send(Ok(completed));
        }
    }

    /// A result was refused (wrong shape, failed checks) or could not be paid: the job counts
    /// an attempt and goes back to the queue, or fails when out of attempts.
    pub fn reject_result(&self, job_id: &str) {
        self.requeue_or_fail(job_id);
    }

    /// A customer who read part of an answer cannot be given another node's from the start:
    /// the job ends with [`JobFailure::StreamBroken`]. True when it did.
    fn fail_if_partly_streamed(state: &mut QueueState, job_id: &str) -> bool {
        let partly = state
            .jobs
            .get(job_id)
            .is_some_and(|e| e.stream && !e.answered && !e.streamed.is_empty());
        if partly
            && let Some(mut entry) = state.jobs.remove(job_id)
            && let Some(done) = entry.done.take()
        {
            let _ = done.send(Err(JobFailure::StreamBroken));
        }
        partly
    }

    fn requeue_or_fail(&self, job_id: &str) {
        let mut state = self.lock();
        if Self::fail_if_partly_streamed(&mut state, job_id) {
            return;
        }
        let Some(entry) = state.jobs.get_mut(job_id) else {
            return;
        };
        entry.attempts += 1;
        if entry.attempts >= self.config.max_attempts || entry.cancelled {
            let attempts = entry.attempts;
            if let Some(mut entry) = state.jobs.remove(job_id)
                && let Some(done) = entry.done.take()
            {
                let _ = done.send(Err(JobFailure::Exhausted(attempts)));
            }
            return;
        }
        entry.state = JobState::Queued;
        state.queued.push_front(job_id.to_owned());
        drop(state);
        self.work_ready.notify_waiters();
    }

    /// Put jobs whose lease ran out back in the queue (or fail them). Returns how many expired.
    pub fn expire_leases(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<String> = self
            .lock()
            .jobs
            .iter()
            .filter(|(_, e)| matches!(e.state, JobState::Leased { expires, .. } if expires <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(job = %id, "lease expired");
            self.requeue_or_fail(id);
        }
        expired.len()
    }

    /// A node registered afresh (it restarted, perhaps after a crash): whatever it held is
    /// lost with the process, so its leases go back to the front of the queue at once instead
    /// of waiting to expire. No attempt is counted: the job did nothing wrong. Returns how many.
    pub fn release_node(&self, node_id: &str) -> usize {
        let released = {
            let mut state = self.lock();
            let held: Vec<String> = state
                .jobs
                .iter()
                .filter(|(_, e)| matches!(&e.state, JobState::Leased { node_id: n, .. } if n == node_id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &held {
                let cancelled = state.jobs.get(id).is_some_and(|e| e.cancelled);
                if cancelled {
                    state.jobs.remove(id);
                } else if Self::fail_if_partly_streamed(&mut state, id) {
                    continue;
                } else if let Some(entry) = state.jobs.get_mut(id) {
                    entry.state = JobState::Queued;
                    state.queued.push_front(id.clone());
                }
            }
            held.len()
        };
        if released > 0 {
            self.work_ready.notify_waiters();
        }
        released
    }

    /// The customer went away: drop a queued job, tell the node of a leased one.
    pub fn cancel(&self, job_id: &str) {
        let mut state = self.lock();
        let Some(entry) = state.jobs.get_mut(job_id) else {
            return;
        };
        match entry.state {
            JobState::Queued => {
                state.jobs.remove(job_id);
                state.queued.retain(|id| id != job_id);
            }
            _ => entry.cancelled = true,
        }
    }

    /// Whether `node_id` holds or is paying for `job_id` under `lease_id` right now (a result
    /// for a job already paid is looked up in the store instead).
    pub fn is_paying(&self, job_id: &str, node_id: &str, lease_id: &str) -> bool {
        matches!(
            self.lock().jobs.get(job_id).map(|e| &e.state),
            Some(JobState::Paying { node_id: n, lease_id: l }) if n == node_id && l == lease_id
        )
    }

    /// Drain: lease nothing more and take no new jobs; customers of jobs no node holds are
    /// told at once that the pool is going away (leased jobs may still finish and be paid).
    /// Returns how many were told.
    pub fn close(&self) -> usize {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.work_ready.notify_waiters();
        self.fail_where(|e| matches!(e.state, JobState::Queued))
    }

    /// The end of a drain: every customer still waiting is told. Returns how many.
    pub fn abandon(&self) -> usize {
        self.fail_where(|_| true)
    }

    fn fail_where(&self, pick: impl Fn(&JobEntry) -> bool) -> usize {
        let mut state = self.lock();
        let ids: Vec<String> = state
            .jobs
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(id, _)| id.clone())
            .collect();
        let mut told = 0;
        for id in &ids {
            if let Some(mut entry) = state.jobs.remove(id)
                && let Some(done) = entry.done.take()
            {
                let _ = done.send(Err(JobFailure::ShuttingDown));
                told += 1;
            }
        }
        state.queued.retain(|id| !ids.contains(id));
        told
    }

    /// Whether the pool is draining.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Jobs leased to nodes right now (a draining pool waits for them).
    pub fn leased(&self) -> usize {
        self.lock()
            .jobs
            .values()
            .filter(|e| !matches!(e.state, JobState::Queued))
            .count()
    }

    /// Jobs waiting and leased, for status pages and tests.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.queued.len(), state.jobs.len() - state.queued.len())
    }
}

/// Uniform in [0, 1) from the operating system's generator.
fn draw() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Without randomness, check everything.
        return 0.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
