//! [`PoolStore`] in PostgreSQL, shared by any number of pool processes.
//!
//! The database keeps the rules that must hold across processes: a payment locks its node's
//! chain row (`SELECT … FOR UPDATE`) and moves the chain end only from where it read it, one
//! receipt per node and sequence (so a chain cannot fork), one receipt per job and node (so a
//! job is not paid twice). Only plain SQL that PostgreSQL-compatible distributed databases
//! also offer is used here: `ON CONFLICT`, `FOR UPDATE`, arrays through `unnest`.
//!
//! The job queue and its events are in [`jobs`].

mod batch;
mod claims;
mod jobs;
mod receipts;
mod writes;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use hearth_protocol::{KeyPair, SignedReceipt};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::{NodeSession, Payment, PoolStore, StoreError, UsageCharge, from_json, to_json};
use crate::accounts::{CustomerKey, Usage};
use crate::queue::job::{Claim, JobCounts, JobEdit, JobRow, QueueEvent};
use crate::queue::now_unix_ms;
use crate::reputation::NodeRecord;
use jobs::PgJobs;

/// The schema's versions, oldest first: each is applied once, in its own transaction, by
/// `hearth-pool migrate` or at start.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "durable state: chains, receipts, records, keys, usage",
        include_str!("../migrations/0001_durable_state.sql"),
    ),
    (
        2,
        "the job queue and node sessions",
        include_str!("../migrations/0002_queue_and_sessions.sql"),
    ),
    (
        3,
        "the job queue's upkeep: vacuumed often, leases out of the deadline index",
        include_str!("../migrations/0003_queue_upkeep.sql"),
    ),
];

/// The channel jobs' events travel on.
const CHANNEL: &str = "hearth_jobs";
/// Events buffered for a slow listener before it is told to resync (which makes it read every
/// job it waits on: costly under load, so the buffer holds some seconds of a busy network).
const EVENT_BUFFER: usize = 65_536;

/// How long a request waits for a free connection, and a new connection for the server.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
        ),
        Some(code) if *code == SqlState::UNDEFINED_TABLE => StoreError::Schema(format!(
            "{e}; run `hearth-pool migrate` (or start the pool, which migrates)"
        )),
        _ => StoreError::Unavailable(match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        }),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// A count or amount as PostgreSQL's `bigint`.
fn int8(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{what} {value} is too large")))
}

/// A `bigint` read back as the unsigned value it was stored from.
fn uint(value: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("negative: {value}"),
    })
}

/// [`PoolStore`] in PostgreSQL, through a pool of connections that replaces broken ones by
/// itself (a restarted server is reconnected to on the next request).
pub struct PgStore {
    pool: Pool,
    /// The job queue and its events.
    jobs: PgJobs,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish()
    }
}

/// How many of the store's connections are open and busy, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionUse {
    pub open: usize,
    pub idle: usize,
    pub max: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user@host:port/db`) with up to
    /// `max_connections` connections; the first one is opened now, to fail early.
    pub async fn connect(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("database URL: {e}")))?;
        config.connect_timeout(CONNECTION_WAIT);
        if config.get_application_name().is_none() {
            config.application_name("hearth-pool");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .wait_timeout(Some(CONNECTION_WAIT))
            .create_timeout(Some(CONNECTION_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let store = Self {
            jobs: PgJobs::new(pool.clone(), config),
            pool,
        };
        drop(store.client().await?);
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// The connections' use now.
    pub fn connection_use(&self) -> ConnectionUse {
        let status = self.pool.status();
        ConnectionUse {
            open: status.size,
            idle: status.available,
            max: status.max_size,
            waiting: status.waiting,
        }
    }

    /// The schema version the database is at (0: empty).
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        version_on(&client).await
    }

    /// Bring the schema up to date; returns the versions applied now. Safe from several
    /// processes at once: each migration is applied by whichever claims its version first,
    /// the others wait for it and skip. A database newer than this program is refused.
    pub async fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let mut client = self.client().await?;
        let create = "CREATE TABLE IF NOT EXISTS hearth_schema (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_unix_ms bigint NOT NULL)";
        // Two processes creating it at once: one of them is told it exists after all.
        if let Err(error) = client.batch_execute(create).await {
            tracing::debug!(%error, "creating the schema table raced; trying again");
            client.batch_execute(create).await.map_err(db_error)?;
        }
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        let current = version_on(&client).await?;
        if current > newest {
            return Err(StoreError::Schema(format!(
                "the database is at version {current}, newer than this hearth-pool knows ({newest}); upgrade hearth-pool"
            )));
        }
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            let tx = client.transaction().await.map_err(db_error)?;
            let claimed = tx
                .execute(
                    "INSERT INTO hearth_schema (version, name, applied_unix_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (version) DO NOTHING",
                    &[version, name, &int8(now_unix_ms(), "time")?],
                )
                .await
                .map_err(db_error)?;
            if claimed == 0 {
                continue;
            }
            tx.batch_execute(sql).await.map_err(|e| {
                StoreError::Schema(format!("migration {version} ({name}) failed: {e}"))
            })?;
            tx.commit().await.map_err(db_error)?;
            tracing::info!(version, name, "database migrated");
            applied.push(*version);
        }
        Ok(applied)
    }
}

/// The schema version on `client`'s database (0: empty).
async fn version_on(client: &tokio_postgres::Client) -> Result<i32, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('hearth_schema') IS NOT NULL", &[])
        .await
        .map_err(db_error)?
        .get::<_, bool>(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM hearth_schema", &[])
        .await
        .map_err(db_error)?;
    Ok(row.get(0))
}

#[async_trait]
impl PoolStore for PgStore {
    async fn append_receipts(
        &self,
        payments: &[Payment],
        charges: &[UsageCharge],
        key: &KeyPair,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        receipts::append_receipts(self, payments, charges, key).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        // A committed transaction is durable already.
        Ok(())
    }

    async fn chain_head(&self, node_id: &str) -> Result<Option<SignedReceipt>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT r.signed FROM node_chains c
                 JOIN receipts r ON r.node_id = c.node_id AND r.sequence = c.next_sequence - 1
                 WHERE c.node_id = $1",
            )
            .await
            .map_err(db_error)?;
        client
            .query_opt(&statement, &[&node_id])
            .await
            .map_err(db_error)?
            .map(|row| from_json(row.get::<_, &str>(0).as_bytes(), "receipt"))
            .transpose()
    }

    async fn receipt_for_job(
        &self,
        job_id: &str,
        node_id: &str,
    ) -> Result<Option<SignedReceipt>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT signed FROM receipts WHERE job_id = $1 AND node_id = $2")
            .await
            .map_err(db_error)?;
        client
            .query_opt(&statement, &[&job_id, &node_id])
            .await
            .map_err(db_error)?
            .map(|row| from_json(row.get::<_, &str>(0).as_bytes(), "receipt"))
            .transpose()
    }

    async fn receipts_after(
        &self,
        node_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        let after = match after {
            Some(a) => int8(a, "sequence")?,
            None => -1,
        };
        let limit = int8(limit as u64, "limit")?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT signed FROM receipts WHERE node_id = $1 AND sequence > $2
                 ORDER BY sequence LIMIT $3",
            )
            .await
            .map_err(db_error)?;
        client
            .query(&statement, &[&node_id, &after, &limit])
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| from_json(row.get::<_, &str>(0).as_bytes(), "receipt"))
            .collect()
    }

    async fn balances(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT node_id, balance_micro_credits FROM node_chains ORDER BY node_id",
                &[],
            )
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| Ok((row.get(0), uint(row.get(1), "balance")?)))
            .collect()
    }

    async fn pool_secret(&self, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO pool_settings (name, value) VALUES ('receipt_key', $1)
                 ON CONFLICT (name) DO NOTHING",
                &[&&fresh[..]],
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_one(
                "SELECT value FROM pool_settings WHERE name = 'receipt_key'",
                &[],
            )
            .await
            .map_err(db_error)?;
        <[u8; 32]>::try_from(row.get::<_, &[u8]>(0)).map_err(|_| StoreError::Corrupt {
            what: "pool key",
            detail: "not 32 bytes".into(),
        })
    }

    async fn node_record(&self, node_id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT record FROM node_records WHERE node_id = $1")
            .await
            .map_err(db_error)?;
        client
            .query_opt(&statement, &[&node_id])
            .await
            .map_err(db_error)?
            .map(|row| from_json(row.get::<_, &str>(0).as_bytes(), "node record"))
            .transpose()
    }

    async fn put_node_record(
        &self,
        node_id: &str,
        record: &NodeRecord,
        _durable: bool,
    ) -> Result<(), StoreError> {
        let text =
            String::from_utf8(to_json(record)?).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO node_records (node_id, record) VALUES ($1, $2)
                 ON CONFLICT (node_id) DO UPDATE SET record = EXCLUDED.record",
            )
            .await
            .map_err(db_error)?;
        client
            .execute(&statement, &[&node_id, &text])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn node_records(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT node_id, record FROM node_records ORDER BY node_id",
                &[],
            )
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| {
                let record = from_json(row.get::<_, &str>(1).as_bytes(), "node record")?;
                Ok((row.get(0), record))
            })
            .collect()
    }

    async fn put_customer_key(&self, key: &CustomerKey) -> Result<(), StoreError> {
        let body =
            String::from_utf8(to_json(key)?).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO customer_keys (id, key_hash, body) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET key_hash = EXCLUDED.key_hash, body = EXCLUDED.body",
                &[&key.id, &key.key_hash, &body],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn customer_keys(&self) -> Result<Vec<CustomerKey>, StoreError> {
        let client = self.client().await?;
        client
            .query("SELECT body FROM customer_keys ORDER BY id", &[])
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| from_json(row.get::<_, &str>(0).as_bytes(), "customer key"))
            .collect()
    }

    async fn usage(&self) -> Result<Vec<(String, String, Usage)>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT key_id, model, jobs, units, charged_micro_credits FROM customer_usage
                 ORDER BY key_id, model",
                &[],
            )
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| {
                let usage = Usage {
                    jobs: uint(row.get(2), "usage")?,
                    units: uint(row.get(3), "usage")?,
                    charged_micro_credits: uint(row.get(4), "usage")?,
                };
                Ok((row.get(0), row.get(1), usage))
            })
            .collect()
    }

    async fn health(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .query_one("SELECT count(*) FROM pool_settings", &[])
            .await
            .map_err(db_error)?;
        Ok(())
    }
    async fn put_session(&self, node_id: &str, session: &NodeSession) -> Result<(), StoreError> {
        let body =
            String::from_utf8(to_json(session)?).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO node_sessions (node_id, body) VALUES ($1, $2)
                 ON CONFLICT (node_id) DO UPDATE SET body = EXCLUDED.body",
            )
            .await
            .map_err(db_error)?;
        client
            .execute(&statement, &[&node_id, &body])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn session(&self, node_id: &str) -> Result<Option<NodeSession>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT body FROM node_sessions WHERE node_id = $1")
            .await
            .map_err(db_error)?;
        client
            .query_opt(&statement, &[&node_id])
            .await
            .map_err(db_error)?
            .map(|row| from_json(row.get::<_, &str>(0).as_bytes(), "node session"))
            .transpose()
    }

    async fn insert_jobs(&self, jobs: &[JobRow], events: &[QueueEvent]) -> Result<(), StoreError> {
        self.jobs.insert_jobs(jobs, events).await
    }

    async fn claim_jobs(&self, claim: &Claim<'_>) -> Result<Vec<JobRow>, StoreError> {
        self.jobs.claim_jobs(claim).await
    }

    async fn edit_job(&self, job_id: &str, edit: JobEdit<'_>) -> Result<bool, StoreError> {
        self.jobs.edit_job(job_id, edit).await
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        self.jobs.job(job_id).await
    }

    async fn take_finished_job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        self.jobs.take_finished_job(job_id).await
    }

    async fn expired_leases(
        &self,
        now_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.jobs.expired_leases(now_unix_ms, limit).await
    }

    async fn next_lease_expiry(&self) -> Result<Option<u64>, StoreError> {
        self.jobs.next_lease_expiry().await
    }

    async fn jobs_leased_to(&self, node_id: &str) -> Result<Vec<String>, StoreError> {
        self.jobs.jobs_leased_to(node_id).await
    }

    async fn purge_jobs(&self, before_unix_ms: u64) -> Result<usize, StoreError> {
        self.jobs.purge_jobs(before_unix_ms).await
    }

    async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        self.jobs.job_counts().await
    }

    async fn publish(&self, events: &[QueueEvent]) -> Result<(), StoreError> {
        self.jobs.publish(events).await
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<QueueEvent> {
        self.jobs.events()
    }

    fn connection_use(&self) -> Option<ConnectionUse> {
        Some(PgStore::connection_use(self))
    }
}
