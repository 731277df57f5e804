//! The node's HTTP client for one pool: every request signed (or MACed once a session is agreed),
//! replies size-capped and parsed strictly, the pool's TLS certificate checked against the
//! system's roots and the owner's own CA.

use std::time::Duration;

use hearth_protocol::{
    Challenge, HardwareProfile, KeyPair, PROTOCOL_VERSION, PublicKey, Registration,
    RegistrationReply, RequestSigner, SessionSecret,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::WorkerError;

use hearth_protocol::now_unix_ms as now_ms;

/// The most a pool's reply may hold: a lease of a few jobs with images is well under this.
pub const MAX_REPLY_BYTES: usize = 32 << 20;

/// A signed HTTP client for one pool.
#[derive(Debug)]
pub struct PoolClient {
    url: String,
    http: reqwest::Client,
    /// Signs requests, or MACs them once the registration agreed on a session.
    signer: std::sync::RwLock<RequestSigner>,
}

impl PoolClient {
    /// A client for the pool at `url`, signing as `key`. HTTPS pools are checked against the
    /// system's roots and, when given, the PEM certificates of `extra_ca_pem` (a private pool's
    /// own CA).
    pub fn new(url: &str, key: KeyPair, extra_ca_pem: Option<&[u8]>) -> Result<Self, WorkerError> {
        let bad = |reason: String| WorkerError::Pool {
            url: url.to_owned(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            // Leases wait up to a minute; nothing else should take this long.
            .timeout(Duration::from_secs(90));
        if let Some(pem) = extra_ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| bad(format!("the pool CA file: {}", hearth_cli::error_chain(&e))))?;
            if certificates.is_empty() {
                return Err(bad("the pool CA file holds no certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| bad(format!("HTTP client: {}", hearth_cli::error_chain(&e))))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            http,
            signer: std::sync::RwLock::new(RequestSigner::new(key)),
        })
    }

    fn signer(&self) -> std::sync::RwLockReadGuard<'_, RequestSigner> {
        self.signer.read().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's id.
    pub fn node_id(&self) -> String {
        self.signer().node_id().to_owned()
    }

    /// True once requests are authenticated by a session MAC rather than signatures.
    pub fn has_session(&self) -> bool {
        self.signer().has_session()
    }

    pub(super) async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, WorkerError> {
        let err = |reason: String| WorkerError::Pool {
            url: self.url.clone(),
            reason,
        };
        let bytes = serde_json::to_vec(body).map_err(|e| err(e.to_string()))?;
        self.call(reqwest::Method::POST, path, bytes).await
    }

    /// `GET path` (signed over no body), its JSON reply parsed.
    pub(super) async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, WorkerError> {
        self.call(reqwest::Method::GET, path, Vec::new()).await
    }

    /// A signed request with a JSON body (none for a GET), its reply read whole within
    /// [`MAX_REPLY_BYTES`] and parsed; the pool's own words on an error status.
    async fn call<R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<R, WorkerError> {
        let err = |reason: String| WorkerError::Pool {
            url: self.url.clone(),
            reason,
        };
        let headers = self
            .signer()
            .headers(method.as_str(), path, now_ms(), &bytes);
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if !bytes.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(bytes);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| err(hearth_cli::error_chain(&e)))?;
        let status = response.status();
        // Read at most MAX_REPLY_BYTES, whatever the pool claims or sends.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| err(e.to_string()))? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(err(format!(
                    "{path}: reply larger than {} MiB refused",
                    MAX_REPLY_BYTES >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            // The pool's own words where it sent an error body (a quarantine says why).
            let said = serde_json::from_slice::<hearth_protocol::ErrorBody>(&body)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            let reason = format!(
                "{path}: {status}: {}",
                said.chars().take(400).collect::<String>()
            );
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Err(WorkerError::Unauthorized {
                    url: self.url.clone(),
                    reason,
                });
            }
            return Err(err(reason));
        }
        serde_json::from_slice(&body).map_err(|e| err(format!("{path}: unreadable reply: {e}")))
    }

    /// Ask the pool for the model file whose sha256 is `sha256`, from byte `from` on (a range
    /// request when `from` is not 0). The reply is handed back unread: its body is the file,
    /// streamed, and its status says whether the range was honoured (206) or the whole file
    /// comes (200). No overall time limit: the caller limits each stall instead.
    pub async fn get_file(
        &self,
        sha256: &str,
        from: u64,
    ) -> Result<reqwest::Response, WorkerError> {
        let path = format!("/node/v1/files/{sha256}");
        let mut request = self
            .http
            .get(format!("{}{path}", self.url))
            // Large files on slow lines: the client's 90 s limit would cut them.
            .timeout(Duration::from_secs(7 * 24 * 3600));
        if from > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        for (name, value) in self.signer().headers("GET", &path, now_ms(), &[]) {
            request = request.header(name, value);
        }
        request.send().await.map_err(|e| WorkerError::Pool {
            url: self.url.clone(),
            reason: hearth_cli::error_chain(&e),
        })
    }

    /// Register with the node's hardware profile, quoting a fresh challenge from the pool and
    /// asking for a session: later requests carry a MAC instead of a signature when the pool
    /// grants one (signed with its key). With `pinned`, a pool answering with another key is
    /// refused before anything else happens.
    pub async fn register(
        &self,
        profile: HardwareProfile,
        pinned: Option<&PublicKey>,
    ) -> Result<RegistrationReply, WorkerError> {
        // Registration is always signed: it is the proof of holding the key.
        self.signer
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .end_session();
        let challenge: Challenge = self.post("/node/v1/challenge", &()).await?;
        let secret = SessionSecret::generate().ok();
        let registration = Registration {
            protocol_version: PROTOCOL_VERSION,
            challenge: challenge.challenge,
            public_key: self.signer().key().public_key(),
            profile,
            client: format!("hearth {}", env!("CARGO_PKG_VERSION")),
            session_key: secret.as_ref().map(SessionSecret::public),
        };
        let reply: RegistrationReply = self.post("/node/v1/register", &registration).await?;
        if let Some(pinned) = pinned
            && *pinned != reply.pool_public_key
        {
            return Err(WorkerError::PoolKeyChanged {
                url: self.url.clone(),
                pinned: pinned.0.clone(),
                got: reply.pool_public_key.0.clone(),
            });
        }
        if let (Some(secret), Some(grant)) = (&secret, &reply.session) {
            let started = self
                .signer
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .start_session(secret, grant, &reply.pool_public_key);
            if let Err(error) = started {
                tracing::warn!(%error, "the pool's session grant does not check out; signing every request");
            }
        }
        Ok(reply)
    }
}
