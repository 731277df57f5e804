//! What keeps the worker from working as it should, and what it does about it: a model whose
//! files failed their check is left out of leases and fetched again in the background (backing
//! off while that fails), and jobs failing in a row make the worker wait longer and longer
//! before the next lease. Both are told to the owner as notices while they last.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::WorkerEvent;
use crate::executor::Executor;

/// The first wait after a failed job, and the longest.
const FIRST_FAILURE_WAIT: Duration = Duration::from_secs(1);
const LONGEST_FAILURE_WAIT: Duration = Duration::from_secs(60);
/// The first wait before fetching a damaged model again after a failed fetch, and the longest.
const FIRST_REFETCH_WAIT: Duration = Duration::from_secs(30);
const LONGEST_REFETCH_WAIT: Duration = Duration::from_secs(3600);

/// The worker's troubles, shared by its jobs and its repair tasks.
pub(super) struct Trouble {
    state: Mutex<State>,
    events: Arc<dyn Fn(WorkerEvent) + Send + Sync>,
}

#[derive(Default)]
struct State {
    /// Damaged models being fetched again, with the last fetch's error if one failed.
    repairing: BTreeMap<String, Option<String>>,
    /// Jobs failed in a row, the last one's error, and when the next lease may go out.
    failed_in_a_row: u32,
    last_failure: String,
    resume_at: Option<Instant>,
}

impl State {
    /// The notices, in words, for the window, tray and CLI.
    fn notices(&self) -> Vec<String> {
        let mut notices: Vec<String> = self
            .repairing
            .iter()
            .map(|(model, failed)| match failed {
                None => format!(
                    "{model}: this computer's copy failed its check; fetching it again (its jobs go to other nodes meanwhile)"
                ),
                Some(error) => format!(
                    "{model}: this computer's copy failed its check and could not be fetched again ({error}); trying again later"
                ),
            })
            .collect();
        if self.failed_in_a_row > 0 {
            notices.push(format!(
                "{} job{} failed in a row (the last: {}); waiting before the next",
                self.failed_in_a_row,
                if self.failed_in_a_row == 1 { "" } else { "s" },
                self.last_failure
            ));
        }
        notices
    }
}

impl Trouble {
    pub(super) fn new(events: Arc<dyn Fn(WorkerEvent) + Send + Sync>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            events,
        }
    }

    /// Change the state and tell the node the notices when they changed.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.notices();
        change(&mut state);
        let after = state.notices();
        drop(state);
        if before != after {
            (self.events)(WorkerEvent::Notices(after));
        }
    }

    /// A job failed with `error` (not the customer's fault): the next lease waits, twice as
    /// long after each failure in a row, up to a minute.
    pub(super) fn job_failed(&self, error: &str) {
        self.update(|state| {
            state.failed_in_a_row += 1;
            state.last_failure = error.chars().take(200).collect();
            let wait = FIRST_FAILURE_WAIT
                .saturating_mul(1 << state.failed_in_a_row.saturating_sub(1).min(16))
                .min(LONGEST_FAILURE_WAIT);
            tracing::warn!(
                failed_in_a_row = state.failed_in_a_row,
                ?wait,
                "a job failed; waiting before the next lease"
            );
            state.resume_at = Some(Instant::now() + wait);
        });
    }

    /// A job completed: the failures in a row are over.
    pub(super) fn job_completed(&self) {
        self.update(|state| {
            state.failed_in_a_row = 0;
            state.resume_at = None;
        });
    }

    /// How long the next lease still waits after failed jobs (`None`: it may go now).
    pub(super) fn lease_wait(&self) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .resume_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    /// Model `model`'s files failed their check: fetch them again in the background (unless
    /// that is under way), backing off while it fails, and offer the model again once done.
    pub(super) fn repair(self: &Arc<Self>, executor: &Arc<Executor>, model: &str) {
        let mut started = false;
        self.update(|state| {
            if !state.repairing.contains_key(model) {
                state.repairing.insert(model.to_owned(), None);
                started = true;
            }
        });
        if !started {
            return;
        }
        let (trouble, executor, model) = (Arc::clone(self), Arc::clone(executor), model.to_owned());
        tokio::spawn(async move {
            let mut wait = FIRST_REFETCH_WAIT;
            loop {
                let fetched = {
                    let (executor, model) = (Arc::clone(&executor), model.clone());
                    tokio::task::spawn_blocking(move || executor.repair(&model)).await
                };
                let error = match fetched {
                    Ok(Ok(())) => {
                        trouble.update(|state| {
                            state.repairing.remove(&model);
                        });
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(error) => error.to_string(),
                };
                tracing::error!(%model, %error, retry_in = ?wait, "could not fetch the damaged model again");
                trouble.update(|state| {
                    state.repairing.insert(model.clone(), Some(error));
                });
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST_REFETCH_WAIT);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures in a row wait longer each time and say so; a completed job clears them.
    #[test]
    fn failures_in_a_row_back_off_and_show() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let trouble = {
            let told = Arc::clone(&told);
            Trouble::new(Arc::new(move |event| {
                if let WorkerEvent::Notices(notices) = event {
                    told.lock().unwrap().push(notices);
                }
            }))
        };
        assert_eq!(trouble.lease_wait(), None);
        trouble.job_failed("the job crashed");
        let first = trouble.lease_wait().unwrap();
        trouble.job_failed("the job crashed");
        let second = trouble.lease_wait().unwrap();
        assert!(
            second > first && second <= Duration::from_secs(2),
            "{first:?} {second:?}"
        );
        for _ in 0..10 {
            trouble.job_failed("the job crashed");
        }
        assert!(trouble.lease_wait().unwrap() <= LONGEST_FAILURE_WAIT);
        assert_eq!(
            told.lock().unwrap().last().unwrap(),
            &vec![
                "12 jobs failed in a row (the last: the job crashed); waiting before the next"
                    .to_owned()
            ]
        );
        trouble.job_completed();
        assert_eq!(trouble.lease_wait(), None);
        assert_eq!(told.lock().unwrap().last().unwrap(), &Vec::<String>::new());
    }
}
