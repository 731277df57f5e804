//! The pool's receipts: a hash chain, each signed by the pool; the newest, and a check of all.

use hearth_protocol::{PublicKey, SignedReceipt};

use crate::{ChainReport, Ledger, LedgerError, Result, decode};

impl Ledger {
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
