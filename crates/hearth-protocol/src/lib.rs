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

mod output_wire;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
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

/// What a node offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HardwareProfile {
    /// `cpu` or `wgpu`.
    pub backend: String,
    /// E.g. "wgpu (NVIDIA GeForce RTX 4070, Vulkan)".
    pub device: String,
    /// Memory models may use on that backend.
    pub memory_bytes: u64,
    /// Models the node can run (ids from the model store).
    pub models: Vec<String>,
    /// From the capability benchmark, where run.
    pub matmul_gflops: Option<f64>,
}

/// `POST /node/v1/challenge`: a fresh value a registration must quote, once, before it expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub challenge: String,
    pub expires_unix_ms: u64,
}

/// `POST /node/v1/register`: signed with the key it registers (proof of possession).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub protocol_version: u32,
    /// A [`Challenge`] the pool just gave out: registrations cannot be replayed.
    #[serde(default)]
    pub challenge: String,
    pub public_key: PublicKey,
    pub profile: HardwareProfile,
    /// The node software, e.g. "hearth 0.1.0".
    pub client: String,
    /// The node's half of a session key agreement ([`SessionSecret::public`]), when it wants a
    /// session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
}

/// The pool's half of a session: its ephemeral public key, signed with the pool's key over
/// [`session_grant_payload`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    pub pool_session_key: String,
    pub signature: String,
}

/// What the pool pays: what a credit is worth and when earnings become payable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PayoutTerms {
    /// One credit in `currency`, at the pool's rate.
    pub credit_value: f64,
    /// Three-letter currency code, e.g. `EUR`.
    pub currency: String,
    /// How long after a receipt its credits are payable (until then they are pending, and
    /// held if the node is caught cheating).
    pub settlement_ms: u64,
}

/// The pool's answer to a registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistrationReply {
    pub node_id: String,
    /// The key receipts are signed with.
    pub pool_public_key: PublicKey,
    pub pool_name: String,
    /// True for the local demo pool: credits there are not money.
    pub demo: bool,
    /// The pool's payout terms (pools before these were published send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<PayoutTerms>,
    /// Present when the registration asked for a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionGrant>,
}

/// `POST /node/v1/lease`: wait up to `wait_ms` for up to `max_jobs` jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub max_jobs: u32,
    pub wait_ms: u64,
}

/// Jobs handed to the node (empty when none came within the wait).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseReply {
    pub jobs: Vec<Job>,
}

/// One message of a chat job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Sampling settings of a chat job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatParams {
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Send the text as it is generated, in heartbeats.
    #[serde(default)]
    pub stream: bool,
}

/// What to compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskPayload {
    Embeddings {
        texts: Vec<String>,
    },
    Chat {
        messages: Vec<ChatMessage>,
        params: ChatParams,
    },
    ImageClassification {
        /// Encoded images (PNG, JPEG), base64.
        images: Vec<String>,
        top_k: u32,
    },
    /// Verification of another node's chat answer by teacher forcing: run the conversation
    /// followed by `token_ids` and report, for each of those tokens, its rank among the
    /// model's own predictions at that position (0 = the most likely).
    ChatScore {
        messages: Vec<ChatMessage>,
        token_ids: Vec<u32>,
    },
}

/// A unit of work leased to a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Names this lease: results and heartbeats must quote it.
    pub lease_id: String,
    pub model: String,
    pub task: TaskPayload,
    /// The lease ends then unless a heartbeat extends it.
    pub lease_expires_unix_ms: u64,
}

/// `POST /node/v1/jobs/{id}/heartbeat`: still working; optionally new text of a streamed chat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub lease_id: String,
    /// Text generated since the last heartbeat.
    #[serde(default)]
    pub text_delta: String,
}

/// The pool's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub lease_expires_unix_ms: u64,
    /// The customer went away: stop and return the job.
    pub cancel: bool,
}

/// `POST /node/v1/jobs/{id}/return`: the node gives the job back (its owner needs the GPU).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReturnJob {
    pub lease_id: String,
    pub reason: String,
}

/// One class with its probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: u32,
    pub label: String,
    pub probability: f32,
}

/// What a job produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskOutput {
    Embeddings {
        vectors: Vec<Vec<f32>>,
        /// Tokens per input.
        tokens: Vec<u32>,
    },
    Chat {
        text: String,
        prompt_tokens: u32,
        completion_tokens: u32,
        /// Token ids of the answer, for verification by teacher forcing.
        token_ids: Vec<u32>,
        /// `stop` or `length`.
        finish_reason: String,
    },
    ImageClassification {
        results: Vec<Vec<ClassScore>>,
    },
    ChatScore {
        /// One rank per scored token.
        ranks: Vec<u32>,
    },
}

/// The pool's answer to a result: a receipt now, or later when the result was picked for
/// verification (fetch it with [`ReceiptsRequest`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultReply {
    pub receipt: Option<SignedReceipt>,
    /// The result is being checked by another node; credit follows if it holds.
    pub pending_verification: bool,
    /// Jobs leased for [`JobResult::next`].
    #[serde(default)]
    pub jobs: Vec<Job>,
}

/// `POST /node/v1/receipts`: this node's receipts after `after_sequence` (all when `None`),
/// oldest first, at most `limit`. A node catches up its ledger with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptsRequest {
    pub after_sequence: Option<u64>,
    pub limit: u32,
}

/// Receipts, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptsReply {
    pub receipts: Vec<SignedReceipt>,
}

/// `POST /node/v1/jobs/{id}/result`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub lease_id: String,
    #[serde(deserialize_with = "output_wire::read")]
    pub output: TaskOutput,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    /// GPU (or CPU) energy the job used, where known.
    pub energy_wh: Option<f64>,
    pub energy_estimated: bool,
    /// Lease the next jobs in the same round trip (a busy node saves a request per job).
    #[serde(default)]
    pub next: Option<LeaseRequest>,
}

/// What the pool pays for one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub job_id: String,
    pub node_id: String,
    pub model: String,
    /// Units billed: input tokens, output tokens or images.
    pub units: u64,
    /// `input_tokens`, `output_tokens` or `images`.
    pub unit: String,
    pub micro_credits: u64,
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
                    && self.receipt.node_id == prev.receipt.node_id
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ProtocolError::BrokenChain {
                job_id: self.receipt.job_id.clone(),
            })
        }
    }
}

/// An error body, in OpenAI's shape (the node API uses it too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`, `server_error`…
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
            job_id: format!("job-{sequence}"),
            node_id: "n".into(),
            model: "m".into(),
            units: 10,
            unit: "images".into(),
            micro_credits: 25,
            issued_unix_ms: 5,
            sequence,
            prev_hash,
        };
        let first = SignedReceipt::sign(receipt(0, String::new()), &pool);
        let second = SignedReceipt::sign(receipt(1, first.hash()), &pool);
        assert_eq!(first.verify(&pool.public_key()), Ok(()));
        assert_eq!(first.follows(None), Ok(()));
        assert_eq!(second.follows(Some(&first)), Ok(()));
        assert!(second.follows(None).is_err());

        let mut forged = second.clone();
        forged.receipt.micro_credits = 1_000_000;
        assert_eq!(
            forged.verify(&pool.public_key()),
            Err(ProtocolError::SignatureMismatch)
        );
        let skipped = SignedReceipt::sign(receipt(2, first.hash()), &pool);
        assert!(skipped.follows(Some(&first)).is_err());
    }
}
