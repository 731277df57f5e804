//! The job queue in PostgreSQL: the `jobs` table and its events.
//!
//! A claim takes queued rows in line order with `FOR UPDATE SKIP LOCKED`, so concurrent claims
//! from any number of processes never take the same job and never wait for each other. Every
//! other change reads the row and writes it back only if nobody changed it meanwhile (its
//! `version`), in one statement that also sends the change's events with `pg_notify`: two round
//! trips, no explicit transaction; a change that lost the race is made again on the new row.
//! One connection per process `LISTEN`s and reconnects by itself.
//!
//! A process remembers the jobs it leased or changed last (with their versions), so that the
//! next change it makes to one of them is one round trip, not two: a write over a version
//! that moved on meanwhile fails and is made again on the row as read. Only writes are made
//! from a remembered row; an edit that would keep the job as it is looks at the database.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::NoTls;

use super::writes::{JobWrite, Takes, Writes as JobWrites};
use super::{CHANNEL, EVENT_BUFFER, db_error, int8, uint};
use crate::queue::job::{Claim, JobCounts, JobEdit, JobRow, JobState, QueueEvent, Write};
use crate::store::{StoreError, from_json, to_json};

/// The columns of a job, in [`job_from_row`]'s order (its `version` after them).
pub(super) const JOB_COLUMNS: &str = "id, model, state, node_id, lease_id, lease_expires_unix_ms, attempts, \
     exclude, established_only, front, deadline_unix_ms, leased_unix_ms, body, version";

/// Times an edit is made again after losing a race for its row before giving up.
const EDIT_TRIES: usize = 16;
/// Most jobs remembered as last written (a bound for jobs another process took over).
const REMEMBERED_JOBS: usize = 65_536;

/// Jobs this process wrote last, with the version they were written at.
#[derive(Default)]
struct Remembered(std::sync::Mutex<std::collections::HashMap<String, (JobRow, i64)>>);

impl Remembered {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (JobRow, i64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember `job` at `version` while it is leased or being paid (the jobs a process
    /// changes again soon); forget it otherwise.
    fn keep(&self, job: &JobRow, version: i64) {
        let mut jobs = self.lock();
        match job.state {
            JobState::Leased { .. } | JobState::Paying { .. } => {
                if jobs.len() >= REMEMBERED_JOBS {
                    jobs.clear();
                }
                jobs.insert(job.id.clone(), (job.clone(), version));
            }
            JobState::Queued | JobState::Finished => {
                jobs.remove(&job.id);
            }
        }
    }

    fn take(&self, job_id: &str) -> Option<(JobRow, i64)> {
        self.lock().remove(job_id)
    }
}

/// The job queue's half of [`super::PgStore`].
pub(super) struct PgJobs {
    pool: Pool,
    /// Where the listening connection connects.
    config: tokio_postgres::Config,
    events: tokio::sync::broadcast::Sender<QueueEvent>,
    /// The task that listens, started with the first [`PgJobs::events`].
    listener: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
    remembered: Remembered,
    claims: super::claims::Claims,
    writes: JobWrites,
    takes: Takes,
}

impl Drop for PgJobs {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

impl PgJobs {
    pub(super) fn new(pool: Pool, config: tokio_postgres::Config) -> Self {
        Self {
            claims: super::claims::Claims::start(pool.clone()),
            writes: JobWrites::start(pool.clone()),
            takes: Takes::start(pool.clone()),
            pool,
            config,
            events: tokio::sync::broadcast::channel(EVENT_BUFFER).0,
            listener: std::sync::OnceLock::new(),
            remembered: Remembered::default(),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(super::pool_error)
    }

    pub(super) async fn insert_jobs(
        &self,
        jobs: &[JobRow],
        events: &[QueueEvent],
    ) -> Result<(), StoreError> {
        let mut columns = JobColumns::default();
        for job in jobs {
            columns.push(job)?;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO jobs (id, model, state, attempts, established_only, front, deadline_unix_ms, body)
                 SELECT id, model, 'queued', 0, false, false, deadline, body
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])
                      AS j(id, model, deadline, body)",
            )
            .await
            .map_err(db_error)?;
        tx.execute(
            &insert,
            &[
                &columns.id,
                &columns.model,
                &columns.deadline,
                &columns.body,
            ],
        )
        .await
        .map_err(db_error)?;
        notify(&tx, events).await?;
        tx.commit().await.map_err(db_error)
    }

    pub(super) async fn claim_jobs(&self, claim: &Claim<'_>) -> Result<Vec<JobRow>, StoreError> {
        let leased = self.claims.claim(claim).await?;
        Ok(leased
            .into_iter()
            .map(|(job, version)| {
                self.remembered.keep(&job, version);
                job
            })
            .collect())
    }

    pub(super) async fn edit_job(
        &self,
        job_id: &str,
        edit: JobEdit<'_>,
    ) -> Result<bool, StoreError> {
        let mut remembered = self.remembered.take(job_id);
        for _ in 0..EDIT_TRIES {
            let from_memory = remembered.is_some();
            let (mut job, version) = match remembered.take() {
                Some(job) => job,
                None => match self.job_and_version(job_id).await? {
                    Some(job) => job,
                    None => return Ok(false),
                },
            };
            let done = edit(&mut job);
            let delete = match done.write {
                // What a remembered row says may be out of date: look again before keeping.
                Write::Keep if from_memory => continue,
                Write::Keep => {
                    if !done.events.is_empty() {
                        self.publish(&done.events).await?;
                    }
                    return Ok(true);
                }
                Write::Put => false,
                Write::Delete => true,
            };
            // Written only over the version read; the events go with the write.
            let change = JobWrite {
                job,
                read_version: version,
                delete,
                payloads: done.events.iter().map(QueueEvent::encode).collect(),
            };
            if let Some(written) = self.writes.write(change).await? {
                if !delete {
                    self.remembered.keep(&written, version + 1);
                }
                return Ok(true);
            }
            // Another process changed the job since it was read: look again.
        }
        Err(StoreError::Unavailable(format!(
            "job {job_id} kept changing under {EDIT_TRIES} tries to edit it"
        )))
    }

    /// Job `job_id` as stored, with its version.
    async fn job_and_version(&self, job_id: &str) -> Result<Option<(JobRow, i64)>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .await
            .map_err(db_error)?;
        client
            .query_opt(&statement, &[&job_id])
            .await
            .map_err(db_error)?
            .map(|row| Ok((job_from_row(&row)?, row.get(13))))
            .transpose()
    }

    pub(super) async fn job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        Ok(self.job_and_version(job_id).await?.map(|(job, _)| job))
    }

    pub(super) async fn take_finished_job(
        &self,
        job_id: &str,
    ) -> Result<Option<JobRow>, StoreError> {
        self.remembered.take(job_id);
        self.takes.take(job_id).await
    }

    pub(super) async fn expired_leases(
        &self,
        now_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id FROM jobs WHERE state IN ('leased', 'paying') AND lease_expires_unix_ms <= $1
                 ORDER BY lease_expires_unix_ms LIMIT $2",
            )
            .await
            .map_err(db_error)?;
        Ok(client
            .query(
                &statement,
                &[&int8(now_unix_ms, "time")?, &int8(limit as u64, "limit")?],
            )
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    pub(super) async fn next_lease_expiry(&self) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT min(lease_expires_unix_ms) FROM jobs WHERE state IN ('leased', 'paying')",
            )
            .await
            .map_err(db_error)?;
        let row = client.query_one(&statement, &[]).await.map_err(db_error)?;
        row.get::<_, Option<i64>>(0)
            .map(|t| uint(t, "lease expiry"))
            .transpose()
    }

    pub(super) async fn jobs_leased_to(&self, node_id: &str) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT id FROM jobs WHERE state = 'leased' AND node_id = $1")
            .await
            .map_err(db_error)?;
        Ok(client
            .query(&statement, &[&node_id])
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    pub(super) async fn purge_jobs(&self, before_unix_ms: u64) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let purged = client
            .execute(
                "DELETE FROM jobs WHERE deadline_unix_ms < $1 AND state IN ('queued', 'finished')",
                &[&int8(before_unix_ms, "time")?],
            )
            .await
            .map_err(db_error)?;
        Ok(purged as usize)
    }

    pub(super) async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT state, count(*) FROM jobs GROUP BY state", &[])
            .await
            .map_err(db_error)?;
        let mut counts = JobCounts::default();
        for row in rows {
            let n = usize::try_from(row.get::<_, i64>(1)).unwrap_or(0);
            match row.get::<_, &str>(0) {
                "queued" => counts.queued += n,
                "finished" => counts.finished += n,
                _ => counts.leased += n,
            }
        }
        Ok(counts)
    }

    pub(super) async fn publish(&self, events: &[QueueEvent]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        notify(&tx, events).await?;
        tx.commit().await.map_err(db_error)
    }

    pub(super) fn events(&self) -> tokio::sync::broadcast::Receiver<QueueEvent> {
        let receiver = self.events.subscribe();
        self.listener
            .get_or_init(|| tokio::spawn(listen(self.config.clone(), self.events.clone())));
        receiver
    }
}

/// Listen on [`CHANNEL`] and pass each event on to `events`, for as long as the store lives;
/// a lost connection is made again (backing off up to 5 s) and followed by
/// [`QueueEvent::Resync`], since events sent meanwhile were missed.
async fn listen(
    config: tokio_postgres::Config,
    events: tokio::sync::broadcast::Sender<QueueEvent>,
) {
    use futures_util::StreamExt;
    const FIRST_RETRY: Duration = Duration::from_millis(100);
    let mut retry = FIRST_RETRY;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (payloads, mut incoming) = tokio::sync::mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                if payloads.send(n.payload().to_owned()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "the database's event connection broke");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        tracing::debug!("listening for job events");
                        retry = FIRST_RETRY;
                        // Whatever was sent before this connection listened is looked at again.
                        let _ = events.send(QueueEvent::Resync);
                        while let Some(payload) = incoming.recv().await {
                            match QueueEvent::decode(&payload) {
                                Some(event) => {
                                    let _ = events.send(event);
                                }
                                None => tracing::debug!(%payload, "unknown job event ignored"),
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not listen for job events"),
                }
                driver.abort();
                let _ = events.send(QueueEvent::Resync);
            }
            Err(error) => {
                tracing::warn!(%error, retry_ms = retry.as_millis() as u64, "cannot reach the database for job events");
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(5));
    }
}

/// A job read back from [`JOB_COLUMNS`].
pub(super) fn job_from_row(row: &tokio_postgres::Row) -> Result<JobRow, StoreError> {
    let state: &str = row.get(2);
    let node_id: Option<String> = row.get(3);
    let lease_id: Option<String> = row.get(4);
    let expires: Option<i64> = row.get(5);
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "job",
        detail,
    };
    let state = match (state, node_id, lease_id) {
        ("queued", _, _) => JobState::Queued,
        ("finished", _, _) => JobState::Finished,
        ("leased", Some(node_id), Some(lease_id)) => JobState::Leased {
            node_id,
            lease_id,
            expires_unix_ms: uint(expires.unwrap_or(0), "lease expiry")?,
        },
        ("paying", Some(node_id), Some(lease_id)) => JobState::Paying {
            node_id,
            lease_id,
            expires_unix_ms: uint(expires.unwrap_or(0), "payment expiry")?,
        },
        (other, _, _) => return Err(corrupt(format!("state {other} without its lease"))),
    };
    Ok(JobRow {
        id: row.get(0),
        model: row.get(1),
        state,
        attempts: u32::try_from(row.get::<_, i32>(6))
            .map_err(|_| corrupt("negative attempts".into()))?,
        exclude: row.get(7),
        established_only: row.get(8),
        front: row.get(9),
        deadline_unix_ms: uint(row.get(10), "deadline")?,
        leased_unix_ms: uint(row.get(11), "lease time")?,
        body: from_json(row.get::<_, &str>(12).as_bytes(), "job")?,
    })
}

/// A job's body as stored.
fn body_text(job: &JobRow) -> Result<String, StoreError> {
    String::from_utf8(to_json(&job.body)?).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Send `events` to every process when the transaction `tx` commits.
async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[QueueEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = events.iter().map(QueueEvent::encode).collect();
    let statement = tx
        .prepare_cached("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .await
        .map_err(db_error)?;
    tx.execute(&statement, &[&CHANNEL, &payloads])
        .await
        .map_err(db_error)?;
    Ok(())
}

/// New jobs as columns, for one `INSERT … SELECT FROM unnest(…)`.
#[derive(Default)]
struct JobColumns {
    id: Vec<String>,
    model: Vec<String>,
    deadline: Vec<i64>,
    body: Vec<String>,
}

impl JobColumns {
    fn push(&mut self, job: &JobRow) -> Result<(), StoreError> {
        self.id.push(job.id.clone());
        self.model.push(job.model.clone());
        self.deadline.push(int8(job.deadline_unix_ms, "deadline")?);
        self.body.push(body_text(job)?);
        Ok(())
    }
}
