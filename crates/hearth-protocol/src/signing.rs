//! Authenticating node requests: the signed payload, ephemeral X25519 session agreement, session
//! MAC keys, and the [`RequestSigner`] that makes a request's headers.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use curve25519_dalek::montgomery::MontgomeryPoint;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{
    HEADER_MAC, HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, KeyPair,
    PROTOCOL_VERSION, ProtocolError, PublicKey, SessionGrant, node_id, nonce, sha256_hex,
};

/// The bytes a node signs for one request.
pub fn request_payload(
    method: &str,
    path: &str,
    timestamp_ms: u64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "hearth/{PROTOCOL_VERSION}\n{}\n{path}\n{timestamp_ms}\n{nonce}\n{}",
        method.to_ascii_uppercase(),
        sha256_hex(body)
    )
    .into_bytes()
}

/// One side's ephemeral X25519 secret for agreeing on a session key.
pub struct SessionSecret([u8; 32]);

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

impl SessionSecret {
    /// A fresh secret from the operating system's generator.
    pub fn generate() -> Result<Self, ProtocolError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| ProtocolError::Random(e.to_string()))?;
        Ok(Self(secret))
    }

    /// The public half, base64, to send to the other side.
    pub fn public(&self) -> String {
        BASE64.encode(MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }

    /// The MAC key shared with the holder of `peer_public` for `node_id`'s session: both
    /// sides compute the same. Refuses malformed keys and low-order points (which would make
    /// the shared secret known to anyone).
    pub fn agree(&self, peer_public: &str, node_id: &str) -> Result<SessionKey, ProtocolError> {
        let bytes: [u8; 32] = BASE64
            .decode(peer_public)
            .map_err(|e| ProtocolError::BadKey(e.to_string()))?
            .try_into()
            .map_err(|_| ProtocolError::BadKey("a session key has 32 bytes".into()))?;
        let shared = MontgomeryPoint(bytes).mul_clamped(self.0).to_bytes();
        if shared == [0u8; 32] {
            return Err(ProtocolError::BadKey("session key of low order".into()));
        }
        let mut kdf = HmacSha256::new_from_slice(b"hearth session key v1")
            .map_err(|e| ProtocolError::BadKey(e.to_string()))?;
        kdf.update(&shared);
        kdf.update(node_id.as_bytes());
        Ok(SessionKey(kdf.finalize().into_bytes().into()))
    }
}

type HmacSha256 = Hmac<Sha256>;

/// A session's MAC key (HMAC-SHA256).
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key from its 32 bytes (a pool keeps sessions in its database, so any of its
    /// processes checks a node's MACs).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes, to store.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn hmac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; 32 bytes never fails.
        HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// The base64 MAC of `payload`.
    pub fn mac(&self, payload: &[u8]) -> String {
        let mut mac = self.hmac();
        mac.update(payload);
        BASE64.encode(mac.finalize().into_bytes())
    }

    /// Check a base64 MAC of `payload`, in constant time.
    pub fn verify(&self, payload: &[u8], mac_b64: &str) -> Result<(), ProtocolError> {
        let tag = BASE64
            .decode(mac_b64)
            .map_err(|e| ProtocolError::BadSignature(e.to_string()))?;
        let mut mac = self.hmac();
        mac.update(payload);
        mac.verify_slice(&tag)
            .map_err(|_| ProtocolError::SignatureMismatch)
    }
}

/// The bytes a pool signs to vouch for its half of a node's session.
pub fn session_grant_payload(node_id: &str, pool_session_public: &str) -> Vec<u8> {
    format!("hearth/{PROTOCOL_VERSION}/session\n{node_id}\n{pool_session_public}").into_bytes()
}

/// Authenticates node requests: the four headers for one request, with an ed25519 signature
/// or, once a session is agreed ([`RequestSigner::start_session`]), a MAC.
#[derive(Debug)]
pub struct RequestSigner {
    key: KeyPair,
    node_id: String,
    session: Option<SessionKey>,
}

impl RequestSigner {
    /// Sign as the node that owns `key`.
    pub fn new(key: KeyPair) -> Self {
        let node_id = node_id(&key.public_key());
        Self {
            key,
            node_id,
            session: None,
        }
    }

    /// Finish the key agreement begun with `secret` (whose public half went in the
    /// registration) from the pool's `grant`: its half must be signed by `pool_key`. Later
    /// requests carry a MAC. Without a grant (an older pool) requests stay signed.
    pub fn start_session(
        &mut self,
        secret: &SessionSecret,
        grant: &SessionGrant,
        pool_key: &PublicKey,
    ) -> Result<(), ProtocolError> {
        pool_key.verify(
            &session_grant_payload(&self.node_id, &grant.pool_session_key),
            &grant.signature,
        )?;
        self.session = Some(secret.agree(&grant.pool_session_key, &self.node_id)?);
        Ok(())
    }

    /// Forget the session (after the pool forgot it: sign again until the next registration).
    pub fn end_session(&mut self) {
        self.session = None;
    }

    /// True while requests are authenticated by the session's MAC.
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The key pair.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// `(header, value)` pairs for a request: node, timestamp, nonce, signature.
    pub fn headers(
        &self,
        method: &str,
        path: &str,
        timestamp_ms: u64,
        body: &[u8],
    ) -> [(&'static str, String); 4] {
        let nonce = nonce();
        let payload = request_payload(method, path, timestamp_ms, &nonce, body);
        let proof = match &self.session {
            Some(session) => (HEADER_MAC, session.mac(&payload)),
            None => (HEADER_SIGNATURE, self.key.sign(&payload)),
        };
        [
            (HEADER_NODE, self.node_id.clone()),
            (HEADER_TIMESTAMP, timestamp_ms.to_string()),
            (HEADER_NONCE, nonce),
            proof,
        ]
    }
}
