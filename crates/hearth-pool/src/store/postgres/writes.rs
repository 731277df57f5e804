//! Job changes written together: the edits a process makes at the same moment (results taken
//! for payment, jobs finished, leases extended) go to the database in one statement each for
//! the rows to write and the rows to delete, not one per job.
//!
//! An edit is decided by its caller on the row as read (or remembered); what comes here is the
//! new row and the version it was read at. Each row is written only if it is still at that
//! version, and its events are sent (`pg_notify`) in the same statement only if it was. Every
//! request hears whether its own row was written: two changes to one job in one batch are
//! told apart by their place in the batch, and at most one of them wins.

use deadpool_postgres::Pool;

use super::batch::Batcher;
use super::jobs::{JOB_COLUMNS, job_from_row};
use super::{CHANNEL, db_error, int8};
use crate::queue::job::{JobRow, JobState};
use crate::store::{StoreError, to_json};

/// Most changes written by one statement.
const MAX_WRITES: usize = 256;

/// Write the rows still at the version they were read at, and send their events; answers
/// with the tags of the rows written.
const WRITE_ROWS: &str = "WITH v AS (
        SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[], $4::text[], $5::text[],
            $6::text[], $7::int8[], $8::int4[], $9::text[], $10::bool[], $11::bool[],
            $12::int8[], $13::text[])
        AS v(tag, id, version, state, node_id, lease_id, expires, attempts, exclude,
             established_only, front, deadline, body)),
    written AS (
        UPDATE jobs AS j SET state = v.state, node_id = v.node_id, lease_id = v.lease_id,
            lease_expires_unix_ms = v.expires, attempts = v.attempts,
            exclude = ARRAY(SELECT jsonb_array_elements_text(v.exclude::jsonb)),
            established_only = v.established_only, front = v.front,
            place = CASE WHEN v.state = 'queued' THEN nextval('job_places') ELSE j.place END,
            deadline_unix_ms = v.deadline, body = v.body, version = j.version + 1
        FROM v WHERE j.id = v.id AND j.version = v.version
        RETURNING v.tag),
    told AS (
        SELECT pg_notify($14, e.payload) FROM unnest($15::int4[], $16::text[]) AS e(tag, payload)
        WHERE e.tag IN (SELECT tag FROM written))
    SELECT (SELECT array_agg(tag) FROM written), (SELECT count(*) FROM told)";

/// Delete the rows still at the version they were read at, and send their events; answers
/// with the tags of the rows deleted.
const DELETE_ROWS: &str = "WITH v AS (
        SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[]) AS v(tag, id, version)),
    gone AS (
        DELETE FROM jobs AS j USING v WHERE j.id = v.id AND j.version = v.version
        RETURNING v.tag),
    told AS (
        SELECT pg_notify($4, e.payload) FROM unnest($5::int4[], $6::text[]) AS e(tag, payload)
        WHERE e.tag IN (SELECT tag FROM gone))
    SELECT (SELECT array_agg(tag) FROM gone), (SELECT count(*) FROM told)";

/// One change to a job: its new row (or its removal), over the version it was read at.
pub(super) struct JobWrite {
    pub job: JobRow,
    pub read_version: i64,
    pub delete: bool,
    /// Its events, encoded; sent only if the change is written.
    pub payloads: Vec<String>,
}

/// The process's job changes, written in batches.
pub(super) struct Writes(Batcher<JobWrite, Option<JobRow>>);

impl Writes {
    pub(super) fn start(pool: Pool) -> Self {
        Self(Batcher::start("writes jobs", MAX_WRITES, move |writes| {
            let pool = pool.clone();
            async move { write_batch(&pool, writes).await }
        }))
    }

    /// Write `change` if its job is still at the version it was read at: the job as written,
    /// or `None` when it was not.
    pub(super) async fn write(&self, change: JobWrite) -> Result<Option<JobRow>, StoreError> {
        self.0.ask(change).await
    }
}

/// Finished jobs taken by their customers' processes (read and deleted), in batches.
pub(super) struct Takes(Batcher<String, Option<JobRow>>);

impl Takes {
    pub(super) fn start(pool: Pool) -> Self {
        Self(Batcher::start(
            "takes finished jobs",
            MAX_WRITES,
            move |ids| {
                let pool = pool.clone();
                async move { take_batch(&pool, ids).await }
            },
        ))
    }

    /// Job `job_id` as it was, deleted, if it is finished.
    pub(super) async fn take(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        self.0.ask(job_id.to_owned()).await
    }
}

/// Delete those of `ids` that are finished: each as it was, in order (`None`: not finished,
/// gone, or taken by an earlier request for the same id).
async fn take_batch(pool: &Pool, ids: Vec<String>) -> Result<Vec<Option<JobRow>>, StoreError> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let statement = client
        .prepare_cached(&format!(
            "DELETE FROM jobs WHERE id = ANY($1) AND state = 'finished' RETURNING {JOB_COLUMNS}"
        ))
        .await
        .map_err(db_error)?;
    let mut taken: std::collections::HashMap<String, JobRow> = client
        .query(&statement, &[&ids])
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| job_from_row(row).map(|job| (job.id.clone(), job)))
        .collect::<Result<_, StoreError>>()?;
    Ok(ids.iter().map(|id| taken.remove(id)).collect())
}

/// The rows of a batch to write, as columns (`tag`: each change's place in the batch).
#[derive(Default)]
struct PutColumns {
    tag: Vec<i32>,
    id: Vec<String>,
    version: Vec<i64>,
    state: Vec<&'static str>,
    node_id: Vec<Option<String>>,
    lease_id: Vec<Option<String>>,
    expires: Vec<Option<i64>>,
    attempts: Vec<i32>,
    /// Each job's excluded nodes as a JSON array (arrays of arrays must be rectangular).
    exclude: Vec<String>,
    established_only: Vec<bool>,
    front: Vec<bool>,
    deadline: Vec<i64>,
    body: Vec<String>,
}

/// Events of a batch: the tag of the change each belongs to, and the payload.
#[derive(Default)]
struct EventColumns {
    tag: Vec<i32>,
    payload: Vec<String>,
}

/// Write `writes` in at most two statements; each job as written (`None`: not written), in
/// order.
async fn write_batch(
    pool: &Pool,
    writes: Vec<JobWrite>,
) -> Result<Vec<Option<JobRow>>, StoreError> {
    let mut puts = PutColumns::default();
    let (mut put_events, mut delete_events) = (EventColumns::default(), EventColumns::default());
    let (mut delete_tags, mut delete_ids, mut delete_versions) =
        (Vec::new(), Vec::new(), Vec::new());
    for (tag, change) in writes.iter().enumerate() {
        let tag = i32::try_from(tag).unwrap_or(i32::MAX);
        let events = if change.delete {
            delete_tags.push(tag);
            delete_ids.push(change.job.id.as_str());
            delete_versions.push(change.read_version);
            &mut delete_events
        } else {
            puts.push(tag, change)?;
            &mut put_events
        };
        for payload in &change.payloads {
            events.tag.push(tag);
            events.payload.push(payload.clone());
        }
    }
    let client = pool.get().await.map_err(super::pool_error)?;
    let mut written = vec![false; writes.len()];
    if !puts.id.is_empty() {
        run_and_mark(
            &client,
            WRITE_ROWS,
            &[
                &puts.tag,
                &puts.id,
                &puts.version,
                &puts.state,
                &puts.node_id,
                &puts.lease_id,
                &puts.expires,
                &puts.attempts,
                &puts.exclude,
                &puts.established_only,
                &puts.front,
                &puts.deadline,
                &puts.body,
                &CHANNEL,
                &put_events.tag,
                &put_events.payload,
            ],
            &mut written,
        )
        .await?;
    }
    if !delete_ids.is_empty() {
        run_and_mark(
            &client,
            DELETE_ROWS,
            &[
                &delete_tags,
                &delete_ids,
                &delete_versions,
                &CHANNEL,
                &delete_events.tag,
                &delete_events.payload,
            ],
            &mut written,
        )
        .await?;
    }
    Ok(writes
        .into_iter()
        .zip(written)
        .map(|(change, written)| written.then_some(change.job))
        .collect())
}

/// Run one of the batch's statements (it answers with the tags of the rows it wrote) and
/// mark those changes as written.
async fn run_and_mark(
    client: &deadpool_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    written: &mut [bool],
) -> Result<(), StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(db_error)?;
    let row = client
        .query_one(&statement, params)
        .await
        .map_err(db_error)?;
    let tags: Option<Vec<i32>> = row.get(0);
    for tag in tags.unwrap_or_default() {
        if let Some(slot) = usize::try_from(tag).ok().and_then(|t| written.get_mut(t)) {
            *slot = true;
        }
    }
    Ok(())
}

impl PutColumns {
    fn push(&mut self, tag: i32, change: &JobWrite) -> Result<(), StoreError> {
        let job = &change.job;
        let (node_id, lease_id, expires) = match &job.state {
            JobState::Leased {
                node_id,
                lease_id,
                expires_unix_ms,
            }
            | JobState::Paying {
                node_id,
                lease_id,
                expires_unix_ms,
            } => (
                Some(node_id.clone()),
                Some(lease_id.clone()),
                Some(int8(*expires_unix_ms, "time")?),
            ),
            JobState::Queued | JobState::Finished => (None, None, None),
        };
        self.tag.push(tag);
        self.id.push(job.id.clone());
        self.version.push(change.read_version);
        self.state.push(job.state.name());
        self.node_id.push(node_id);
        self.lease_id.push(lease_id);
        self.expires.push(expires);
        self.attempts
            .push(i32::try_from(job.attempts).unwrap_or(i32::MAX));
        self.exclude.push(
            String::from_utf8(to_json(&job.exclude)?)
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
        );
        self.established_only.push(job.established_only);
        self.front.push(job.front);
        self.deadline.push(int8(job.deadline_unix_ms, "deadline")?);
        self.body.push(
            String::from_utf8(to_json(&job.body)?)
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
        );
        Ok(())
    }
}
