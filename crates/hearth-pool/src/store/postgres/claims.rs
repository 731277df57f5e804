//! Claims made together: a process's nodes asking for work at the same moment are served by
//! one transaction, not one each.
//!
//! Each claim that runs alone walks the head of the line, where every concurrent claim has
//! just locked or taken a row: with hundreds of nodes asking at once, most of a claim's time
//! went to stepping over the others' rows. Here one task per process takes every claim
//! waiting when it turns to them: one alone goes through `claim_jobs` (one round trip); several
//! lock as many queued rows as they ask for together (`pick_jobs`, `FOR UPDATE SKIP LOCKED`),
//! share them out in line order by each node's own rules ([`Claim::may_take`]) and lease them
//! in one `UPDATE`. Rows nobody here may take are let go at commit.

use deadpool_postgres::Pool;

use super::batch::Batcher;
use super::jobs::{JOB_COLUMNS, job_from_row};
use super::{db_error, int8};
use crate::queue::job::{Claim, JobRow, JobState};
use crate::store::StoreError;

/// Most claims served by one transaction.
const MAX_CLAIMS: usize = 256;
/// Most rows one transaction locks.
const MAX_ROWS: usize = 2048;

/// A claim, owned, to wait for its turn.
struct Request {
    node_id: String,
    models: Vec<String>,
    max: usize,
    established: bool,
    lease_id: String,
    now_unix_ms: u64,
    expires_unix_ms: u64,
}

impl Request {
    fn claim(&self) -> Claim<'_> {
        Claim {
            node_id: &self.node_id,
            models: &self.models,
            max: self.max,
            established: self.established,
            lease_id: &self.lease_id,
            now_unix_ms: self.now_unix_ms,
            expires_unix_ms: self.expires_unix_ms,
        }
    }
}

/// Jobs as leased, with their versions.
type Leased = Vec<(JobRow, i64)>;

/// The process's claims, served in batches.
pub(super) struct Claims(Batcher<Request, Leased>);

impl Claims {
    pub(super) fn start(pool: Pool) -> Self {
        Self(Batcher::start(
            "claims jobs",
            MAX_CLAIMS,
            move |batch: Vec<Request>| {
                let pool = pool.clone();
                async move {
                    if let [one] = batch.as_slice() {
                        Ok(vec![claim_one(&pool, one).await?])
                    } else {
                        claim_together(&pool, &batch).await
                    }
                }
            },
        ))
    }

    /// `claim`'s jobs as leased, with their versions.
    pub(super) async fn claim(&self, claim: &Claim<'_>) -> Result<Leased, StoreError> {
        self.0
            .ask(Request {
                node_id: claim.node_id.to_owned(),
                models: claim.models.to_vec(),
                max: claim.max,
                established: claim.established,
                lease_id: claim.lease_id.to_owned(),
                now_unix_ms: claim.now_unix_ms,
                expires_unix_ms: claim.expires_unix_ms,
            })
            .await
    }
}

/// One claim alone: `claim_jobs` picks and leases in one statement.
async fn claim_one(pool: &Pool, request: &Request) -> Result<Leased, StoreError> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM claim_jobs($1, $2, $3, $4, $5, $6, $7)"
        ))
        .await
        .map_err(db_error)?;
    let rows = client
        .query(
            &statement,
            &[
                &request.models,
                &request.node_id,
                &request.established,
                &i32::try_from(request.max).unwrap_or(i32::MAX),
                &request.lease_id,
                &int8(request.now_unix_ms, "time")?,
                &int8(request.expires_unix_ms, "time")?,
            ],
        )
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| Ok((job_from_row(row)?, row.get(13))))
        .collect()
}

/// Several claims in one transaction: lock what they ask for together, share it out in line
/// order, lease it in one statement. One list of jobs per request, in order.
async fn claim_together(pool: &Pool, batch: &[Request]) -> Result<Vec<Leased>, StoreError> {
    let mut models: Vec<&str> = batch
        .iter()
        .flat_map(|r| r.models.iter().map(String::as_str))
        .collect();
    models.sort_unstable();
    models.dedup();
    let established = batch.iter().any(|r| r.established);
    let wanted = batch.iter().map(|r| r.max).sum::<usize>().min(MAX_ROWS);

    let mut client = pool.get().await.map_err(super::pool_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    let pick = tx
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM pick_jobs($1, $2, $3)"))
        .await
        .map_err(db_error)?;
    let picked = tx
        .query(
            &pick,
            &[
                &models,
                &established,
                &i32::try_from(wanted).unwrap_or(i32::MAX),
            ],
        )
        .await
        .map_err(db_error)?;
    let mut free: Vec<Option<(JobRow, i64)>> = picked
        .iter()
        .map(|row| Ok(Some((job_from_row(row)?, row.get::<_, i64>(13)))))
        .collect::<Result<_, StoreError>>()?;

    // Each request in turn takes the first rows it may run, up to what it asked for.
    let mut leased: Vec<Leased> = Vec::with_capacity(batch.len());
    let (mut ids, mut nodes, mut leases, mut expires, mut times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for request in batch {
        let claim = request.claim();
        let mut mine = Vec::new();
        for slot in free.iter_mut() {
            if mine.len() >= request.max {
                break;
            }
            if !slot.as_ref().is_some_and(|(job, _)| claim.may_take(job)) {
                continue;
            }
            let Some((mut job, version)) = slot.take() else {
                continue;
            };
            job.state = JobState::Leased {
                node_id: request.node_id.clone(),
                lease_id: request.lease_id.clone(),
                expires_unix_ms: request.expires_unix_ms,
            };
            job.leased_unix_ms = request.now_unix_ms;
            ids.push(job.id.clone());
            nodes.push(request.node_id.as_str());
            leases.push(request.lease_id.as_str());
            expires.push(int8(request.expires_unix_ms, "time")?);
            times.push(int8(request.now_unix_ms, "time")?);
            mine.push((job, version + 1));
        }
        leased.push(mine);
    }
    if !ids.is_empty() {
        let lease = tx
            .prepare_cached(
                "UPDATE jobs AS j SET state = 'leased', node_id = v.node, lease_id = v.lease,
                     lease_expires_unix_ms = v.expires, leased_unix_ms = v.leased,
                     version = j.version + 1
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[])
                      AS v(id, node, lease, expires, leased)
                 WHERE j.id = v.id",
            )
            .await
            .map_err(db_error)?;
        let updated = tx
            .execute(&lease, &[&ids, &nodes, &leases, &expires, &times])
            .await
            .map_err(db_error)?;
        if updated != ids.len() as u64 {
            // The rows were locked by this transaction: nothing else can have changed them.
            return Err(StoreError::Conflict(format!(
                "{} of {} locked jobs were leased",
                updated,
                ids.len()
            )));
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(leased)
}
