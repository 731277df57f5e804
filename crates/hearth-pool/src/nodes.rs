//! Registered nodes, their records, registration challenges, and the check on every signed
//! node request.
//!
//! Registrations (key, profile, session MAC key) are kept in the store, so a node registered
//! at one pool process is known to all of them; each process caches what it read, and looks
//! again when a node's proof does not check against its cached session (the node may have
//! registered again elsewhere).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::http::{HeaderMap, Method};
use hearth_protocol::{
    Challenge, HEADER_MAC, HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
    HardwareProfile, MAX_CLOCK_SKEW_MS, PublicKey, SessionKey, request_payload,
};

use crate::config::PoolConfig;
use crate::error::ApiError;
use crate::queue::{IdleMemo, now_unix_ms, random_id};
use crate::reputation::NodeRecord;
use crate::store::{NodeSession, PoolStore};

/// How long a registration challenge stays valid.
pub const CHALLENGE_TTL_MS: u64 = 60_000;
/// Challenges outstanding at once, at most (older ones are forgotten first).
const MAX_CHALLENGES: usize = 100_000;
/// Models one profile may list, and the longest id or device name.
pub const MAX_PROFILE_MODELS: usize = 32;
pub const MAX_PROFILE_TEXT: usize = 200;

/// A registered node (shared, not copied, by every request it makes).
#[derive(Debug)]
pub struct NodeInfo {
    pub key: PublicKey,
    pub profile: HardwareProfile,
    /// The MAC key agreed at registration, when the node asked for a session.
    pub session: Option<SessionKey>,
    /// What the queue remembers of its last look for work that found nothing.
    pub idle: IdleMemo,
}

impl NodeInfo {
    fn to_stored(&self) -> NodeSession {
        NodeSession {
            key: self.key.clone(),
            profile: self.profile.clone(),
            session_key: self
                .session
                .as_ref()
                .map(|k| hearth_protocol::hex(&k.to_bytes())),
            registered_unix_ms: now_unix_ms(),
        }
    }

    fn from_stored(stored: NodeSession) -> Result<Self, ApiError> {
        let session = match &stored.session_key {
            None => None,
            Some(hex) => Some(SessionKey::from_bytes(unhex32(hex).ok_or_else(|| {
                ApiError::internal("a stored session key is damaged".into())
            })?)),
        };
        Ok(Self {
            key: stored.key,
            profile: stored.profile,
            session,
            idle: IdleMemo::default(),
        })
    }
}

/// 32 bytes from 64 hex digits.
fn unhex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Every node that registered since the pool started, with the records of their keys.
#[derive(Debug)]
pub struct Nodes {
    nodes: RwLock<HashMap<String, Arc<NodeInfo>>>,
    /// Records read from the store once and written through on every change.
    records: Mutex<HashMap<String, NodeRecord>>,
    store: Arc<dyn PoolStore>,
    config: Arc<PoolConfig>,
    /// Signatures seen within the clock-skew window: a replayed request is refused.
    seen: Mutex<SeenSignatures>,
    /// Challenges given out and not yet used, with their expiry.
    challenges: Mutex<Challenges>,
    /// What each source address may still register or ask challenges for.
    per_address: Mutex<crate::rate::PerMinute<IpAddr>>,
    /// When this pool process started: signatures made before it may have been seen by the
    /// process before (whose replay cache is gone), so they are refused.
    started_unix_ms: u64,
}

/// Signatures accepted recently, oldest first, forgotten after twice the clock-skew window
/// (a request older than the window is refused for its timestamp anyway).
#[derive(Debug, Default)]
struct SeenSignatures {
    set: HashSet<String>,
    order: VecDeque<(u64, String)>,
}

impl SeenSignatures {
    /// Record `signature`; false if it was already there.
    fn insert(&mut self, signature: &str, now: u64) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_sub(*at) <= 2 * MAX_CLOCK_SKEW_MS {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        if !self.set.insert(signature.to_owned()) {
            return false;
        }
        self.order.push_back((now, signature.to_owned()));
        true
    }
}

#[derive(Debug, Default)]
struct Challenges {
    live: HashMap<String, u64>,
    order: VecDeque<String>,
}

/// A node request whose headers checked out; the body is checked with [`Nodes::verify_body`].
#[derive(Debug)]
pub struct Caller {
    pub node_id: String,
    pub node: Arc<NodeInfo>,
    timestamp: u64,
    nonce: String,
    proof: Proof,
}

#[derive(Debug)]
enum Proof {
    Mac(String),
    Signature(String),
}

impl Nodes {
    /// No node yet; records are read from and written to `store`.
    pub fn new(store: Arc<dyn PoolStore>, config: Arc<PoolConfig>) -> Self {
        Self {
            nodes: RwLock::default(),
            records: Mutex::default(),
            store,
            config,
            seen: Mutex::default(),
            challenges: Mutex::default(),
            per_address: Mutex::default(),
            started_unix_ms: now_unix_ms(),
        }
    }

    /// Add or update a node, in the store (for every process) and here.
    pub async fn register(&self, node_id: String, info: NodeInfo) -> Result<(), ApiError> {
        self.store.put_session(&node_id, &info.to_stored()).await?;
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id, Arc::new(info));
        Ok(())
    }

    /// A node's registration: cached, else from the store.
    pub async fn get(&self, node_id: &str) -> Result<Option<Arc<NodeInfo>>, ApiError> {
        let cached = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
            .cloned();
        match cached {
            Some(info) => Ok(Some(info)),
            None => self.reload(node_id).await,
        }
    }

    /// A node's registration read from the store again (it may have registered at another
    /// process since this one cached it).
    async fn reload(&self, node_id: &str) -> Result<Option<Arc<NodeInfo>>, ApiError> {
        let Some(stored) = self.store.session(node_id).await? else {
            return Ok(None);
        };
        let info = Arc::new(NodeInfo::from_stored(stored)?);
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id.to_owned(), Arc::clone(&info));
        Ok(Some(info))
    }

    /// A node's record (a new key has an empty one).
    pub async fn record(&self, node_id: &str) -> Result<NodeRecord, ApiError> {
        if let Some(record) = self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
        {
            return Ok(record.clone());
        }
        let record = self.store.node_record(node_id).await?.unwrap_or_default();
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node_id.to_owned())
            .or_insert_with(|| record.clone());
        Ok(record)
    }

    async fn update(
        &self,
        node_id: &str,
        durable: bool,
        change: impl FnOnce(&mut NodeRecord),
    ) -> NodeRecord {
        let mut record = match self.record(node_id).await {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(node = %node_id, error = %error.message, "node record unreadable; starting from an empty one");
                NodeRecord::default()
            }
        };
        change(&mut record);
        if let Err(error) = self.store.put_node_record(node_id, &record, durable).await {
            tracing::error!(node = %node_id, %error, "node record not stored");
        }
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id.to_owned(), record.clone());
        record
    }

    /// Count a refused or failed result against a node (stored at once); its record after.
    pub async fn strike(&self, node_id: &str, reason: &str) -> NodeRecord {
        let config = Arc::clone(&self.config);
        let record = self
            .update(node_id, true, |r| r.strike(&config, reason))
            .await;
        if let Some(why) = &record.quarantined {
            tracing::warn!(node = %node_id, strikes = record.strikes, reason = %why, "node quarantined");
        }
        record
    }

    /// A node's result passed verification.
    pub async fn passed(&self, node_id: &str) {
        self.update(node_id, false, NodeRecord::passed).await;
    }

    /// Number of registered nodes.
    pub fn len(&self) -> usize {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no node registered yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Count a registration or challenge from `address`: 429 past the per-minute limit
    /// (over any sixty seconds, see [`crate::rate`]).
    pub fn limit_registrations(&self, address: IpAddr) -> Result<(), ApiError> {
        let per_minute = self.config.registrations_per_minute;
        self.per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(address, per_minute, now_unix_ms())
            .map_err(|retry| {
                ApiError::rate_limited(
                    format!("more than {per_minute} registrations from {address} in a minute"),
                    retry,
                )
            })
    }

    /// A fresh challenge for a registration.
    pub fn challenge(&self) -> Challenge {
        let challenge = random_id("ch-");
        let now = now_unix_ms();
        let mut table = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        while table.order.len() >= MAX_CHALLENGES
            || table
                .order
                .front()
                .and_then(|c| table.live.get(c))
                .is_some_and(|&expiry| expiry <= now)
        {
            let Some(old) = table.order.pop_front() else {
                break;
            };
            table.live.remove(&old);
        }
        let expires_unix_ms = now + CHALLENGE_TTL_MS;
        table.live.insert(challenge.clone(), expires_unix_ms);
        table.order.push_back(challenge.clone());
        Challenge {
            challenge,
            expires_unix_ms,
        }
    }

    /// Use up `challenge`: true once, while it is live.
    pub fn take_challenge(&self, challenge: &str) -> bool {
        let mut table = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        table
            .live
            .remove(challenge)
            .is_some_and(|expiry| expiry > now_unix_ms())
    }

    /// Check a node request's headers before its body is read: a known node, a fresh
    /// timestamp, a proof of the kind its session uses, and not quarantined.
    pub async fn check_headers(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ApiError::unauthorized(format!("missing {name} header")))
        };
        let node_id = header(HEADER_NODE)?;
        let timestamp: u64 = header(HEADER_TIMESTAMP)?
            .parse()
            .map_err(|_| ApiError::unauthorized("malformed timestamp".into()))?;
        let nonce = header(HEADER_NONCE)?;
        let mac = headers.get(HEADER_MAC).and_then(|v| v.to_str().ok());
        let node = self.get(node_id).await?.ok_or_else(|| {
            ApiError::unauthorized(format!("unknown node {node_id}: register first"))
        })?;
        let now = now_unix_ms();
        if now.abs_diff(timestamp) > MAX_CLOCK_SKEW_MS {
            return Err(ApiError::unauthorized(format!(
                "request time {timestamp} is more than {MAX_CLOCK_SKEW_MS} ms from the pool's {now}"
            )));
        }
        let node = match (mac, &node.session) {
            // A session agreed at another process since this one cached the node.
            (Some(_), None) => self.reload(node_id).await?.unwrap_or(node),
            _ => node,
        };
        let proof = match (mac, &node.session) {
            (Some(mac), Some(_)) => Proof::Mac(mac.to_owned()),
            (Some(_), None) => {
                return Err(ApiError::unauthorized(format!(
                    "node {node_id} has no session here: register again"
                )));
            }
            (None, _) => {
                // Session MACs die with the process that agreed them; signatures do not.
                if timestamp < self.started_unix_ms {
                    return Err(ApiError::unauthorized(format!(
                        "request signed at {timestamp}, before this pool started at {}: sign it again",
                        self.started_unix_ms
                    )));
                }
                Proof::Signature(header(HEADER_SIGNATURE)?.to_owned())
            }
        };
        if let Some(reason) = self.record(node_id).await?.quarantined {
            return Err(ApiError::quarantined(&reason));
        }
        Ok(Caller {
            node_id: node_id.to_owned(),
            node,
            timestamp,
            nonce: nonce.to_owned(),
            proof,
        })
    }

    /// Check the session MAC or signature over method, path, timestamp, nonce and `body`, and
    /// that the request was not seen before. A proof that fails against the cached session is
    /// checked once more against the stored one (the node may have registered again at
    /// another process).
    pub async fn verify_body(
        &self,
        caller: &mut Caller,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let checked = self.verify_proof(caller, method, path, body);
        if checked.is_err()
            && let Some(stored) = self.reload(&caller.node_id).await?
            && !Arc::ptr_eq(&stored, &caller.node)
        {
            caller.node = stored;
            return self.verify_proof(caller, method, path, body);
        }
        checked
    }

    fn verify_proof(
        &self,
        caller: &Caller,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let payload = request_payload(method.as_str(), path, caller.timestamp, &caller.nonce, body);
        let tag = match (&caller.proof, &caller.node.session) {
            (Proof::Mac(mac), Some(session)) => {
                session
                    .verify(&payload, mac)
                    .map_err(|e| ApiError::unauthorized(format!("bad MAC: {e}")))?;
                mac
            }
            (Proof::Mac(_), None) => {
                return Err(ApiError::unauthorized("no session: register again".into()));
            }
            (Proof::Signature(signature), _) => {
                caller
                    .node
                    .key
                    .verify(&payload, signature)
                    .map_err(|e| ApiError::unauthorized(format!("bad signature: {e}")))?;
                signature
            }
        };
        let fresh = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tag, now_unix_ms());
        if !fresh {
            return Err(ApiError::unauthorized("replayed request".into()));
        }
        Ok(())
    }
}
