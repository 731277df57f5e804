//! The node's ledger, in sled: every job it ran, every receipt the pool signed for it, hourly
//! earnings for charts, and the user's settings.
//!
//! Layout (schema [`SCHEMA_VERSION`]):
//! - `jobs`: key `started_ms (8 bytes, big-endian) ++ job id` → [`JobRecord`] JSON, so a time
//!   range is one ordered scan and the newest jobs are at the end;
//! - `job_index`: job id → its `jobs` key;
//! - `receipts`: key `sequence (big-endian)` → [`SignedReceipt`] JSON, the pool's hash chain;
//! - `hours`: key `unix hour (big-endian)` → [`Totals`] JSON, updated with each finished job;
//! - `settings`: key → JSON value; `meta`: `schema_version`;
//! - `activity`: key `unix ms (big-endian) ++ sequence` → JSON of a state change (pauses and
//!   resumes with their reasons), kept for the owner to look back on.
//!
//! A finished job, its receipt and its hour's totals are written in one transaction and
//! flushed to disk before [`Ledger::finish_job`] returns, so a crash never loses a job the UI
//! was told about and never counts one twice.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use hearth_protocol::{PublicKey, SignedReceipt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// The layout this code reads and writes; older ledgers are migrated on open.
pub const SCHEMA_VERSION: u32 = 1;
const MS_PER_HOUR: u64 = 3_600_000;

/// What can go wrong with the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("ledger record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("ledger schema {found} is newer than this Hearth understands ({SCHEMA_VERSION})")]
    TooNew { found: u32 },
    #[error("unknown job {0}")]
    UnknownJob(String),
    #[error("receipt for job {job_id} (sequence {sequence}) does not verify: {reason}")]
    BadReceipt {
        job_id: String,
        sequence: u64,
        reason: String,
    },
    #[error("writing the export: {0}")]
    Export(#[from] std::io::Error),
}

/// Shorthand for ledger results.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Started, not finished.
    Running,
    /// Finished and accepted by the pool.
    Completed,
    /// Finished with an error.
    Failed,
    /// Given back to the pool (the owner needed the GPU).
    Returned,
    /// Running when Hearth stopped (crash, power cut); the pool runs it again elsewhere.
    Interrupted,
}

/// One job as the node saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub model: String,
    /// `embeddings`, `chat`, `image_classification`, `chat_score`.
    pub task: String,
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    pub status: JobStatus,
    /// Units billed (tokens, images), from the receipt.
    pub units: u64,
    pub micro_credits: u64,
    pub energy_wh: Option<f64>,
    pub energy_estimated: bool,
    /// The pool's signed receipt, once paid.
    pub receipt: Option<SignedReceipt>,
    /// Why it failed or was returned.
    pub note: Option<String>,
}

impl JobRecord {
    /// A job that has just started: running, nothing billed yet.
    pub fn started(job_id: &str, model: &str, task: &str, started_unix_ms: u64) -> Self {
        Self {
            job_id: job_id.to_owned(),
            model: model.to_owned(),
            task: task.to_owned(),
            started_unix_ms,
            ended_unix_ms: None,
            status: JobStatus::Running,
            units: 0,
            micro_credits: 0,
            energy_wh: None,
            energy_estimated: false,
            receipt: None,
            note: None,
        }
    }
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub ended_unix_ms: u64,
    pub energy_wh: Option<f64>,
    pub energy_estimated: bool,
    /// The receipt, for completed jobs (units and credits come from it).
    pub receipt: Option<SignedReceipt>,
    pub note: Option<String>,
}

/// Sums over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub jobs_completed: u64,
    pub jobs_failed: u64,
    pub micro_credits: u64,
    pub energy_wh: f64,
    /// Some of `energy_wh` was estimated rather than measured.
    pub energy_estimated: bool,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.jobs_completed += other.jobs_completed;
        self.jobs_failed += other.jobs_failed;
        self.micro_credits = self.micro_credits.saturating_add(other.micro_credits);
        self.energy_wh += other.energy_wh;
        self.energy_estimated |= other.energy_estimated;
    }

    /// Take back what `other` added (a job whose record is being replaced).
    fn remove(&mut self, other: &Totals) {
        self.jobs_completed = self.jobs_completed.saturating_sub(other.jobs_completed);
        self.jobs_failed = self.jobs_failed.saturating_sub(other.jobs_failed);
        self.micro_credits = self.micro_credits.saturating_sub(other.micro_credits);
        self.energy_wh = (self.energy_wh - other.energy_wh).max(0.0);
    }
}

/// What [`Ledger::verify_chain`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub receipts: u64,
    pub micro_credits: u64,
}

/// The ledger.
#[derive(Debug)]
pub struct Ledger {
    db: sled::Db,
    jobs: sled::Tree,
    job_index: sled::Tree,
    receipts: sled::Tree,
    hours: sled::Tree,
    settings: sled::Tree,
    activity: sled::Tree,
    /// Resource use at a coarse interval (a minute), for charts that survive restarts.
    telemetry: sled::Tree,
    meta: sled::Tree,
    /// Serialises writers: each reads totals and chain heads it then updates.
    write: Mutex<()>,
    /// The newest [`RECENT_CACHED`] jobs by start time, oldest first: the overview and tray
    /// ask for them constantly, and a reverse scan of a large tree is slow.
    recent: Mutex<std::collections::VecDeque<JobRecord>>,
    /// How many jobs there are, once counted (a count reads every key); kept current by
    /// [`Ledger::start_job`], forgotten by the rarer writes that may add jobs in bulk.
    job_count: Mutex<Option<u64>>,
}

/// Jobs kept in memory for [`Ledger::recent_jobs`].
pub const RECENT_CACHED: usize = 256;

fn corrupt(key: impl std::fmt::Debug, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt {
        key: format!("{key:?}"),
        reason: e.to_string(),
    }
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(String::from_utf8_lossy(key), e))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our record types serialise infallibly (no maps with non-string keys, no custom code).
    serde_json::to_vec(value).unwrap_or_default()
}

fn job_key(started_unix_ms: u64, job_id: &str) -> Vec<u8> {
    let mut key = started_unix_ms.to_be_bytes().to_vec();
    key.extend(job_id.as_bytes());
    key
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<LedgerError>>;

fn tx_error(e: TransactionError<LedgerError>) -> LedgerError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => LedgerError::Storage(e),
    }
}

/// The most memory a database's page cache holds.
const DATABASE_CACHE_BYTES: u64 = 16 << 20;

/// How long [`open_database`] waits for another holder to let go of a database.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Open (or create) the sled database in `dir`, waiting up to a few seconds for its lock.
///
/// sled locks the database file for as long as it is open, and a dropped `sled::Db` lets go
/// of the lock only when its background threads finish, a moment later; a Hearth restarted
/// quickly meets the same moment while the old process exits. A lock still held after the wait
/// is another running process, and the error says so.
///
/// Every writer flushes what must survive a crash itself (and sled flushes on close), so there
/// is no periodic flush: its thread would wake twice a second for the life of the app. The
/// page cache is capped well below sled's 1 GiB default: Hearth's records are small and it
/// lives in the tray for days.
pub fn open_database(dir: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(DATABASE_CACHE_BYTES)
        .flush_every_ms(None);
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(sled::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "{} is in use by another process (is another Hearth running?): {e}",
                            dir.display()
                        ),
                    )));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

impl Ledger {
    /// Open (or create) the ledger in `dir`, migrating an older layout. Jobs left running by a
    /// previous run are marked [`JobStatus::Interrupted`].
    pub fn open(dir: &Path) -> Result<Self> {
        let db = open_database(dir)?;
        let ledger = Self {
            jobs: db.open_tree("jobs")?,
            job_index: db.open_tree("job_index")?,
            receipts: db.open_tree("receipts")?,
            hours: db.open_tree("hours")?,
            settings: db.open_tree("settings")?,
            activity: db.open_tree("activity")?,
            telemetry: db.open_tree("telemetry")?,
            meta: db.open_tree("meta")?,
            db,
            write: Mutex::new(()),
            recent: Mutex::new(std::collections::VecDeque::new()),
            job_count: Mutex::new(None),
        };
        ledger.migrate()?;
        ledger.mark_interrupted()?;
        ledger.reload_recent();
        Ok(ledger)
    }

    /// The schema version stored in the database (0: written before versions existed).
    pub fn schema_version(&self) -> Result<u32> {
        Ok(match self.meta.get("schema_version")? {
            None => 0,
            Some(bytes) => decode(b"schema_version", &bytes)?,
        })
    }

    fn migrate(&self) -> Result<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(LedgerError::TooNew { found });
        }
        if found == 0 {
            // Version 0 kept jobs in a `jobs_v0` tree keyed by job id alone, with no index
            // and no hourly totals. Re-key them by time and rebuild the totals.
            let old = self.db.open_tree("jobs_v0")?;
            for entry in old.iter() {
                let (key, bytes) = entry?;
                let record: JobRecord = decode(&key, &bytes)?;
                let time_key = job_key(record.started_unix_ms, &record.job_id);
                self.jobs.insert(time_key.as_slice(), bytes.as_ref())?;
                self.job_index.insert(record.job_id.as_bytes(), time_key)?;
                if let Some(hour_delta) = hour_totals(&record) {
                    let hour = record.ended_unix_ms.unwrap_or(record.started_unix_ms) / MS_PER_HOUR;
                    let mut totals = self.hour(hour)?;
                    totals.add(&hour_delta);
                    self.hours.insert(hour.to_be_bytes(), encode(&totals))?;
                }
            }
            self.db.drop_tree("jobs_v0")?;
        }
        self.meta
            .insert("schema_version", encode(&SCHEMA_VERSION))?;
        self.db.flush()?;
        Ok(())
    }

    /// The stored totals of one unix hour (zero when nothing ended in it).
    fn hour(&self, hour: u64) -> Result<Totals> {
        match self.hours.get(hour.to_be_bytes())? {
            Some(bytes) => decode(b"hour", &bytes),
            None => Ok(Totals::default()),
        }
    }

    /// Jobs still `Running` from a previous run become `Interrupted`. A damaged record is
    /// left as it is (reads of it report it), so one bad record never locks the user out.
    fn mark_interrupted(&self) -> Result<()> {
        let mut changed = false;
        for entry in self.jobs.iter() {
            let (key, bytes) = entry?;
            let mut record: JobRecord = match decode(&key, &bytes) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(%error, "skipping a damaged job record");
                    continue;
                }
            };
            if record.status == JobStatus::Running {
                record.status = JobStatus::Interrupted;
                record.note = Some("Hearth stopped while the job ran".into());
                self.jobs.insert(key, encode(&record))?;
                changed = true;
            }
        }
        if changed {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Record that a job started; returns the record. Not flushed here: the caller runs [`Ledger::flush`] alongside
    /// the job (the worker does, on a blocking thread) so the disk sync costs the job no time.
    /// A crash before the flush loses only the note that the job started; the pool runs it
    /// again either way, and nothing owed is lost (receipts are collected from the pool).
    pub fn start_job(
        &self,
        job_id: &str,
        model: &str,
        task: &str,
        started_unix_ms: u64,
    ) -> Result<JobRecord> {
        let record = JobRecord::started(job_id, model, task, started_unix_ms);
        let key = job_key(started_unix_ms, job_id);
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let new = (&self.jobs, &self.job_index)
            .transaction(|(jobs, index)| -> TxResult<bool> {
                let before = jobs.insert(key.as_slice(), encode(&record))?;
                index.insert(job_id.as_bytes(), key.as_slice())?;
                Ok(before.is_none())
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
        self.db.flush()?;
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
        let key = self
            .job_index
            .get(job_id)?
            .ok_or_else(|| LedgerError::UnknownJob(job_id.to_owned()))?;
        let mut record: JobRecord = match self.jobs.get(&key)? {
            Some(bytes) => decode(&key, &bytes)?,
            None => return Err(LedgerError::UnknownJob(job_id.to_owned())),
        };
        if let Some(receipt) = &outcome.receipt {
            self.check_receipt(receipt, pool_key)?;
            record.units = receipt.receipt.units;
            record.micro_credits = receipt.receipt.micro_credits;
        }
        record.status = outcome.status;
        record.ended_unix_ms = Some(outcome.ended_unix_ms);
        record.energy_wh = outcome.energy_wh;
        record.energy_estimated = outcome.energy_estimated;
        record.receipt = outcome.receipt.clone();
        record.note = outcome.note;
        let hour = outcome.ended_unix_ms / MS_PER_HOUR;
        let mut totals = self.hour(hour)?;
        if let Some(delta) = hour_totals(&record) {
            totals.add(&delta);
        }
        let bytes = encode(&record);
        (&self.jobs, &self.receipts, &self.hours)
            .transaction(|(jobs, receipts, hours)| -> TxResult<()> {
                jobs.insert(key.as_ref(), bytes.as_slice())?;
                if let Some(receipt) = &outcome.receipt {
                    receipts.insert(&receipt.receipt.sequence.to_be_bytes(), encode(receipt))?;
                }
                hours.insert(&hour.to_be_bytes(), encode(&totals))?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.db.flush()?;
        self.remember(&record);
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
        self.check_receipt(&receipt, pool_key)?;
        let paid = &receipt.receipt;
        let existing = match self.job_index.get(paid.job_id.as_bytes())? {
            Some(key) => match self.jobs.get(&key)? {
                Some(bytes) => Some((key.to_vec(), decode::<JobRecord>(&key, &bytes)?)),
                None => None,
            },
            None => None,
        };
        let (key, before, mut record) = match existing {
            Some((key, record)) => (key, Some(record.clone()), record),
            None => {
                let started = paid.issued_unix_ms;
                let record = JobRecord::started(&paid.job_id, &paid.model, "", started);
                (job_key(started, &paid.job_id), None, record)
            }
        };
        record.status = JobStatus::Completed;
        record.units = paid.units;
        record.micro_credits = paid.micro_credits;
        record.ended_unix_ms = Some(record.ended_unix_ms.unwrap_or(paid.issued_unix_ms));
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
        (&self.jobs, &self.job_index, &self.receipts, &self.hours)
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
        self.db.flush()?;
        self.remember(&record);
        Ok(record)
    }

    /// Import finished jobs in bulk (from an export or an older installation), with their
    /// hourly totals, flushed once at the end. Receipts are not imported: they belong to the
    /// chain, which only grows through [`Ledger::finish_job`].
    pub fn import_jobs(&self, records: &[JobRecord]) -> Result<()> {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
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
        self.jobs.apply_batch(jobs)?;
        self.job_index.apply_batch(index)?;
        *self.job_count.lock().unwrap_or_else(|e| e.into_inner()) = None;
        for (hour, totals) in hours {
            self.hours.insert(hour.to_be_bytes(), encode(&totals))?;
        }
        self.db.flush()?;
        drop(_write);
        self.reload_recent();
        Ok(())
    }

    /// The newest receipt stored.
    pub fn chain_head(&self) -> Result<Option<SignedReceipt>> {
        match self.receipts.last()? {
            Some((key, bytes)) => Ok(Some(decode(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// A receipt is accepted only with the pool's signature and as the next link of the chain.
    fn check_receipt(&self, receipt: &SignedReceipt, pool_key: &PublicKey) -> Result<()> {
        let bad = |reason: String| LedgerError::BadReceipt {
            job_id: receipt.receipt.job_id.clone(),
            sequence: receipt.receipt.sequence,
            reason,
        };
        receipt.verify(pool_key).map_err(|e| bad(e.to_string()))?;
        let head = self.chain_head()?;
        receipt
            .follows(head.as_ref())
            .map_err(|e| bad(e.to_string()))
    }

    /// Record a change of the node's state (a pause, a resume, and why) at `at_unix_ms`;
    /// flushed (changes are rare).
    pub fn record_activity<T: Serialize>(&self, at_unix_ms: u64, change: &T) -> Result<()> {
        let mut key = at_unix_ms.to_be_bytes().to_vec();
        key.extend(self.db.generate_id()?.to_be_bytes());
        self.activity.insert(key, encode(change))?;
        self.db.flush()?;
        Ok(())
    }

    /// The newest `n` recorded state changes, newest first (unreadable ones left out).
    pub fn recent_activity<T: DeserializeOwned>(&self, n: usize) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in self.activity.iter().rev() {
            if out.len() >= n {
                break;
            }
            let (key, bytes) = entry?;
            match decode(&key, &bytes) {
                Ok(change) => out.push(change),
                Err(error) => tracing::warn!(%error, "skipping a damaged activity record"),
            }
        }
        Ok(out)
    }

    /// Keep `record` (resource use over the minute before `at_unix_ms`) and forget records
    /// older than `keep_ms`. Not flushed: losing the last minutes in a crash costs nothing.
    pub fn record_telemetry<T: Serialize>(
        &self,
        at_unix_ms: u64,
        record: &T,
        keep_ms: u64,
    ) -> Result<()> {
        self.telemetry
            .insert(at_unix_ms.to_be_bytes(), encode(record))?;
        let cutoff = at_unix_ms.saturating_sub(keep_ms).to_be_bytes();
        for key in self.telemetry.range(..cutoff).keys() {
            self.telemetry.remove(key?)?;
        }
        Ok(())
    }

    /// The resource-use records from `from_unix_ms` up to `to_unix_ms`, oldest first
    /// (unreadable ones left out).
    pub fn telemetry_between<T: DeserializeOwned>(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
    ) -> Result<Vec<(u64, T)>> {
        let mut out = Vec::new();
        for entry in self
            .telemetry
            .range(from_unix_ms.to_be_bytes()..to_unix_ms.to_be_bytes())
        {
            let (key, bytes) = entry?;
            let at = u64::from_be_bytes(key.as_ref().try_into().map_err(|e| corrupt(&key, e))?);
            match decode(&key, &bytes) {
                Ok(record) => out.push((at, record)),
                Err(error) => tracing::warn!(%error, "skipping a damaged telemetry record"),
            }
        }
        Ok(out)
    }

    /// One job.
    pub fn job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let Some(key) = self.job_index.get(job_id)? else {
            return Ok(None);
        };
        match self.jobs.get(&key)? {
            Some(bytes) => Ok(Some(decode(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Refill the in-memory newest jobs from disk (damaged records are left out).
    fn reload_recent(&self) {
        let mut newest: std::collections::VecDeque<JobRecord> = self
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
        if let Some(slot) = recent.iter_mut().find(|r| r.job_id == record.job_id) {
            *slot = record.clone();
            return;
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
        self.jobs
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
        for key in self.jobs.iter().keys() {
            key?;
            count += 1;
        }
        *cached = Some(count);
        Ok(count)
    }

    /// A page of every job, newest first, walking from whichever end of the tree is nearer.
    fn all_jobs_page(&self, offset: usize, limit: usize) -> Result<(u64, Vec<JobRecord>)> {
        let total = self.job_count()?;
        let from_newest = offset as u64;
        let end = (from_newest + limit as u64).min(total);
        let decode_entry = |entry: sled::Result<(sled::IVec, sled::IVec)>| -> Result<JobRecord> {
            let (key, bytes) = entry?;
            decode(&key, &bytes)
        };
        let page = if from_newest <= total / 2 {
            self.jobs
                .iter()
                .rev()
                .skip(offset)
                .take(limit)
                .map(decode_entry)
                .collect::<Result<Vec<_>>>()?
        } else {
            // Rows `offset..end` counted from the newest are `total-end..total-offset` from
            // the oldest.
            let mut oldest_first = self
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
        // Keys in the id index map to time keys; newest first is time order reversed.
        let mut keys = Vec::new();
        for entry in self.job_index.scan_prefix(prefix.as_bytes()) {
            let (_, key) = entry?;
            keys.push(key);
        }
        keys.sort_unstable_by(|a, b| b.cmp(a));
        let total = keys.len() as u64;
        let mut page = Vec::new();
        for key in keys.into_iter().skip(offset).take(limit) {
            if let Some(bytes) = self.jobs.get(&key)? {
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
        self.jobs
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
        for entry in self.hours.range(from.to_be_bytes()..to.to_be_bytes()) {
            let (key, bytes) = entry?;
            sum.add(&decode::<Totals>(&key, &bytes)?);
        }
        Ok(sum)
    }

    /// Totals per hour in `[from, to)`: `(hour start in unix ms, totals)`, for charts.
    pub fn hourly(&self, from_unix_ms: u64, to_unix_ms: u64) -> Result<Vec<(u64, Totals)>> {
        let (from, to) = (from_unix_ms / MS_PER_HOUR, to_unix_ms.div_ceil(MS_PER_HOUR));
        self.hours
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

    /// Check every stored receipt: the pool's signature, and each one following the last.
    pub fn verify_chain(&self, pool_key: &PublicKey) -> Result<ChainReport> {
        let mut previous: Option<SignedReceipt> = None;
        let mut report = ChainReport {
            receipts: 0,
            micro_credits: 0,
        };
        for entry in self.receipts.iter() {
            let (key, bytes) = entry?;
            let receipt: SignedReceipt = decode(&key, &bytes)?;
            let bad = |reason: String| LedgerError::BadReceipt {
                job_id: receipt.receipt.job_id.clone(),
                sequence: receipt.receipt.sequence,
                reason,
            };
            receipt.verify(pool_key).map_err(|e| bad(e.to_string()))?;
            receipt
                .follows(previous.as_ref())
                .map_err(|e| bad(e.to_string()))?;
            report.receipts += 1;
            report.micro_credits = report
                .micro_credits
                .saturating_add(receipt.receipt.micro_credits);
            previous = Some(receipt);
        }
        Ok(report)
    }

    /// Every job as CSV, oldest first.
    pub fn export_csv(&self, out: &mut dyn Write) -> Result<u64> {
        writeln!(
            out,
            "job_id,model,task,status,started_unix_ms,ended_unix_ms,units,micro_credits,energy_wh,energy_estimated,receipt_sequence"
        )?;
        let mut rows = 0;
        for entry in self.jobs.iter() {
            let (key, bytes) = entry?;
            let r: JobRecord = decode(&key, &bytes)?;
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&r.job_id),
                csv_field(&r.model),
                csv_field(&r.task),
                serde_json::to_value(r.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.started_unix_ms,
                r.ended_unix_ms.map(|v| v.to_string()).unwrap_or_default(),
                r.units,
                r.micro_credits,
                r.energy_wh.map(|v| format!("{v:.6}")).unwrap_or_default(),
                r.energy_estimated,
                r.receipt
                    .as_ref()
                    .map(|s| s.receipt.sequence.to_string())
                    .unwrap_or_default()
            )?;
            rows += 1;
        }
        Ok(rows)
    }

    /// A setting, if set.
    pub fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.settings.get(key)? {
            Some(bytes) => Ok(Some(decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Store a setting durably.
    pub fn set_setting<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.settings.insert(key, encode(value))?;
        self.db.flush()?;
        Ok(())
    }
}

/// The totals one finished job adds to its hour.
fn hour_totals(record: &JobRecord) -> Option<Totals> {
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

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}
