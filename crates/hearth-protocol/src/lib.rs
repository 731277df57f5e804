//! The wire protocol between Hearth nodes and pools (version [`PROTOCOL_VERSION`]), as JSON
//! over HTTP.
//!
//! - A node registers with its ed25519 public key and hardware profile ([`Registration`]); its
//!   id derives from the key ([`node_id`]). The registration quotes a fresh, single-use
//!   challenge from the pool ([`Challenge`]), so a recorded registration cannot be replayed.
//! - Every later node request is signed ([`RequestSigner`]): the signature covers the method,
//!   path, a timestamp, a nonce and the body's sha256, and goes in four headers.
//! - Sessions make that cheap: the registration carries an ephemeral X25519 key, the pool
//!   answers with its own, signed by the pool's key, and both derive a MAC key
//!   ([`SessionSecret::agree`]). Requests then carry an HMAC-SHA256 of the same payload
//!   ([`HEADER_MAC`]) instead of an ed25519 signature: a hundredth of the CPU, and still nothing
//!   an eavesdropper can forge. A pool that gives no session keeps getting signatures.
//! - The node leases jobs by long poll ([`LeaseRequest`] → [`LeaseReply`]), reports progress with
//!   heartbeats, gives a job back without penalty ([`ReturnJob`]) or submits a [`JobResult`].
//! - The pool answers a result with a [`SignedReceipt`]: per node a hash chain, each receipt
//!   naming the hash of the one before, signed with the pool's key.

mod keys;
mod messages;
mod output_wire;
mod receipt;
mod signing;
mod task;

pub use keys::{KeyPair, PublicKey, node_id, nonce, random_bytes};
pub use messages::*;
pub use receipt::{Payment, Receipt, SignedReceipt};
pub use signing::{
    RequestSigner, SessionKey, SessionSecret, request_payload, session_grant_payload,
};
pub use task::*;

use sha2::{Digest, Sha256};

/// Bumped on incompatible changes; pools refuse other versions at registration.
pub const PROTOCOL_VERSION: u32 = 2;

/// Header carrying the node id of a signed request.
pub const HEADER_NODE: &str = "x-hearth-node";
/// Header carrying the request's time, milliseconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "x-hearth-timestamp";
/// Header carrying the base64 ed25519 signature.
pub const HEADER_SIGNATURE: &str = "x-hearth-signature";
/// Header carrying a random nonce, so two identical requests in one millisecond still differ
/// (ed25519 signatures are deterministic) and a pool can refuse exact replays.
pub const HEADER_NONCE: &str = "x-hearth-nonce";
/// Header carrying the base64 HMAC-SHA256 of the request payload under the session key (in
/// place of [`HEADER_SIGNATURE`] once a session is agreed).
pub const HEADER_MAC: &str = "x-hearth-mac";
/// How far a signed request's timestamp may be from the pool's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// What went wrong with keys, signatures or receipts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed key: {0}")]
    BadKey(String),
    #[error("malformed signature: {0}")]
    BadSignature(String),
    #[error("the signature does not match")]
    SignatureMismatch,
    #[error("receipt {job_id} does not follow the previous receipt of its node")]
    BrokenChain { job_id: String },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// Milliseconds since the Unix epoch (0 on a clock set before 1970), the time unit of the wire.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;

    #[test]
    fn random_bytes_differ_between_draws_and_threads() {
        let here: Vec<[u8; 16]> = (0..1000).map(|_| random_bytes()).collect();
        let there: Vec<[u8; 16]> =
            std::thread::spawn(|| (0..1000).map(|_| random_bytes()).collect())
                .join()
                .unwrap();
        let distinct: std::collections::HashSet<_> = here.iter().chain(&there).collect();
        assert_eq!(distinct.len(), 2000);
        // Every bit position takes both values across the draws.
        let ones = here.iter().fold([0u32; 128], |mut ones, draw| {
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += u32::from(draw[bit / 8] >> (bit % 8) & 1);
            }
            ones
        });
        assert!(ones.iter().all(|&n| (350..650).contains(&n)), "{ones:?}");
        assert_eq!(nonce().len(), 32);
    }

    #[test]
    fn both_sides_of_a_session_derive_the_same_mac_key() {
        let node_key = KeyPair::generate().unwrap();
        let pool_key = KeyPair::generate().unwrap();
        let mut signer = RequestSigner::new(node_key);
        let node_id = signer.node_id().to_owned();
        let (node_half, pool_half) = (
            SessionSecret::generate().unwrap(),
            SessionSecret::generate().unwrap(),
        );
        let pool_side = pool_half.agree(&node_half.public(), &node_id).unwrap();
        let grant = SessionGrant {
            pool_session_key: pool_half.public(),
            signature: pool_key.sign(&session_grant_payload(&node_id, &pool_half.public())),
        };
        // A grant not signed by the pool's key is refused and leaves the signer signing.
        let stranger = KeyPair::generate().unwrap().public_key();
        assert_eq!(
            signer.start_session(&node_half, &grant, &stranger),
            Err(ProtocolError::SignatureMismatch)
        );
        assert!(!signer.has_session());
        signer
            .start_session(&node_half, &grant, &pool_key.public_key())
            .unwrap();
        let [_, (_, timestamp), (_, nonce), (header, mac)] =
            signer.headers("POST", "/node/v1/lease", 1_000, b"{}");
        assert_eq!(header, HEADER_MAC);
        let payload = request_payload(
            "POST",
            "/node/v1/lease",
            timestamp.parse().unwrap(),
            &nonce,
            b"{}",
        );
        assert_eq!(pool_side.verify(&payload, &mac), Ok(()));
        let other = request_payload("POST", "/node/v1/lease", 1_000, &nonce, b"{ }");
        assert_eq!(
            pool_side.verify(&other, &mac),
            Err(ProtocolError::SignatureMismatch)
        );
        // Another node id gives another key; low-order and malformed halves are refused.
        let elsewhere = pool_half.agree(&node_half.public(), "other").unwrap();
        assert!(elsewhere.verify(&payload, &mac).is_err());
        assert!(
            pool_half
                .agree(&BASE64.encode([0u8; 32]), &node_id)
                .is_err()
        );
        assert!(pool_half.agree("short", &node_id).is_err());
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let key = KeyPair::generate().unwrap();
        let public = key.public_key();
        let sig = key.sign(b"hello");
        assert_eq!(public.verify(b"hello", &sig), Ok(()));
        assert_eq!(
            public.verify(b"hellO", &sig),
            Err(ProtocolError::SignatureMismatch)
        );
        let other = KeyPair::generate().unwrap().public_key();
        assert_eq!(
            other.verify(b"hello", &sig),
            Err(ProtocolError::SignatureMismatch)
        );
        assert!(matches!(
            public.verify(b"hello", "!!"),
            Err(ProtocolError::BadSignature(_))
        ));
        assert!(!PublicKey("AAAA".into()).is_valid());

        let restored = KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap();
        assert_eq!(restored.public_key(), public);
        assert_eq!(node_id(&public).len(), 32);
    }

    #[test]
    fn request_signatures_cover_method_path_time_and_body() {
        let signer = RequestSigner::new(KeyPair::generate().unwrap());
        let public = signer.key().public_key();
        let [_, _, (_, nonce), (_, sig)] = signer.headers("post", "/node/v1/lease", 1000, b"{}");
        let ok = request_payload("POST", "/node/v1/lease", 1000, &nonce, b"{}");
        assert_eq!(public.verify(&ok, &sig), Ok(()));
        for other in [
            request_payload("GET", "/node/v1/lease", 1000, &nonce, b"{}"),
            request_payload("POST", "/node/v1/jobs", 1000, &nonce, b"{}"),
            request_payload("POST", "/node/v1/lease", 1001, &nonce, b"{}"),
            request_payload("POST", "/node/v1/lease", 1000, "other", b"{}"),
            request_payload("POST", "/node/v1/lease", 1000, &nonce, b"{ }"),
        ] {
            assert!(public.verify(&other, &sig).is_err());
        }
    }

    #[test]
    fn receipts_chain_and_verify() {
        let pool = KeyPair::generate().unwrap();
        let receipt = |sequence, prev_hash: String| Receipt {
            payment: Payment {
                job_id: format!("job-{sequence}"),
                node_id: "n".into(),
                model: "m".into(),
                units: 10,
                unit: "images".into(),
                micro_credits: 25,
            },
            issued_unix_ms: 5,
            sequence,
            prev_hash,
        };
        // The signed bytes are flat, in the order receipts were always signed in, so receipts
        // kept in ledgers before the payment had a type of its own still verify.
        assert_eq!(
            String::from_utf8(receipt(0, String::new()).canonical_bytes()).unwrap(),
            r#"{"job_id":"job-0","node_id":"n","model":"m","units":10,"unit":"images","micro_credits":25,"issued_unix_ms":5,"sequence":0,"prev_hash":""}"#
        );
        let first = SignedReceipt::sign(receipt(0, String::new()), &pool);
        let second = SignedReceipt::sign(receipt(1, first.hash()), &pool);
        assert_eq!(first.verify(&pool.public_key()), Ok(()));
        assert_eq!(first.follows(None), Ok(()));
        assert_eq!(second.follows(Some(&first)), Ok(()));
        assert!(second.follows(None).is_err());

        let mut forged = second.clone();
        forged.receipt.payment.micro_credits = 1_000_000;
        assert_eq!(
            forged.verify(&pool.public_key()),
            Err(ProtocolError::SignatureMismatch)
        );
        let skipped = SignedReceipt::sign(receipt(2, first.hash()), &pool);
        assert!(skipped.follows(Some(&first)).is_err());
    }
}
