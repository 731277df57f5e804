//! Registered nodes and the check on every signed node request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::{HeaderMap, Method};
use hearth_protocol::{
    HEADER_MAC, HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HardwareProfile,
    MAX_CLOCK_SKEW_MS, PublicKey, SessionKey, request_payload,
};

use crate::error::ApiError;
use crate::queue::now_unix_ms;

/// A registered node (shared, not copied, by every request it makes).
#[derive(Debug)]
pub struct NodeInfo {
    pub key: PublicKey,
    pub profile: HardwareProfile,
    /// Results that failed checks.
    pub strike_count: AtomicU32,
    /// The MAC key agreed at registration, when the node asked for a session.
    pub session: Option<SessionKey>,
}

impl NodeInfo {
    /// Results of this node that failed checks.
    pub fn strikes(&self) -> u32 {
        self.strike_count.load(Ordering::SeqCst)
    }
}

/// Every node that registered since the pool started (nodes register again after a restart:
/// the registration is cheap and carries the current hardware profile).
#[derive(Debug, Default)]
pub struct Nodes {
    nodes: RwLock<HashMap<String, Arc<NodeInfo>>>,
    /// Signatures seen within the clock-skew window: a replayed request is refused.
    seen: Mutex<SeenSignatures>,
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

impl Nodes {
    /// Add or update a node.
    pub fn register(&self, node_id: String, info: NodeInfo) {
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id, Arc::new(info));
    }

    /// A node's record.
    pub fn get(&self, node_id: &str) -> Option<Arc<NodeInfo>> {
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
            .cloned()
    }

    /// Count a failed check against a node; returns its strikes.
    pub fn strike(&self, node_id: &str) -> u32 {
        self.get(node_id)
            .map_or(0, |n| n.strike_count.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Number of registered nodes.
    pub fn len(&self) -> usize {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no node registered yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check a node request: known node, fresh timestamp, a valid session MAC or signature over
    /// method, path, timestamp, nonce and body, not seen before. Returns the node id and record.
    pub fn authenticate(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(String, Arc<NodeInfo>), ApiError> {
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
        let signature = match mac {
            Some(mac) => mac,
            None => header(HEADER_SIGNATURE)?,
        };
        let info = self.get(node_id).ok_or_else(|| {
            ApiError::unauthorized(format!("unknown node {node_id}: register first"))
        })?;
        let now = now_unix_ms();
        if now.abs_diff(timestamp) > MAX_CLOCK_SKEW_MS {
            return Err(ApiError::unauthorized(format!(
                "request time {timestamp} is more than {MAX_CLOCK_SKEW_MS} ms from the pool's {now}"
            )));
        }
        let payload = request_payload(method.as_str(), path, timestamp, nonce, body);
        match (mac, &info.session) {
            (Some(mac), Some(session)) => session
                .verify(&payload, mac)
                .map_err(|e| ApiError::unauthorized(format!("bad MAC: {e}")))?,
            (Some(_), None) => {
                return Err(ApiError::unauthorized(format!(
                    "node {node_id} has no session here: register again"
                )));
            }
            (None, _) => info
                .key
                .verify(&payload, signature)
                .map_err(|e| ApiError::unauthorized(format!("bad signature: {e}")))?,
        }
        let fresh = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(signature, now);
        if !fresh {
            return Err(ApiError::unauthorized("replayed request".into()));
        }
        Ok((node_id.to_owned(), info))
    }
}
