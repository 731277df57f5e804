//! Who waits in this process: customers for their jobs' outcomes (and streamed text), nodes
//! for work. Jobs live in the store and may be finished by any process; what reaches a waiter
//! here is a [`QueueEvent`] from the store, whichever process sent it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    pub node_id: String,
    pub established: bool,
    woken: AtomicBool,
}

impl NodeWaiter {
    pub fn new(node_id: &str, established: bool) -> Arc<Self> {
        Arc::new(Self {
            notify: Notify::new(),
            node_id: node_id.to_owned(),
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

    /// Wake up to `jobs` nodes waiting for `model` (established ones only when asked, none
    /// of `not_for`), first come first woken; the others sleep on. How many were woken.
    pub fn wake(
        &mut self,
        model: &str,
        established_only: bool,
        jobs: u32,
        not_for: &[String],
    ) -> u32 {
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
            if (established_only && !waiter.established) || not_for.contains(&waiter.node_id) {
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
    /// Counts the times this process heard that work may be waiting (jobs queued here, a
    /// `Work` event from any process, or events possibly missed). A node whose last look
    /// found nothing need not look again until it moves: see [`IdleMemo`].
    work_heard: AtomicU64,
}

impl LocalWaiters {
    pub fn lock(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Work may be waiting: every node looks again at its next lease. Called before the
    /// nodes are woken, and after the jobs are in the store.
    pub fn heard_of_work(&self) {
        self.work_heard.fetch_add(1, Ordering::AcqRel);
    }

    /// How often work was heard of so far (see [`LocalWaiters::heard_of_work`]).
    pub fn work_heard(&self) -> u64 {
        self.work_heard.load(Ordering::Acquire)
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

/// What the queue remembers of one node's last look for work that found nothing: how much
/// work this process had heard of before it looked, and whether the node was established
/// then. While neither has moved, nothing the node may run was queued since, so its next
/// lease waits without asking the store (an idle network of long-polling nodes costs the
/// database nothing). Kept with the node's registration in this process.
#[derive(Debug, Default)]
pub struct IdleMemo(AtomicU64);

impl IdleMemo {
    /// `heard` and `established` in one word; 0 is "nothing remembered".
    fn word(heard: u64, established: bool) -> u64 {
        (heard << 1 | u64::from(established)).wrapping_add(1).max(1)
    }

    /// The node found nothing after this process had heard of work `heard` times.
    pub(super) fn found_nothing(&self, heard: u64, established: bool) {
        self.0
            .store(Self::word(heard, established), Ordering::Release);
    }

    /// Remember nothing: the next lease looks (its node asked for other models than the
    /// look it remembers).
    pub fn forget(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// Whether a look now would find what the last one did (nothing).
    pub(super) fn nothing_new(&self, heard: u64, established: bool) -> bool {
        self.0.load(Ordering::Acquire) == Self::word(heard, established)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_wakes_no_node_it_is_not_for_and_the_passed_over_keep_their_place() {
        let mut local = Local::default();
        let models = vec!["m".to_owned()];
        let (a, b, c) = (
            NodeWaiter::new("node-a", true),
            NodeWaiter::new("node-b", true),
            NodeWaiter::new("node-c", true),
        );
        for waiter in [&a, &b, &c] {
            local.wait_for_work(waiter, &models);
        }
        // A job that node a answered already: b, next in line, is woken instead of a.
        assert_eq!(local.wake("m", true, 1, &["node-a".to_owned()]), 1);
        assert!(a.is_waiting() && !b.is_waiting() && c.is_waiting());
        // a is still first in line for the next job.
        assert_eq!(local.wake("m", false, 1, &[]), 1);
        assert!(!a.is_waiting() && c.is_waiting());
        // Nobody left it may go to: nobody woken.
        assert_eq!(local.wake("m", false, 1, &["node-c".to_owned()]), 0);
        assert!(c.is_waiting());
    }

    #[test]
    fn an_idle_memo_holds_only_while_nothing_new_was_heard_and_the_node_is_as_it_was() {
        let memo = IdleMemo::default();
        assert!(!memo.nothing_new(0, false), "a node never seen looks");
        memo.found_nothing(7, false);
        assert!(memo.nothing_new(7, false));
        assert!(!memo.nothing_new(8, false), "work heard of since");
        assert!(
            !memo.nothing_new(7, true),
            "established since: checked jobs are open to it"
        );
    }
}
