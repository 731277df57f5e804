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

/// The lines of one model's queued jobs: open ones (`[0]`), and checks only established nodes
/// may take (`[1]`). A claim looks only at the lines it may take from, so a node never walks
/// past a pile of jobs for other models, or of checks it may not run.
type Lines = [BTreeMap<Place, String>; 2];

#[derive(Default)]
struct Table {
    jobs: HashMap<String, JobRow>,
    lines: HashMap<String, Lines>,
    /// Where each queued job waits: its model, which of its lines, its place there.
    places: HashMap<String, (String, usize, Place)>,
    next: u64,
}

impl Table {
    /// Keep the lines in step with `id`'s state after a change.
    fn reindex(&mut self, id: &str) {
        if let Some((model, line, place)) = self.places.remove(id)
            && let Some(lines) = self.lines.get_mut(&model)
        {
            lines[line].remove(&place);
            if lines.iter().all(BTreeMap::is_empty) {
                self.lines.remove(&model);
            }
        }
        if let Some(job) = self.jobs.get(id)
            && job.state == JobState::Queued
        {
            self.next += 1;
            let line = usize::from(job.established_only);
            let place = (u8::from(!job.front), self.next);
            self.lines.entry(job.model.clone()).or_default()[line].insert(place, id.to_owned());
            self.places
                .insert(id.to_owned(), (job.model.clone(), line, place));
        }
    }

    fn remove(&mut self, id: &str) {
        self.jobs.remove(id);
        self.reindex(id);
    }

    /// Up to `claim.max` queued jobs `claim` may take, in line order.
    fn pick(&self, claim: &Claim<'_>) -> Vec<String> {
        let mut picked: Vec<(Place, &String)> = Vec::new();
        let open_to = if claim.established { 2 } else { 1 };
        for lines in claim
            .models
            .iter()
            .filter_map(|model| self.lines.get(model))
        {
            for queue in &lines[..open_to] {
                picked.extend(
                    queue
                        .iter()
                        .filter(|(_, id)| self.jobs.get(*id).is_some_and(|job| claim.may_take(job)))
                        .take(claim.max)
                        .map(|(place, id)| (*place, id)),
                );
            }
        }
        picked.sort_unstable_by_key(|(place, _)| *place);
        // A model listed twice gives its jobs twice.
        picked.dedup_by_key(|(place, _)| *place);
        picked.truncate(claim.max);
        picked.into_iter().map(|(_, id)| id.clone()).collect()
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
        let picked = table.pick(claim);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::job::JobBody;

    fn queued(id: &str, model: &str, established_only: bool, front: bool) -> JobRow {
        let mut job = JobRow::queued(id.into(), model.into(), u64::MAX, JobBody::default());
        if id.ends_with("-answered-by-n") {
            job.exclude.push("n".into());
        }
        job.established_only = established_only;
        job.front = front;
        job
    }

    fn claim(jobs: &MemoryJobs, models: &[&str], max: usize, established: bool) -> Vec<String> {
        let models: Vec<String> = models.iter().map(|m| (*m).to_owned()).collect();
        jobs.claim_jobs(&Claim {
            node_id: "n",
            models: &models,
            max,
            established,
            lease_id: "lease",
            now_unix_ms: 1,
            expires_unix_ms: 2,
        })
        .into_iter()
        .map(|job| job.id)
        .collect()
    }

    #[test]
    fn a_claim_takes_the_first_jobs_it_may_run_in_line_order_across_its_models() {
        let jobs = MemoryJobs::default();
        let mut rows = Vec::new();
        // A pile of work this node may not take first: another model's, and checks.
        for i in 0..1000 {
            rows.push(queued(&format!("other-{i}"), "other", false, false));
            rows.push(queued(&format!("check-{i}"), "a", true, true));
        }
        rows.push(queued("a-new", "a", false, false));
        rows.push(queued("b-retried", "b", false, true));
        rows.push(queued("a-retried-answered-by-n", "a", false, true));
        rows.push(queued("b-new", "b", false, false));
        jobs.insert_jobs(&rows, &[]).unwrap();
        // A new node running a and b (b listed twice): retried jobs first, then in the order
        // queued; never a check, nor a job it answered.
        assert_eq!(
            claim(&jobs, &["a", "b", "b"], 3, false),
            ["b-retried", "a-new", "b-new"]
        );
        assert!(claim(&jobs, &["a", "b"], 3, false).is_empty());
        // An established node takes the checks, in order.
        assert_eq!(claim(&jobs, &["a"], 2, true), ["check-0", "check-1"]);
        assert_eq!(jobs.job_counts().queued, 1000 + 998 + 1);
    }
}
