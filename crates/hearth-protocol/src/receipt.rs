//! Receipts: what the pool pays for one job, signed, and chained per node by hash.

use serde::{Deserialize, Serialize};

use crate::{KeyPair, ProtocolError, PublicKey, sha256_hex};

/// What the pool pays a node for one job, before its place in the node's chain is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub job_id: String,
    pub node_id: String,
    pub model: String,
    /// Units billed: input tokens, output tokens or images.
    pub units: u64,
    /// `input_tokens`, `output_tokens` or `images`.
    pub unit: String,
    pub micro_credits: u64,
}

/// A payment in its node's chain. On the wire its fields are flat, the payment's first, as
/// they always were (the signature covers these bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    #[serde(flatten)]
    pub payment: Payment,
    pub issued_unix_ms: u64,
    /// Position in this node's chain, from 0.
    pub sequence: u64,
    /// [`SignedReceipt::hash`] of the node's previous receipt; empty for the first.
    pub prev_hash: String,
}

impl Receipt {
    /// The exact bytes signed: the JSON of the receipt (fields in declaration order).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A receipt with the pool's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    /// base64 ed25519 signature of [`Receipt::canonical_bytes`].
    pub signature: String,
}

impl SignedReceipt {
    /// Sign `receipt` with the pool's key.
    pub fn sign(receipt: Receipt, pool_key: &KeyPair) -> Self {
        let signature = pool_key.sign(&receipt.canonical_bytes());
        Self { receipt, signature }
    }

    /// The hash the next receipt of the same node names.
    pub fn hash(&self) -> String {
        let mut bytes = self.receipt.canonical_bytes();
        bytes.extend(self.signature.as_bytes());
        sha256_hex(&bytes)
    }

    /// Check the pool's signature.
    pub fn verify(&self, pool_key: &PublicKey) -> Result<(), ProtocolError> {
        pool_key.verify(&self.receipt.canonical_bytes(), &self.signature)
    }

    /// Check that this receipt follows `previous` (or starts the chain when `None`).
    pub fn follows(&self, previous: Option<&SignedReceipt>) -> Result<(), ProtocolError> {
        let ok = match previous {
            None => self.receipt.sequence == 0 && self.receipt.prev_hash.is_empty(),
            Some(prev) => {
                self.receipt.sequence == prev.receipt.sequence + 1
                    && self.receipt.prev_hash == prev.hash()
                    && self.receipt.payment.node_id == prev.receipt.payment.node_id
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ProtocolError::BrokenChain {
                job_id: self.receipt.payment.job_id.clone(),
            })
        }
    }
}
