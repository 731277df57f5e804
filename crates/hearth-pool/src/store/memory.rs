//! The job queue of a single-process pool, in that process's memory. The customers waiting on
//! it are connections to the same process, so nothing another process could serve is lost
//! with it; receipts, balances, records and sessions stay in the durable store beside it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::StoreError;
use crate::queue::job::{Claim, JobCounts, JobEdit, JobRow, JobState, QueueEvent, Write};

/// Events buffered for a slow listener before it is told to resync.
const EVENT_BUFFER: usize = 4096;

/// A queued job's place in line: retried and checked jobs (`0`) before new ones (`1`), then
/// in the order they were queued.
type Place = (u8, u64);

#[derive(Default)]
struct Table {
    jobs: HashMap<String, JobRow>,
    queued: BTreeMap<Place, String>,
    places: HashMap<String, Place>,
    next: u64,
}

impl Table {
    /// Keep the line in step with `id`'s state after a change.
    fn reindex(&mut self, id: &str) {
        if let Some(place) = self.places.remove(id) {
            self.queued.remove(&place);
        }
        if let Some(job) = self.jobs.get(id)
            && job.state == JobState::Queued
        {
            self.next += 1;
            let place = (u8::from(!job.front), self.next);
            self.queued.insert(place, id.to_owned());
            self.places.insert(id.to_owned(), place);
        }
    }

    fn remove(&mut self, id: &str) {
        self.jobs.remove(id);
        self.reindex(id);
    }
}

/// Jobs in memory, for [`super::SledStore`].
pub struct MemoryJobs {
    table: Mutex<Table>,
    events: broadcast::Sender<QueueEvent>,
}

impl std::fmt::Debug for MemoryJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryJobs")
            .field("jobs", &self.lock().jobs.len())
            .finish()
    }
}

impl Default for MemoryJobs {
    fn default() -> Self {
        Self {
            table: Mutex::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }
}

impl MemoryJobs {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish(&self, events: &[QueueEvent]) {
        self.send(events.to_vec());
    }

    fn send(&self, events: Vec<QueueEvent>) {
        for event in events {
            // Nobody listening (a pool not started yet) is fine: the jobs are in the table.
            let _ = self.events.send(event);
        }
    }

    pub fn insert_jobs(&self, jobs: &[JobRow], events: &[QueueEvent]) -> Result<(), StoreError> {
        {
            let mut table = self.lock();
            if let Some(job) = jobs.iter().find(|j| table.jobs.contains_key(&j.id)) {
                return Err(StoreError::Conflict(format!("job id {} is taken", job.id)));
            }
            for job in jobs {
                table.jobs.insert(job.id.clone(), job.clone());
                table.reindex(&job.id);
            }
        }
        self.send(events.to_vec());
        Ok(())
    }

    pub fn claim_jobs(&self, claim: &Claim<'_>) -> Vec<JobRow> {
        let mut table = self.lock();
        let table = &mut *table;
        let mut picked = Vec::new();
        for id in table.queued.values() {
            if picked.len() >= claim.max {
                break;
            }
            let Some(job) = table.jobs.get(id) else {
                continue;
            };
            if claim.may_take(job) {
                picked.push(id.clone());
            }
        }
        let mut leased = Vec::with_capacity(picked.len());
        for id in picked {
            if let Some(job) = table.jobs.get_mut(&id) {
                job.state = JobState::Leased {
                    node_id: claim.node_id.to_owned(),
                    lease_id: claim.lease_id.to_owned(),
                    expires_unix_ms: claim.expires_unix_ms,
                };
                job.leased_unix_ms = claim.now_unix_ms;
                leased.push(job.clone());
            }
            table.reindex(&id);
        }
        leased
    }

    pub fn edit_job(&self, job_id: &str, edit: JobEdit<'_>) -> bool {
        let events = {
            let mut table = self.lock();
            let Some(job) = table.jobs.get_mut(job_id) else {
                return false;
            };
            // In place: an edit that keeps the job changed nothing (see `JobEdit`).
            let done = edit(job);
            match done.write {
                Write::Keep => {}
                Write::Put => table.reindex(job_id),
                Write::Delete => table.remove(job_id),
            }
            done.events
        };
        self.send(events);
        true
    }

    pub fn job(&self, job_id: &str) -> Option<JobRow> {
        self.lock().jobs.get(job_id).cloned()
    }

    pub fn take_finished_job(&self, job_id: &str) -> Option<JobRow> {
        let mut table = self.lock();
        if table.jobs.get(job_id)?.state != JobState::Finished {
            return None;
        }
        let job = table.jobs.get(job_id).cloned();
        table.remove(job_id);
        job
    }

    pub fn expired_leases(&self, now_unix_ms: u64, limit: usize) -> Vec<String> {
        self.lock()
            .jobs
            .values()
            .filter(|j| j.expires_unix_ms().is_some_and(|t| t <= now_unix_ms))
            .take(limit)
            .map(|j| j.id.clone())
            .collect()
    }

    pub fn next_lease_expiry(&self) -> Option<u64> {
        self.lock()
            .jobs
            .values()
            .filter_map(JobRow::expires_unix_ms)
            .min()
    }

    pub fn jobs_leased_to(&self, node_id: &str) -> Vec<String> {
        self.lock()
            .jobs
            .values()
            .filter(|j| matches!(&j.state, JobState::Leased { node_id: n, .. } if n == node_id))
            .map(|j| j.id.clone())
            .collect()
    }

    pub fn purge_jobs(&self, before_unix_ms: u64) -> usize {
        let mut table = self.lock();
        let gone: Vec<String> = table
            .jobs
            .values()
            .filter(|j| {
                j.deadline_unix_ms < before_unix_ms
                    && matches!(j.state, JobState::Queued | JobState::Finished)
            })
            .map(|j| j.id.clone())
            .collect();
        for id in &gone {
            table.remove(id);
        }
        gone.len()
    }

    pub fn job_counts(&self) -> JobCounts {
        let table = self.lock();
        let mut counts = JobCounts::default();
        for job in table.jobs.values() {
            match job.state {
                JobState::Queued => counts.queued += 1,
                JobState::Leased { .. } | JobState::Paying { .. } => counts.leased += 1,
                JobState::Finished => counts.finished += 1,
            }
        }
        counts
    }

    pub fn events(&self) -> broadcast::Receiver<QueueEvent> {
        self.events.subscribe()
    }
}
