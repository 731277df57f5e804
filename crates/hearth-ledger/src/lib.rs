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
//! was told about and never counts one twice. Beside the database, `chain-mark.json` names the
//! newest receipt made durable, so a log tail the disk damaged (sled drops it silently) is
//! found: [`Ledger::lost_receipts`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

mod export;
mod history;
mod jobs;
mod receipts;
use std::sync::Mutex;

pub use receipts::{CHAIN_MARK_FILE, LostReceipts};

use hearth_protocol::SignedReceipt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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
    /// The chain mark beside the database could not be written.
    #[error("recording the newest receipt beside the ledger: {0}")]
    ChainMark(std::io::Error),
    /// A moment while the database is opened again after a storage error.
    #[error("the ledger is being reopened after a storage error; try again")]
    Reopening,
}

impl LedgerError {
    /// The database itself is damaged (sled found corrupt data, or a record this code wrote
    /// no longer reads): opening it again will not help, unlike a full disk or a held lock.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            LedgerError::Storage(sled::Error::Corruption { .. } | sled::Error::ReportableBug(_))
                | LedgerError::Corrupt { .. }
        )
    }

    /// The operating system's error when the disk refused a write or read (full, read-only,
    /// failing): the node pauses for it and tries again. `None` for every other error.
    pub fn storage_fault(&self) -> Option<&std::io::Error> {
        match self {
            LedgerError::Storage(sled::Error::Io(error))
            | LedgerError::Export(error)
            | LedgerError::ChainMark(error) => Some(error),
            _ => None,
        }
    }
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
    /// Where its database lives, to open it again after a storage error.
    dir: PathBuf,
    /// The open database; `None` only while [`Ledger::reopen`] swaps it.
    trees: RwLock<Option<Arc<Trees>>>,
    /// Serialises writers: each reads totals and chain heads it then updates.
    write: Mutex<()>,
    /// The newest [`RECENT_CACHED`] jobs by start time, oldest first: the overview and tray
    /// ask for them constantly, and a reverse scan of a large tree is slow.
    recent: Mutex<std::collections::VecDeque<JobRecord>>,
    /// How many jobs there are, once counted (a count reads every key); kept current by
    /// [`Ledger::start_job`], forgotten by the rarer writes that may add jobs in bulk.
    job_count: Mutex<Option<u64>>,
    /// The sequence the chain mark names, read from its file at open and kept current by
    /// each mark, so a receipt costs no read of the file.
    chain_marked: Mutex<Option<u64>>,
}

/// The ledger's sled database and its trees.
#[derive(Debug)]
struct Trees {
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
}

impl Trees {
    fn open(dir: &Path) -> Result<Self> {
        let db = hearth_sled::open(dir)?;
        let tree = |name: &str| db.open_tree(name);
        let trees = (|| {
            Ok::<_, sled::Error>([
                tree("jobs")?,
                tree("job_index")?,
                tree("receipts")?,
                tree("hours")?,
                tree("settings")?,
                tree("activity")?,
                tree("telemetry")?,
                tree("meta")?,
            ])
        })();
        match trees {
            Ok(
                [
                    jobs,
                    job_index,
                    receipts,
                    hours,
                    settings,
                    activity,
                    telemetry,
                    meta,
                ],
            ) => Ok(Self {
                db,
                jobs,
                job_index,
                receipts,
                hours,
                settings,
                activity,
                telemetry,
                meta,
            }),
            Err(error) => {
                hearth_sled::close(db);
                Err(hearth_sled::explain(dir, error).into())
            }
        }
    }
}

impl Drop for Ledger {
    /// Closes the database without letting a failing disk panic the process.
    fn drop(&mut self) {
        self.close();
    }
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

impl Ledger {
    /// Open (or create) the ledger in `dir`, migrating an older layout. Jobs left running by a
    /// previous run are marked [`JobStatus::Interrupted`].
    pub fn open(dir: &Path) -> Result<Self> {
        let ledger = Self {
            trees: RwLock::new(Some(Arc::new(Trees::open(dir)?))),
            dir: dir.to_owned(),
            write: Mutex::new(()),
            recent: Mutex::new(std::collections::VecDeque::new()),
            job_count: Mutex::new(None),
            chain_marked: Mutex::new(receipts::read_chain_mark(dir)),
        };
        // The first writes happen here: a full or read-only disk is told as such.
        let explained = |error: LedgerError| match error {
            LedgerError::Storage(error) => LedgerError::Storage(hearth_sled::explain(dir, error)),
            other => other,
        };
        if let Err(error) = ledger.migrate().and_then(|()| ledger.mark_interrupted()) {
            ledger.close();
            return Err(explained(error));
        }
        ledger.reload_recent();
        Ok(ledger)
    }

    /// The open database.
    fn t(&self) -> Result<Arc<Trees>> {
        self.trees
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(LedgerError::Reopening)
    }

    /// Open the database again, after a write failed (a full disk, an I/O error). sled keeps
    /// a failed write's error for the life of the open database and refuses every later write
    /// with it, even once the disk has room; only a fresh open clears it. What was flushed
    /// before the failure is all there; what was not had not been acknowledged to anyone.
    pub fn reopen(&self) -> Result<()> {
        let _writers = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut trees = self.trees.write().unwrap_or_else(|e| e.into_inner());
        // The old handle holds the database's lock: it goes first (readers holding a clone
        // finish within the lock wait of `hearth_sled::open`).
        if let Some(old) = trees.take() {
            hearth_sled::close(old);
        }
        *trees = Some(Arc::new(Trees::open(&self.dir)?));
        drop(trees);
        *self.job_count.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.reload_recent();
        Ok(())
    }

    /// Close the database now (a failed open), whatever the disk does meanwhile.
    fn close(&self) {
        let trees = self.trees.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(trees) = trees {
            hearth_sled::close(trees);
        }
    }

    /// Write and flush a marker: whether the ledger can store what comes next (the test a
    /// node paused by a storage error makes before it works again).
    pub fn probe_write(&self) -> Result<()> {
        self.set_setting("storage_probe_unix_ms", &hearth_protocol::now_unix_ms())
    }

    /// The schema version stored in the database (0: written before versions existed).
    pub fn schema_version(&self) -> Result<u32> {
        Ok(match self.t()?.meta.get("schema_version")? {
            None => 0,
            Some(bytes) => decode(b"schema_version", &bytes)?,
        })
    }

    fn migrate(&self) -> Result<()> {
        let t = self.t()?;
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(LedgerError::TooNew { found });
        }
        if found == 0 {
            // Version 0 kept jobs in a `jobs_v0` tree keyed by job id alone, with no index
            // and no hourly totals. Re-key them by time and rebuild the totals.
            let old = t.db.open_tree("jobs_v0")?;
            for entry in old.iter() {
                let (key, bytes) = entry?;
                let record: JobRecord = decode(&key, &bytes)?;
                let time_key = job_key(record.started_unix_ms, &record.job_id);
                t.jobs.insert(time_key.as_slice(), bytes.as_ref())?;
                t.job_index.insert(record.job_id.as_bytes(), time_key)?;
                if let Some(hour_delta) = jobs::hour_totals(&record) {
                    let hour = record.ended_unix_ms.unwrap_or(record.started_unix_ms) / MS_PER_HOUR;
                    let mut totals = self.hour(hour)?;
                    totals.add(&hour_delta);
                    t.hours.insert(hour.to_be_bytes(), encode(&totals))?;
                }
            }
            t.db.drop_tree("jobs_v0")?;
        }
        t.meta.insert("schema_version", encode(&SCHEMA_VERSION))?;
        self.flush()?;
        Ok(())
    }

    /// The stored totals of one unix hour (zero when nothing ended in it).
    fn hour(&self, hour: u64) -> Result<Totals> {
        match self.t()?.hours.get(hour.to_be_bytes())? {
            Some(bytes) => decode(b"hour", &bytes),
            None => Ok(Totals::default()),
        }
    }

    /// Jobs still `Running` from a previous run become `Interrupted`. A damaged record is
    /// left as it is (reads of it report it), so one bad record never locks the user out.
    fn mark_interrupted(&self) -> Result<()> {
        let t = self.t()?;
        let mut changed = false;
        for entry in t.jobs.iter() {
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
                t.jobs.insert(key, encode(&record))?;
                changed = true;
            }
        }
        if changed {
            self.flush()?;
        }
        Ok(())
    }

    /// A setting, if set.
    pub fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.t()?.settings.get(key)? {
            Some(bytes) => Ok(Some(decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Store a setting durably.
    pub fn set_setting<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.t()?.settings.insert(key, encode(value))?;
        self.flush()?;
        Ok(())
    }
}
