//! A job as the store keeps it, and the events that tell pool processes about jobs.
//!
//! The scheduling fields of [`JobRow`] (state, lease, attempts, who may take it) are what a
//! claim selects on; they are columns in PostgreSQL. [`JobBody`] is the rest (the task, the
//! pool's units, answers, what was streamed, the outcome), stored as one JSON value.

use hearth_protocol::{TaskOutput, TaskPayload};
use serde::{Deserialize, Serialize};

use tokio::sync::{mpsc, oneshot};

use super::waiters::Completed;
use crate::meter::Metered;
use crate::store::StoreError;
use crate::verify::Answer;

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a node.
    Queued,
    /// Held by `node_id` until `expires_unix_ms` (heartbeats extend it).
    Leased {
        node_id: String,
        lease_id: String,
        expires_unix_ms: u64,
    },
    /// A result of this lease was accepted and is being checked and paid: no second result
    /// is taken meanwhile. Past `expires_unix_ms` the process paying is taken to have died.
    Paying {
        node_id: String,
        lease_id: String,
        expires_unix_ms: u64,
    },
    /// The outcome is in [`JobBody::outcome`], waiting for the customer's process to read it.
    Finished,
}

impl JobState {
    /// The name stored in the database's `state` column.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased { .. } => "leased",
            Self::Paying { .. } => "paying",
            Self::Finished => "finished",
        }
    }
}

/// Why a job ended without a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum JobFailure {
    #[error("the job lost {0} leases (nodes timed out or went away)")]
    Exhausted(u32),
    #[error("nodes handed the job back {0} times without an answer; retry later")]
    HandedBack(u32),
    #[error("the nodes' answers did not agree, so none was accepted")]
    Unverified,
    #[error("the pool is shutting down before the job finished; retry")]
    ShuttingDown,
    #[error(
        "the streamed answer broke off (its node stopped or was refused); nothing is charged, retry"
    )]
    StreamBroken,
    #[error("the request's deadline passed before a node finished the job")]
    Expired,
    #[error("the pool process paying for the job stopped before answering; retry")]
    PaymentInterrupted,
}

/// How a job ended, as its customer is told.
pub type Outcome = Result<TaskOutput, JobFailure>;

/// One job of a customer's request.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub model: String,
    pub state: JobState,
    /// Leases lost so far (expired, or results refused).
    pub attempts: u32,
    /// Nodes that may not take the job again (they answered it, or were struck for it).
    pub exclude: Vec<String>,
    /// Only established nodes may take it: another node's answer is being checked.
    pub established_only: bool,
    /// Offered before new jobs: a job handed back, retried or under verification.
    pub front: bool,
    /// After this the customer has given up; the job is dropped instead of run.
    pub deadline_unix_ms: u64,
    /// When its current lease was taken (0 when none was).
    pub leased_unix_ms: u64,
    pub body: JobBody,
}

/// The parts of a job that no claim looks at.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobBody {
    /// What the customer asked for.
    pub task: Option<TaskPayload>,
    /// The pool's own units for it.
    pub metered: Option<Metered>,
    /// The customer key charged for it (none: nobody is charged, as in benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Checked by a second node before anyone is paid (drawn when the first answer comes,
    /// so the node answering cannot know).
    #[serde(default)]
    pub verify: bool,
    /// The customer reads the text as it is made.
    #[serde(default)]
    pub stream: bool,
    /// Text passed to the customer so far (the final answer must begin with it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub streamed: String,
    /// Where each piece of `streamed` ends (the customer gets the pieces as the node sent them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream_breaks: Vec<usize>,
    /// The customer already has the answer (a streamed chat still under verification).
    #[serde(default)]
    pub answered: bool,
    /// Answers so far (under verification), each from a different node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
    /// What the next node runs instead of the task (chat scoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_task: Option<TaskPayload>,
    /// The customer went away: the node holding it is told to stop.
    #[serde(default)]
    pub cancelled: bool,
    /// Times nodes handed it back unanswered ([`JobRow::hand_back`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handed_back: u32,
    /// Set when [`JobState::Finished`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

impl JobRow {
    /// A job just queued for `model`: no attempts yet, open to any node that runs the model,
    /// behind the jobs queued before it.
    pub fn queued(id: String, model: String, deadline_unix_ms: u64, body: JobBody) -> Self {
        Self {
            id,
            model,
            state: JobState::Queued,
            attempts: 0,
            exclude: Vec::new(),
            established_only: false,
            front: false,
            deadline_unix_ms,
            leased_unix_ms: 0,
            body,
        }
    }

    /// What a node leasing the job runs: the task, or a check of another node's answer.
    pub fn leased_task(&self) -> Option<&TaskPayload> {
        self.body.check_task.as_ref().or(self.body.task.as_ref())
    }

    /// Whether `node_id` holds the job under `lease_id` right now.
    pub fn is_leased_to(&self, node_id: &str, lease_id: &str) -> bool {
        matches!(&self.state, JobState::Leased { node_id: n, lease_id: l, .. } if n == node_id && l == lease_id)
    }

    /// Whether a result of `node_id` under `lease_id` is being paid right now.
    pub fn is_paying(&self, node_id: &str, lease_id: &str) -> bool {
        matches!(&self.state, JobState::Paying { node_id: n, lease_id: l, .. } if n == node_id && l == lease_id)
    }

    /// When its lease (or its payment) runs out, if it is held.
    pub fn expires_unix_ms(&self) -> Option<u64> {
        match self.state {
            JobState::Leased {
                expires_unix_ms, ..
            }
            | JobState::Paying {
                expires_unix_ms, ..
            } => Some(expires_unix_ms),
            _ => None,
        }
    }

    /// A customer who read part of a streamed answer cannot be given another node's from
    /// the start.
    pub fn is_partly_streamed(&self) -> bool {
        self.body.stream && !self.body.answered && !self.body.streamed.is_empty()
    }

    /// Put the job back in line (before new jobs), telling a node that runs it.
    pub fn requeue(&mut self) -> Edit {
        self.state = JobState::Queued;
        self.front = true;
        self.established_only = !self.body.answers.is_empty();
        Edit::put(vec![QueueEvent::Work {
            model: self.model.clone(),
            established_only: self.established_only,
            jobs: 1,
            not_for: self.exclude.clone(),
        }])
    }

    /// Its node let go of it without a result (gave it back, or came back after a crash): no
    /// attempt is counted, but hand-backs are, so a job no node answers still ends (after
    /// `max_handbacks`). Forgotten if its customer went away; ended if the customer already
    /// read part of a streamed answer; otherwise back in line.
    pub fn hand_back(&mut self, max_handbacks: u32) -> Edit {
        self.body.handed_back += 1;
        if self.body.cancelled {
            Edit::delete()
        } else if self.is_partly_streamed() {
            self.finish(Err(JobFailure::StreamBroken))
        } else if self.body.handed_back >= max_handbacks {
            self.finish(Err(JobFailure::HandedBack(self.body.handed_back)))
        } else {
            self.requeue()
        }
    }

    /// End the job with `outcome` for its customer (forgotten at once when the customer
    /// already has its answer, or went away).
    pub fn finish(&mut self, outcome: Outcome) -> Edit {
        if self.body.answered || self.body.cancelled {
            return Edit::delete();
        }
        self.state = JobState::Finished;
        self.body.outcome = Some(outcome);
        Edit::put(vec![QueueEvent::Finished {
            job_id: self.id.clone(),
        }])
    }

    /// The node holding or paying for the job, if any.
    pub fn holder(&self) -> Option<&str> {
        match &self.state {
            JobState::Leased { node_id, .. } | JobState::Paying { node_id, .. } => Some(node_id),
            _ => None,
        }
    }
}

/// The queue could not take a request's jobs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the pool's queue is full ({0} jobs waiting); retry shortly")]
    Full(usize),
    #[error("the pool is shutting down; retry shortly")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a node's request about a job was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("no such job")]
    UnknownJob,
    #[error("the lease is not held by this node, or has expired")]
    NotYourLease,
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// How long the node held the lease before its result came, in ms.
    pub lease_to_result_ms: u64,
}

/// One job of a customer's request.
#[derive(Debug)]
pub struct NewJob {
    pub task: TaskPayload,
    pub metered: Metered,
    /// The customer key charged for it (none: nobody is charged, as in benchmarks).
    pub customer: Option<String>,
}

/// What a store does with a job after an edit looked at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Nothing changed.
    Keep,
    /// Store the edited job.
    Put,
    /// Forget the job.
    Delete,
}

/// The result of one edit: what to write and whom to tell (in the same transaction).
#[derive(Debug)]
pub struct Edit {
    pub write: Write,
    pub events: Vec<QueueEvent>,
}

impl Edit {
    /// Change nothing, tell nobody.
    pub fn keep() -> Self {
        Self {
            write: Write::Keep,
            events: Vec::new(),
        }
    }

    /// Store the edited job and send `events`.
    pub fn put(events: Vec<QueueEvent>) -> Self {
        Self {
            write: Write::Put,
            events,
        }
    }

    /// Forget the job.
    pub fn delete() -> Self {
        Self {
            write: Write::Delete,
            events: Vec::new(),
        }
    }
}

/// An edit of one job: it may run more than once (a database retrying after a race), so it
/// reads everything it needs from the row and leaves its findings in its own captures. An
/// edit that answers [`Write::Keep`] must not have changed the job (a store may edit in place).
pub type JobEdit<'a> = &'a mut (dyn FnMut(&mut JobRow) -> Edit + Send);

/// What a node asks for when it leases.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    pub node_id: &'a str,
    /// The models it runs.
    pub models: &'a [String],
    pub max: usize,
    /// Established nodes may take jobs whose answer is being checked.
    pub established: bool,
    /// The lease id the claimed jobs get.
    pub lease_id: &'a str,
    pub now_unix_ms: u64,
    pub expires_unix_ms: u64,
}

impl Claim<'_> {
    /// Whether this node may take `job` (queued): it runs the model, has not answered or been
    /// struck for the job, and is established where the job needs it.
    pub fn may_take(&self, job: &JobRow) -> bool {
        self.models.contains(&job.model)
            && !job.exclude.iter().any(|n| n == self.node_id)
            && (self.established || !job.established_only)
    }
}

/// Jobs by state, for status pages, `/metrics` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub queued: usize,
    /// Leased or being paid.
    pub leased: usize,
    /// Finished, waiting for their customer's process to read them.
    pub finished: usize,
}

/// What one pool process tells the others (and itself) about jobs. In PostgreSQL these are
/// `NOTIFY` messages sent with the transaction that made them true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    /// `jobs` jobs of `model` are waiting: wake that many nodes that run it, none of
    /// `not_for` (nodes that answered the job already).
    Work {
        model: String,
        established_only: bool,
        jobs: u32,
        not_for: Vec<String>,
    },
    /// A job has its outcome: its customer's process reads it.
    Finished { job_id: String },
    /// More of a job's answer was streamed: its customer's process passes it on.
    Streamed { job_id: String },
    /// Events may have been missed (the database connection was lost): every waiter looks
    /// at its job again.
    Resync,
}

impl QueueEvent {
    /// The event as a `NOTIFY` payload (short, under PostgreSQL's 8000 bytes: a job is
    /// checked by a few nodes at most, so `not_for` names a few ids).
    pub fn encode(&self) -> String {
        match self {
            Self::Work {
                model,
                established_only,
                jobs,
                not_for,
            } => format!(
                "w|{}|{jobs}|{}|{model}",
                u8::from(*established_only),
                not_for.join(",")
            ),
            Self::Finished { job_id } => format!("f|{job_id}"),
            Self::Streamed { job_id } => format!("s|{job_id}"),
            Self::Resync => "r".into(),
        }
    }

    /// An event from its payload; `None` for one this version does not know.
    pub fn decode(payload: &str) -> Option<Self> {
        let mut parts = payload.splitn(5, '|');
        match parts.next()? {
            "w" => {
                let established_only = parts.next()? == "1";
                let jobs = parts.next()?.parse().ok()?;
                let not_for = parts
                    .next()?
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect();
                let model = parts.next()?.to_owned();
                Some(Self::Work {
                    model,
                    established_only,
                    jobs,
                    not_for,
                })
            }
            "f" => Some(Self::Finished {
                job_id: parts.next()?.to_owned(),
            }),
            "s" => Some(Self::Streamed {
                job_id: parts.next()?.to_owned(),
            }),
            "r" => Some(Self::Resync),
            _ => None,
        }
    }
}

/// For `skip_serializing_if`: a count that was never raised is not stored.
fn is_zero(count: &u32) -> bool {
    *count == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_their_payloads() {
        for event in [
            QueueEvent::Work {
                model: "all-minilm-l6-v2".into(),
                established_only: true,
                jobs: 3,
                not_for: vec!["node-a".into(), "node-b".into()],
            },
            QueueEvent::Work {
                model: "a|model".into(),
                established_only: false,
                jobs: 1,
                not_for: Vec::new(),
            },
            QueueEvent::Finished {
                job_id: "job-1".into(),
            },
            QueueEvent::Streamed {
                job_id: "job-2".into(),
            },
            QueueEvent::Resync,
        ] {
            assert_eq!(QueueEvent::decode(&event.encode()), Some(event));
        }
        assert_eq!(QueueEvent::decode("x|?"), None);
        assert_eq!(QueueEvent::decode("w|1|many|m"), None);
    }
}
