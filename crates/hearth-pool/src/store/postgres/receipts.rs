//! Paying nodes on PostgreSQL: each payment placed in its node's chain and signed, the chain
//! rows advanced only from the ends that were read, and the customers' usage added, all in one
//! transaction.

use std::collections::{BTreeMap, HashMap};

use hearth_protocol::{KeyPair, Payment, SignedReceipt};

use super::{PgStore, db_error, int8, to_json, uint};
use crate::store::{ChainEnd, StoreError, UsageCharge, chain_payments, usage_by_key};

/// Add `charges` to their customers' usage in `tx`: one row per key and model, written in
/// that order (so two processes charging the same keys never deadlock).
async fn add_usage(
    tx: &deadpool_postgres::Transaction<'_>,
    charges: &[UsageCharge],
) -> Result<(), StoreError> {
    if charges.is_empty() {
        return Ok(());
    }
    let (mut keys, mut models, mut jobs, mut units, mut credits) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((key_id, model), (n, u, c)) in usage_by_key(charges) {
        keys.push(key_id);
        models.push(model);
        jobs.push(int8(n, "jobs")?);
        units.push(int8(u, "units")?);
        credits.push(int8(c, "micro-credits")?);
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO customer_usage (key_id, model, jobs, units, charged_micro_credits)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[])
             ON CONFLICT (key_id, model) DO UPDATE SET
                 jobs = customer_usage.jobs + EXCLUDED.jobs,
                 units = customer_usage.units + EXCLUDED.units,
                 charged_micro_credits = customer_usage.charged_micro_credits + EXCLUDED.charged_micro_credits",
        )
        .await
        .map_err(db_error)?;
    tx.execute(&statement, &[&keys, &models, &jobs, &units, &credits])
        .await
        .map_err(db_error)?;
    Ok(())
}

/// What one append changes in a node's chain row.
struct ChainMove {
    read: ChainEnd,
    end: ChainEnd,
    credits: u64,
}

/// [`crate::PoolStore::append_receipts`] on `store`.
pub(super) async fn append_receipts(
    store: &PgStore,
    payments: &[Payment],
    charges: &[UsageCharge],
    key: &KeyPair,
) -> Result<Vec<SignedReceipt>, StoreError> {
    if payments.is_empty() {
        return Ok(Vec::new());
    }
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(db_error)?;
    // Sorted, so two processes lock rows in the same order and never deadlock.
    let nodes: Vec<&str> = {
        let mut nodes: Vec<&str> = payments.iter().map(|p| p.node_id.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    };
    let create = tx
        .prepare_cached(
            "INSERT INTO node_chains (node_id) SELECT n FROM unnest($1::text[]) AS n ORDER BY n
             ON CONFLICT (node_id) DO NOTHING",
        )
        .await
        .map_err(db_error)?;
    tx.execute(&create, &[&nodes]).await.map_err(db_error)?;
    let lock = tx
        .prepare_cached(
            "SELECT node_id, next_sequence, head_hash FROM node_chains
             WHERE node_id = ANY($1) ORDER BY node_id FOR UPDATE",
        )
        .await
        .map_err(db_error)?;
    let mut chains: BTreeMap<String, ChainMove> = BTreeMap::new();
    for row in tx.query(&lock, &[&nodes]).await.map_err(db_error)? {
        let read = ChainEnd {
            next_sequence: uint(row.get(1), "chain sequence")?,
            prev_hash: row.get(2),
        };
        chains.insert(
            row.get(0),
            ChainMove {
                end: read.clone(),
                read,
                credits: 0,
            },
        );
    }
    let mut moved: HashMap<String, ChainEnd> = HashMap::new();
    let receipts = chain_payments(payments, key, &mut moved, |node| {
        chains
            .get(node)
            .map(|c| c.read.clone())
            .ok_or_else(|| StoreError::Conflict(format!("no chain row for node {node}")))
    })?;
    let mut columns = ReceiptColumns::default();
    for receipt in &receipts {
        let r = &receipt.receipt;
        if let Some(chain) = chains.get_mut(&r.payment.node_id) {
            chain.credits = chain.credits.saturating_add(r.payment.micro_credits);
            chain.end = ChainEnd::after(receipt);
        }
        columns.node.push(r.payment.node_id.clone());
        columns.sequence.push(int8(r.sequence, "sequence")?);
        columns.job.push(r.payment.job_id.clone());
        columns
            .credits
            .push(int8(r.payment.micro_credits, "micro-credits")?);
        columns.issued.push(int8(r.issued_unix_ms, "time")?);
        columns.signed.push(
            String::from_utf8(to_json(receipt)?).map_err(|e| StoreError::Invalid(e.to_string()))?,
        );
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO receipts (node_id, sequence, job_id, micro_credits, issued_unix_ms, signed)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::text[])",
        )
        .await
        .map_err(db_error)?;
    tx.execute(
        &insert,
        &[
            &columns.node,
            &columns.sequence,
            &columns.job,
            &columns.credits,
            &columns.issued,
            &columns.signed,
        ],
    )
    .await
    .map_err(db_error)?;
    // Each chain moves on only from where this transaction read it.
    let mut ids = Vec::new();
    let (mut read_seq, mut next_seq, mut hashes, mut credits) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (node, chain) in &chains {
        ids.push(node.as_str());
        read_seq.push(int8(chain.read.next_sequence, "sequence")?);
        next_seq.push(int8(chain.end.next_sequence, "sequence")?);
        hashes.push(chain.end.prev_hash.as_str());
        credits.push(int8(chain.credits, "micro-credits")?);
    }
    let advance = tx
        .prepare_cached(
            "UPDATE node_chains AS c
             SET next_sequence = v.next, head_hash = v.hash,
                 balance_micro_credits = c.balance_micro_credits + v.credits
             FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::int8[])
                  AS v(node_id, read, next, hash, credits)
             WHERE c.node_id = v.node_id AND c.next_sequence = v.read",
        )
        .await
        .map_err(db_error)?;
    let advanced = tx
        .execute(&advance, &[&ids, &read_seq, &next_seq, &hashes, &credits])
        .await
        .map_err(db_error)?;
    if advanced != ids.len() as u64 {
        return Err(StoreError::Conflict(
            "a chain end moved under this payment".into(),
        ));
    }
    add_usage(&tx, charges).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(receipts)
}

/// Receipts as columns, for one `INSERT … SELECT FROM unnest(…)`.
#[derive(Default)]
struct ReceiptColumns {
    node: Vec<String>,
    sequence: Vec<i64>,
    job: Vec<String>,
    credits: Vec<i64>,
    issued: Vec<i64>,
    signed: Vec<String>,
}
