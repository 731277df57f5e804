//! Identities: ed25519 key pairs, public keys, node ids, and the secure random bytes that ids and
//! nonces are made of.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{ProtocolError, hex, sha256_hex};

/// An ed25519 key pair (a node's identity, or a pool's receipt key).
pub struct KeyPair(SigningKey);

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_tuple("KeyPair").field(&self.public_key()).finish()
    }
}

impl KeyPair {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self, ProtocolError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| ProtocolError::Random(e.to_string()))?;
        Ok(Self(SigningKey::from_bytes(&secret)))
    }

    /// The key from its 32 secret bytes (as stored on disk).
    pub fn from_secret_bytes(secret: &[u8]) -> Result<Self, ProtocolError> {
        let bytes: [u8; 32] = secret
            .try_into()
            .map_err(|_| ProtocolError::BadKey(format!("{} bytes, not 32", secret.len())))?;
        Ok(Self(SigningKey::from_bytes(&bytes)))
    }

    /// The 32 secret bytes, for storing with restrictive permissions.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(BASE64.encode(self.0.verifying_key().to_bytes()))
    }

    /// Sign `message`; base64 signature.
    pub fn sign(&self, message: &[u8]) -> String {
        BASE64.encode(self.0.sign(message).to_bytes())
    }
}

/// An ed25519 public key, base64 as on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PublicKey(pub String);

impl PublicKey {
    fn key(&self) -> Result<VerifyingKey, ProtocolError> {
        let bytes = BASE64
            .decode(&self.0)
            .map_err(|e| ProtocolError::BadKey(e.to_string()))?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::BadKey(format!("{} bytes, not 32", bytes.len())))?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| ProtocolError::BadKey(e.to_string()))
    }

    /// Check that `signature` (base64) signs `message` under this key.
    pub fn verify(&self, message: &[u8], signature: &str) -> Result<(), ProtocolError> {
        let key = self.key()?;
        let bytes = BASE64
            .decode(signature)
            .map_err(|e| ProtocolError::BadSignature(e.to_string()))?;
        let signature = Signature::from_slice(&bytes)
            .map_err(|e| ProtocolError::BadSignature(e.to_string()))?;
        key.verify(message, &signature)
            .map_err(|_| ProtocolError::SignatureMismatch)
    }

    /// Whether this is a well-formed key.
    pub fn is_valid(&self) -> bool {
        self.key().is_ok()
    }
}

/// The node id for a public key: the first 16 bytes of its sha256, in hex.
pub fn node_id(key: &PublicKey) -> String {
    sha256_hex(key.0.as_bytes())[..32].to_owned()
}

/// `N` bytes from a cryptographically secure generator: this thread's ChaCha generator
/// (rand's `ThreadRng`), seeded and reseeded from the operating system, so the ids and nonces
/// a busy pool or node makes for every request cost no system call each. Keys are drawn from
/// the operating system directly.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A fresh random nonce (16 bytes, hex).
pub fn nonce() -> String {
    hex(&random_bytes::<16>())
}
