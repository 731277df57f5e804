//! Jobs: started, finished with their receipt and their hour's totals in one transaction, late
//! receipts, imports, and the reads the history and the charts make.

use hearth_protocol::{PublicKey, SignedReceipt};
use sled::Transactional;

use crate::{
    JobOutcome, JobRecord, JobStatus, Ledger, LedgerError, MS_PER_HOUR, RECENT_CACHED, Result,
    Totals, TxResult, corrupt, decode, encode, job_key, tx_error,
};

impl Ledger {
    /// Record that a job started; returns the record. Not flushed here: the caller runs
    /// [`Ledger::flush`] alongside the job (the worker does, on a blocking thread) so the disk
    /// sync costs the job no time. A crash before the flush loses only the note that the job
    /// started; the pool runs it again either way, and nothing owed is lost (receipts are
    /// collected from the pool).
    ///
    /// A job this node ran before without finishing it (Hearth stopped while it ran, or it was
    /// handed back for the owner) is started again in place of its old row, with a note: one
    /// row per job, so counts and history stay true.
    pub fn start_job(
        &self,
        job_id: &str,
        model: &str,
        task: &str,
        started_unix_ms: u64,
    ) -> Result<JobRecord> {
        let mut record = JobRecord::started(job_id, model, task, started_unix_ms);
        let key = job_key(started_unix_ms, job_id);
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        // After the write lock: a reopen (which holds it) has finished.
        let t = self.t()?;
        let earlier = match t.job_index.get(job_id.as_bytes())? {
            Some(old_key) if old_key.as_ref() != key.as_slice() => t
                .jobs
                .get(&old_key)?
                .and_then(|bytes| decode::<JobRecord>(&old_key, &bytes).ok())
                .filter(|old| matches!(old.status, JobStatus::Interrupted | JobStatus::Returned))
                .map(|old| (old_key, old.status)),
            _ => None,
        };
        if let Some((_, status)) = &earlier {
            record.note = Some(match status {
                JobStatus::Interrupted => "started again: Hearth had stopped while it ran".into(),
                _ => "started again after it was handed back".into(),
            });
        }
        let new = (&t.jobs, &t.job_index)
            .transaction(|(jobs, index)| -> TxResult<bool> {
                if let Some((old_key, _)) = &earlier {
                    jobs.remove(old_key)?;
                }
                let before = jobs.insert(key.as_slice(), encode(&record))?;
                index.insert(job_id.as_bytes(), key.as_slice())?;
                Ok(before.is_none() && earlier.is_none())
            })
            .map_err(tx_error)?;
        if new
            && let Some(count) = self
                .job_count
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
        {
            *count += 1;
        }
        self.remember(&record);
        Ok(record)
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        hearth_sled::flush(&self.t()?.db)?;
        Ok(())
    }

    /// Record how a job ended: its record, its receipt (checked against the pool's key and
    /// the chain) and its hour's totals, in one transaction, flushed before returning.
    pub fn finish_job(
        &self,
        job_id: &str,
        outcome: JobOutcome,
        pool_key: &PublicKey,
    ) -> Result<JobRecord> {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        // After the write lock: a reopen (which holds it) has finished.
        let t = self.t()?;
        let key = t
            .job_index
            .get(job_id)?
            .ok_or_else(|| LedgerError::UnknownJob(job_id.to_owned()))?;
        let mut record: JobRecord = match t.jobs.get(&key)? {
            Some(bytes) => decode(&key, &bytes)?,
            None => return Err(LedgerError::UnknownJob(job_id.to_owned())),
        };
        if let Some(receipt) = &outcome.receipt {
            self.check_receipt(receipt, pool_key)?;
            record.units = receipt.receipt.payment.units;
            record.micro_credits = receipt.receipt.payment.micro_credits;
        }
        record.status = outcome.status;
        record.ended_unix_ms = Some(outcome.ended_unix_ms);
        record.energy_wh = outcome.energy_wh;
        record.energy_estimated = outcome.energy_estimated;
        record.receipt = outcome.receipt.clone();
        // A note from the start (started again after an interruption) stays unless the end
        // has its own.
        record.note = outcome.note.or(record.note);
        let hour = outcome.ended_unix_ms / MS_PER_HOUR;
        let mut totals = self.hour(hour)?;
        if let Some(delta) = hour_totals(&record) {
            totals.add(&delta);
        }
        let bytes = encode(&record);
        (&t.jobs, &t.receipts, &t.hours)
            .transaction(|(jobs, receipts, hours)| -> TxResult<()> {
                jobs.insert(key.as_ref(), bytes.as_slice())?;
                if let Some(receipt) = &outcome.receipt {
                    receipts.insert(&receipt.receipt.sequence.to_be_bytes(), encode(receipt))?;
                }
                hours.insert(&hour.to_be_bytes(), encode(&totals))?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.flush()?;
        self.remember(&record);
        if let Some(receipt) = &record.receipt {
            self.mark_chain(receipt)?;
        }
        Ok(record)
    }

    /// Store a receipt that did not arrive with the result reply: the node stopped between
    /// sending a result and writing its receipt, or the result was paid after verification.
    /// The pool hands these out again (`/node/v1/receipts`); each must verify and follow the
    /// chain. The job becomes `Completed` with the receipt's units and credits (created from
    /// the receipt when the ledger never saw it start); its hour's totals are corrected, not
    /// counted twice. Flushed before returning.
    pub fn record_late_receipt(
        &self,
        receipt: SignedReceipt,
        pool_key: &PublicKey,
    ) -> Result<JobRecord> {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        // After the write lock: a reopen (which holds it) has finished.
        let t = self.t()?;
        self.check_receipt(&receipt, pool_key)?;
        let paid = &receipt.receipt.payment;
        let existing = match t.job_index.get(paid.job_id.as_bytes())? {
            Some(key) => match t.jobs.get(&key)? {
                Some(bytes) => Some((key.to_vec(), decode::<JobRecord>(&key, &bytes)?)),
                None => None,
            },
            None => None,
        };
        let (key, before, mut record) = match existing {
            Some((key, record)) => (key, Some(record.clone()), record),
            None => {
                let started = receipt.receipt.issued_unix_ms;
                let record = JobRecord::started(&paid.job_id, &paid.model, "", started);
                (job_key(started, &paid.job_id), None, record)
            }
        };
        record.status = JobStatus::Completed;
        record.units = paid.units;
        record.micro_credits = paid.micro_credits;
        record.ended_unix_ms = Some(
            record
                .ended_unix_ms
                .unwrap_or(receipt.receipt.issued_unix_ms),
        );
        record.note = Some("receipt collected from the pool after the job".into());
        record.receipt = Some(receipt.clone());
        // Hour totals: take back what the old record counted, add what the new one counts.
        let mut hours = std::collections::BTreeMap::new();
        let contributions = [
            (
                before.as_ref().and_then(|b| hour_totals(b).map(|t| (b, t))),
                false,
            ),
            (hour_totals(&record).map(|t| (&record, t)), true),
        ];
        for (contribution, adds) in contributions {
            let Some((job, delta)) = contribution else {
                continue;
            };
            let hour = job.ended_unix_ms.unwrap_or(job.started_unix_ms) / MS_PER_HOUR;
            let totals = match hours.entry(hour) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => entry.insert(self.hour(hour)?),
            };
            if adds {
                totals.add(&delta);
            } else {
                totals.remove(&delta);
            }
        }
        let bytes = encode(&record);
        (&t.jobs, &t.job_index, &t.receipts, &t.hours)
            .transaction(|(jobs, index, receipts, hour_tree)| -> TxResult<()> {
                jobs.insert(key.as_slice(), bytes.as_slice())?;
                index.insert(record.job_id.as_bytes(), key.as_slice())?;
                receipts.insert(&receipt.receipt.sequence.to_be_bytes(), encode(&receipt))?;
                for (hour, totals) in &hours {
                    hour_tree.insert(&hour.to_be_bytes(), encode(totals))?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        if before.is_none() {
            *self.job_count.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.flush()?;
        self.remember(&record);
        self.mark_chain(&receipt)?;
        Ok(record)
    }

    /// Import finished jobs in bulk (from an export or an older installation), with their
    /// hourly totals, flushed once at the end. Receipts are not imported: they belong to the
    /// chain, which only grows through [`Ledger::finish_job`].
    pub fn import_jobs(&self, records: &[JobRecord]) -> Result<()> {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        // After the write lock: a reopen (which holds it) has finished.
        let t = self.t()?;
        let mut jobs = sled::Batch::default();
        let mut index = sled::Batch::default();
        let mut hours: std::collections::BTreeMap<u64, Totals> = std::collections::BTreeMap::new();
        for record in records {
            let key = job_key(record.started_unix_ms, &record.job_id);
            let mut stored = record.clone();
            stored.receipt = None;
            jobs.insert(key.as_slice(), encode(&stored));
            index.insert(record.job_id.as_bytes(), key);
            if let Some(delta) = hour_totals(record) {
                let hour = record.ended_unix_ms.unwrap_or(record.started_unix_ms) / MS_PER_HOUR;
                let totals = match hours.get_mut(&hour) {
                    Some(t) => t,
                    None => {
                        let existing = self.hour(hour)?;
                        hours.entry(hour).or_insert(existing)
                    }
                };
                totals.add(&delta);
            }
        }
        t.jobs.apply_batch(jobs)?;
        t.job_index.apply_batch(index)?;
        *self.job_count.lock().unwrap_or_else(|e| e.into_inner()) = None;
        for (hour, totals) in hours {
            t.hours.insert(hour.to_be_bytes(), encode(&totals))?;
        }
        self.flush()?;
        drop(_write);
        self.reload_recent();
        Ok(())
    }

    /// One job.
    pub fn job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let t = self.t()?;
        let Some(key) = t.job_index.get(job_id)? else {
            return Ok(None);
        };
        match t.jobs.get(&key)? {
            Some(bytes) => Ok(Some(decode(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Refill the in-memory newest jobs from disk (damaged records are left out).
    pub(crate) fn reload_recent(&self) {
        let Ok(trees) = self.t() else {
            return; // being reopened: the reopen reloads it
        };
        let mut newest: std::collections::VecDeque<JobRecord> = trees
            .jobs
            .iter()
            .rev()
            .take(RECENT_CACHED)
            .filter_map(|entry| {
                let (key, bytes) = entry.ok()?;
                decode(&key, &bytes)
                    .map_err(|error| tracing::warn!(%error, "leaving a damaged job record out"))
                    .ok()
            })
            .collect();
        newest.make_contiguous().reverse();
        *self.recent.lock().unwrap_or_else(|e| e.into_inner()) = newest;
    }

    /// Put `record` into the in-memory newest jobs, in start order.
    fn remember(&self, record: &JobRecord) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = recent.iter().position(|r| r.job_id == record.job_id) {
            if recent[at].started_unix_ms == record.started_unix_ms {
                recent[at] = record.clone();
                return;
            }
            // Started again: it moves to its new place.
            recent.remove(at);
        }
        let key = (record.started_unix_ms, &record.job_id);
        let at = recent.partition_point(|r| (r.started_unix_ms, &r.job_id) <= key);
        if at == 0 && recent.len() >= RECENT_CACHED {
            return; // older than everything kept
        }
        recent.insert(at, record.clone());
        while recent.len() > RECENT_CACHED {
            recent.pop_front();
        }
    }

    /// The newest `n` jobs, newest first (from memory up to [`RECENT_CACHED`]; damaged records
    /// are left out there, and reported by full scans such as [`Ledger::export_csv`]).
    pub fn recent_jobs(&self, n: usize) -> Result<Vec<JobRecord>> {
        if n <= RECENT_CACHED {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(recent.iter().rev().take(n).cloned().collect());
        }
        self.t()?
            .jobs
            .iter()
            .rev()
            .take(n)
            .map(|entry| {
                let (key, bytes) = entry?;
                decode(&key, &bytes)
            })
            .collect()
    }

    /// One page of the jobs started in `[from, to)` that `keep` accepts, newest first:
    /// `(how many match in all, the page)`. Without a filter the count reads no record; with
    /// one, every record in the range is read once.
    pub fn jobs_page(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
        offset: usize,
        limit: usize,
        keep: Option<&dyn Fn(&JobRecord) -> bool>,
    ) -> Result<(u64, Vec<JobRecord>)> {
        if keep.is_none() && from_unix_ms == 0 && to_unix_ms == u64::MAX {
            return self.all_jobs_page(offset, limit);
        }
        let range = self
            .t()?
            .jobs
            .range(from_unix_ms.to_be_bytes()..to_unix_ms.to_be_bytes())
            .rev();
        let mut total = 0u64;
        let mut page = Vec::new();
        for entry in range {
            let (key, bytes) = entry?;
            let wanted = total >= offset as u64 && page.len() < limit;
            match keep {
                None => {
                    if wanted {
                        page.push(decode(&key, &bytes)?);
                    }
                    total += 1;
                }
                Some(keep) => {
                    let record: JobRecord = match decode(&key, &bytes) {
                        Ok(record) => record,
                        Err(error) => {
                            tracing::warn!(%error, "leaving a damaged job record out");
                            continue;
                        }
                    };
                    if keep(&record) {
                        if wanted {
                            page.push(record);
                        }
                        total += 1;
                    }
                }
            }
        }
        Ok((total, page))
    }

    /// How many jobs there are (counted once, then kept current).
    pub fn job_count(&self) -> Result<u64> {
        let mut cached = self.job_count.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = *cached {
            return Ok(count);
        }
        let mut count = 0u64;
        for key in self.t()?.jobs.iter().keys() {
            key?;
            count += 1;
        }
        *cached = Some(count);
        Ok(count)
    }

    /// A page of every job, newest first, walking from whichever end of the tree is nearer.
    fn all_jobs_page(&self, offset: usize, limit: usize) -> Result<(u64, Vec<JobRecord>)> {
        let t = self.t()?;
        let total = self.job_count()?;
        let from_newest = offset as u64;
        let end = (from_newest + limit as u64).min(total);
        let decode_entry = |entry: sled::Result<(sled::IVec, sled::IVec)>| -> Result<JobRecord> {
            let (key, bytes) = entry?;
            decode(&key, &bytes)
        };
        let page = if from_newest <= total / 2 {
            t.jobs
                .iter()
                .rev()
                .skip(offset)
                .take(limit)
                .map(decode_entry)
                .collect::<Result<Vec<_>>>()?
        } else {
            // Rows `offset..end` counted from the newest are `total-end..total-offset` from
            // the oldest.
            let mut oldest_first = t
                .jobs
                .iter()
                .skip((total - end) as usize)
                .take(end.saturating_sub(from_newest) as usize)
                .map(decode_entry)
                .collect::<Result<Vec<_>>>()?;
            oldest_first.reverse();
            oldest_first
        };
        Ok((total, page))
    }

    /// Jobs whose id starts with `prefix`, newest first: `(how many match, rows offset..offset
    /// + limit)`. The count reads only the id index.
    pub fn jobs_with_id_prefix(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<JobRecord>)> {
        let t = self.t()?;
        // Keys in the id index map to time keys; newest first is time order reversed.
        let mut keys = Vec::new();
        for entry in t.job_index.scan_prefix(prefix.as_bytes()) {
            let (_, key) = entry?;
            keys.push(key);
        }
        keys.sort_unstable_by(|a, b| b.cmp(a));
        let total = keys.len() as u64;
        let mut page = Vec::new();
        for key in keys.into_iter().skip(offset).take(limit) {
            if let Some(bytes) = t.jobs.get(&key)? {
                page.push(decode(&key, &bytes)?);
            }
        }
        Ok((total, page))
    }

    /// Jobs started in `[from, to)`, oldest first, at most `limit`.
    pub fn jobs_between(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        self.t()?
            .jobs
            .range(from_unix_ms.to_be_bytes()..to_unix_ms.to_be_bytes())
            .take(limit)
            .map(|entry| {
                let (key, bytes) = entry?;
                decode(&key, &bytes)
            })
            .collect()
    }

    /// Totals of jobs that ended in `[from, to)`, to the hour.
    pub fn totals_between(&self, from_unix_ms: u64, to_unix_ms: u64) -> Result<Totals> {
        let mut sum = Totals::default();
        let (from, to) = (from_unix_ms / MS_PER_HOUR, to_unix_ms.div_ceil(MS_PER_HOUR));
        for entry in self.t()?.hours.range(from.to_be_bytes()..to.to_be_bytes()) {
            let (key, bytes) = entry?;
            sum.add(&decode::<Totals>(&key, &bytes)?);
        }
        Ok(sum)
    }

    /// Totals per hour in `[from, to)`: `(hour start in unix ms, totals)`, for charts.
    pub fn hourly(&self, from_unix_ms: u64, to_unix_ms: u64) -> Result<Vec<(u64, Totals)>> {
        let (from, to) = (from_unix_ms / MS_PER_HOUR, to_unix_ms.div_ceil(MS_PER_HOUR));
        self.t()?
            .hours
            .range(from.to_be_bytes()..to.to_be_bytes())
            .map(|entry| {
                let (key, bytes) = entry?;
                let hour = <[u8; 8]>::try_from(key.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|e| corrupt("hour key", e))?;
                Ok((hour * MS_PER_HOUR, decode(&key, &bytes)?))
            })
            .collect()
    }
}

/// The totals one finished job adds to its hour.
pub(crate) fn hour_totals(record: &JobRecord) -> Option<Totals> {
    let energy = record.energy_wh.unwrap_or(0.0);
    match record.status {
        JobStatus::Completed => Some(Totals {
            jobs_completed: 1,
            micro_credits: record.micro_credits,
            energy_wh: energy,
            energy_estimated: record.energy_estimated,
            ..Totals::default()
        }),
        JobStatus::Failed => Some(Totals {
            jobs_failed: 1,
            energy_wh: energy,
            energy_estimated: record.energy_estimated,
            ..Totals::default()
        }),
        _ => None,
    }
}
