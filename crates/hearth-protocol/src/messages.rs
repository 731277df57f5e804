//! The messages of a node's conversation with its pool: registration, leases, heartbeats,
//! results, receipts fetched, and the error body.

use serde::{Deserialize, Serialize};

use crate::{PublicKey, SignedReceipt, TaskOutput, TaskPayload, output_wire};

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

/// The newest release of the node software a pool knows of, told to nodes when they join so
/// their owners hear of it (a node never installs it by itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseNotice {
    /// Its version, e.g. `0.2.0` (compared with the node's own as dotted numbers).
    pub version: String,
    /// Where to get it: a web page (https) the owner opens.
    pub url: String,
    /// Its release notes; owners see the first line.
    #[serde(default)]
    pub notes: String,
}

impl ReleaseNotice {
    /// Whether it is newer than `version` (both dotted numbers, e.g. `0.10.0` > `0.9.3`; a
    /// pre-release suffix such as `-rc.1` sorts before its release). A version that is not
    /// dotted numbers is never newer.
    pub fn is_newer_than(&self, version: &str) -> bool {
        match (parse_version(&self.version), parse_version(version)) {
            (Some(theirs), Some(ours)) => theirs > ours,
            _ => false,
        }
    }

    /// The first line of the notes, trimmed.
    pub fn headline(&self) -> &str {
        self.notes
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
    }
}

/// `1.2.3` → ([1, 2, 3], true); `1.2.3-rc.1` → ([1, 2, 3], false): a pre-release sorts first.
fn parse_version(version: &str) -> Option<(Vec<u64>, bool)> {
    let version = version.trim().trim_start_matches('v');
    let (numbers, pre) = match version.split_once('-') {
        Some((numbers, _)) => (numbers, false),
        None => (version, true),
    };
    let numbers: Vec<u64> = numbers
        .split('.')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let mut numbers = numbers;
    while numbers.len() > 1 && numbers.last() == Some(&0) {
        numbers.pop();
    }
    Some((numbers, pre))
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
    /// The newest node release the pool knows of, when its operator named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseNotice>,
}

/// `POST /node/v1/lease`: wait up to `wait_ms` for up to `max_jobs` jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub max_jobs: u32,
    pub wait_ms: u64,
    /// Only jobs for these of the node's registered models (`None`: any of them). A node
    /// leaves out a model whose files failed their check until it has fetched them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// Jobs handed to the node (empty when none came within the wait).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseReply {
    pub jobs: Vec<Job>,
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
    use super::*;

    fn notice(version: &str, notes: &str) -> ReleaseNotice {
        ReleaseNotice {
            version: version.into(),
            url: "https://example.org/hearth".into(),
            notes: notes.into(),
        }
    }

    #[test]
    fn a_release_is_newer_by_its_numbers_not_its_text() {
        for (theirs, ours, newer) in [
            ("0.2.0", "0.1.0", true),
            ("0.10.0", "0.9.3", true),
            ("1.0", "0.99.99", true),
            ("0.1.0", "0.1.0", false),
            ("0.1", "0.1.0", false),
            ("0.1.0", "0.2.0", false),
            ("v0.2.0", "0.1.0", true),
            ("0.2.0-rc.1", "0.2.0", false),
            ("0.2.0", "0.2.0-rc.1", true),
            ("0.2.0-rc.1", "0.1.9", true),
            ("latest", "0.1.0", false),
            ("0.2.x", "0.1.0", false),
            ("", "0.1.0", false),
        ] {
            assert_eq!(
                notice(theirs, "").is_newer_than(ours),
                newer,
                "{theirs} newer than {ours}"
            );
        }
    }

    #[test]
    fn the_headline_is_the_first_line_with_words() {
        assert_eq!(
            notice("1.0.0", "\n  Faster chat on CPUs.  \nAnd more.").headline(),
            "Faster chat on CPUs."
        );
        assert_eq!(notice("1.0.0", "").headline(), "");
    }
}
