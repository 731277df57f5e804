//! Who waits in this process: customers for their jobs' outcomes (and streamed text), nodes
//! for work. Jobs live in the store and may be finished by any process; what reaches a waiter
//! here is a [`QueueEvent`] from the store, whichever process sent it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use hearth_protocol::TaskOutput;
use tokio::sync::{Notify, mpsc, oneshot};

use super::job::JobFailure;

/// A finished job as the customer receives it.
#[derive(Debug)]
pub struct Completed {
    pub output: TaskOutput,
}

/// A customer of this process waiting for one job.
#[derive(Debug)]
pub(super) struct Customer {
    pub done: oneshot::Sender<Result<Completed, JobFailure>>,
    pub deltas: Option<mpsc::UnboundedSender<String>>,
    /// Bytes of the job's streamed text already passed on.
    pub passed: usize,
}

impl Customer {
    /// Pass on what `streamed` has beyond what this customer already has, in the pieces
    /// that `breaks` (where each piece ends) mark.
    pub fn pass_stream(&mut self, streamed: &str, breaks: &[usize]) {
        let Some(deltas) = &self.deltas else {
            return;
        };
        for &end in breaks.iter().chain(std::iter::once(&streamed.len())) {
            if end <= self.passed {
                continue;
            }
            let Some(piece) = streamed.get(self.passed..end) else {
                return;
            };
            // A customer who hung up is cancelled by its own request.
            let _ = deltas.send(piece.to_owned());
            self.passed = end;
        }
    }
}

/// A node of this process waiting for work in a long poll.
#[derive(Debug)]
pub(super) struct NodeWaiter {
    pub notify: Notify,
    pub established: bool,
    woken: AtomicBool,
}

impl NodeWaiter {
    pub fn new(established: bool) -> Arc<Self> {
        Arc::new(Self {
            notify: Notify::new(),
            established,
            woken: AtomicBool::new(false),
        })
    }

    /// Wake it, once: true if this call did.
    fn wake(&self) -> bool {
        let first = !self.woken.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// It stopped waiting (it found work, or its poll ended): nobody needs to wake it.
    pub fn retire(&self) {
        self.woken.store(true, Ordering::Release);
    }

    fn is_waiting(&self) -> bool {
        !self.woken.load(Ordering::Acquire)
    }
}

/// Nodes waiting, in arrival order, once per model they run.
#[derive(Debug, Default)]
struct ModelLine {
    waiting: VecDeque<Weak<NodeWaiter>>,
    /// The line is swept of nodes that stopped waiting when it grows to this.
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 256;

#[derive(Debug, Default)]
pub(super) struct Local {
    pub customers: HashMap<String, Customer>,
    lines: HashMap<String, ModelLine>,
}

impl Local {
    /// Put `waiter` in line for each of `models`.
    pub fn wait_for_work(&mut self, waiter: &Arc<NodeWaiter>, models: &[String]) {
        for model in models {
            let line = self.lines.entry(model.clone()).or_default();
            if line.waiting.len() >= line.sweep_at.max(FIRST_SWEEP) {
                line.waiting
                    .retain(|w| w.upgrade().is_some_and(|w| w.is_waiting()));
                line.sweep_at = (line.waiting.len() * 2).max(FIRST_SWEEP);
            }
            line.waiting.push_back(Arc::downgrade(waiter));
        }
    }

    /// Wake up to `jobs` nodes waiting for `model` (established ones only when asked), first
    /// come first woken; the others sleep on. How many were woken.
    pub fn wake(&mut self, model: &str, established_only: bool, jobs: u32) -> u32 {
        let Some(line) = self.lines.get_mut(model) else {
            return 0;
        };
        let mut woken = 0;
        let mut passed_over = Vec::new();
        while woken < jobs {
            let Some(next) = line.waiting.pop_front() else {
                break;
            };
            let Some(waiter) = next.upgrade() else {
                continue;
            };
            if !waiter.is_waiting() {
                continue;
            }
            if established_only && !waiter.established {
                passed_over.push(next);
                continue;
            }
            if waiter.wake() {
                woken += 1;
            }
        }
        for waiter in passed_over.into_iter().rev() {
            line.waiting.push_front(waiter);
        }
        woken
    }

    /// Wake every waiting node (events may have been missed, or the pool is closing).
    pub fn wake_all(&mut self) {
        for line in self.lines.values_mut() {
            for waiter in line.waiting.drain(..) {
                if let Some(waiter) = waiter.upgrade() {
                    waiter.wake();
                }
            }
        }
    }
}

/// The local waiters, shared by the queue and its event task.
#[derive(Debug, Default)]
pub(super) struct LocalWaiters {
    local: Mutex<Local>,
    /// Told when the last customer of this process stops waiting.
    pub idle: Notify,
    /// Nodes in a long poll here.
    pub nodes_waiting: std::sync::atomic::AtomicUsize,
}

impl LocalWaiters {
    pub fn lock(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop waiting for `job_id`'s customer; the customer, if it waited.
    pub fn remove_customer(&self, job_id: &str) -> Option<Customer> {
        let mut local = self.lock();
        let customer = local.customers.remove(job_id);
        if customer.is_some() && local.customers.is_empty() {
            self.idle.notify_one();
        }
        customer
    }
}
