//! The pool's receipts: a hash chain, each signed by the pool; the newest, and a check of all;
//! and the chain mark, which tells when the disk lost the newest of them.
//!
//! sled opens a log whose tail the disk damaged by dropping everything from the damage on,
//! without an error: records the ledger had made durable, receipts among them, are simply
//! gone. So beside sled's files the ledger keeps a small file naming the newest receipt it
//! made durable (written whole or not at all, after the flush). A chain that ends before the
//! mark lost its tail: [`Ledger::lost_receipts`] says so, and the node tells the owner and
//! collects the receipts again from the pool.

use hearth_protocol::{PublicKey, SignedReceipt};
use serde::{Deserialize, Serialize};

use crate::{ChainReport, Ledger, LedgerError, Result, decode};

/// The chain mark's file, in the ledger's folder (it moves with the folder).
pub const CHAIN_MARK_FILE: &str = "chain-mark.json";

/// What the chain mark holds: the sequence of the newest receipt made durable. (Marks
/// written before this form also hold that receipt's hash, which is not needed and ignored.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ChainMark {
    sequence: u64,
}

/// The sequence the chain mark in `dir` names, if one was written (an unreadable one is
/// treated as none: it is a hint, and the pool's record is what receipts are collected from).
pub(crate) fn read_chain_mark(dir: &std::path::Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(CHAIN_MARK_FILE)).ok()?;
    serde_json::from_slice::<ChainMark>(&bytes)
        .map_err(|error| tracing::warn!(%error, "the ledger's chain mark does not read"))
        .ok()
        .map(|mark| mark.sequence)
}

/// Receipts the ledger held once, on disk, and holds no more: the disk damaged the end of the
/// database's log and sled dropped it when it opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostReceipts {
    /// The newest receipt the ledger had made durable.
    pub held_through: u64,
    /// The newest it holds now (`None`: none at all).
    pub holds_through: Option<u64>,
}

impl LostReceipts {
    /// How many receipts are missing from the end of the chain.
    pub fn count(&self) -> u64 {
        match self.holds_through {
            Some(sequence) => self.held_through.saturating_sub(sequence),
            None => self.held_through + 1,
        }
    }
}

impl Ledger {
    /// The receipts missing from the end of the chain since they were made durable (`None`
    /// when the chain reaches the mark). They come back as late receipts from the pool; once
    /// the chain reaches the mark again, nothing is missing.
    pub fn lost_receipts(&self) -> Result<Option<LostReceipts>> {
        let Some(marked) = *self.chain_marked.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Ok(None);
        };
        let holds_through = self.chain_head()?.map(|head| head.receipt.sequence);
        Ok(
            (holds_through.is_none_or(|sequence| sequence < marked)).then_some(LostReceipts {
                held_through: marked,
                holds_through,
            }),
        )
    }

    /// Move the chain mark up to `receipt`, just made durable. Never down: while receipts lost
    /// from the end are collected again, the mark keeps saying how far the chain went.
    pub(crate) fn mark_chain(&self, receipt: &SignedReceipt) -> Result<()> {
        let mut marked = self.chain_marked.lock().unwrap_or_else(|e| e.into_inner());
        let sequence = receipt.receipt.sequence;
        if marked.is_some_and(|marked| marked >= sequence) {
            return Ok(());
        }
        hearth_instance::write_atomic(
            &self.dir.join(CHAIN_MARK_FILE),
            &serde_json::to_vec(&ChainMark { sequence }).unwrap_or_default(),
        )
        .map_err(LedgerError::ChainMark)?;
        *marked = Some(sequence);
        Ok(())
    }

    /// The newest receipt stored.
    pub fn chain_head(&self) -> Result<Option<SignedReceipt>> {
        match self.t()?.receipts.last()? {
            Some((key, bytes)) => Ok(Some(decode(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// A receipt is accepted only with the pool's signature and as the next link of the chain.
    pub(crate) fn check_receipt(
        &self,
        receipt: &SignedReceipt,
        pool_key: &PublicKey,
    ) -> Result<()> {
        let bad = |reason: String| LedgerError::BadReceipt {
            job_id: receipt.receipt.payment.job_id.clone(),
            sequence: receipt.receipt.sequence,
            reason,
        };
        receipt.verify(pool_key).map_err(|e| bad(e.to_string()))?;
        let head = self.chain_head()?;
        receipt
            .follows(head.as_ref())
            .map_err(|e| bad(e.to_string()))
    }

    /// Check every stored receipt: the pool's signature, and each one following the last.
    pub fn verify_chain(&self, pool_key: &PublicKey) -> Result<ChainReport> {
        let mut previous: Option<SignedReceipt> = None;
        let mut report = ChainReport {
            receipts: 0,
            micro_credits: 0,
        };
        for entry in self.t()?.receipts.iter() {
            let (key, bytes) = entry?;
            let receipt: SignedReceipt = decode(&key, &bytes)?;
            let bad = |reason: String| LedgerError::BadReceipt {
                job_id: receipt.receipt.payment.job_id.clone(),
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
                .saturating_add(receipt.receipt.payment.micro_credits);
            previous = Some(receipt);
        }
        Ok(report)
    }
}
