//! What a pool is set up with: where it listens, its customers' keys, the models it sells and
//! their prices, lease timing.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use hearth_protocol::TaskKind;

/// A model the pool sells, with its price in micro-credits (integers only). By default the pool
/// sells every model of its store whose manifest states a price ([`crate::Meter::load`]); an
/// operator's config may list the offers instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOffer {
    /// The model id customers name and nodes load, e.g. `all-minilm-l6-v2`.
    pub id: String,
    /// What it does; must be what its manifest says.
    pub task: TaskKind,
    /// Embeddings: per 1000 input tokens. Chat: per output token. Images: per image.
    pub micro_credits_per_unit: u64,
}

impl ModelOffer {
    /// The unit billed: `input_tokens`, `output_tokens` or `images`.
    pub fn unit(&self) -> &'static str {
        match self.task {
            TaskKind::Embeddings => "input_tokens",
            TaskKind::Chat => "output_tokens",
            TaskKind::ImageClassification => "images",
        }
    }

    /// The price of `units`, rounded up (embeddings are priced per thousand tokens).
    pub fn price(&self, units: u64) -> u64 {
        match self.task {
            TaskKind::Embeddings => units
                .saturating_mul(self.micro_credits_per_unit)
                .div_ceil(1000),
            _ => units.saturating_mul(self.micro_credits_per_unit),
        }
    }
}

/// Everything a pool is started with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolConfig {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Shown to nodes.
    pub name: String,
    /// A local demo pool: credits are not money, and the UI says so.
    pub demo: bool,
    /// Customer API keys (`Authorization: Bearer <key>`).
    pub api_keys: Vec<String>,
    /// The models sold. Empty: every model of the store whose manifest states a price, at
    /// that price.
    pub models: Vec<ModelOffer>,
    /// How long a lease lasts without a heartbeat.
    pub lease_ms: u64,
    /// Leases a job may lose (expiry, node gone) before the customer gets an error.
    pub max_attempts: u32,
    /// Times nodes may hand a job back unanswered (paused for their owner, restarted, a
    /// damaged model) before the customer gets an error: a hand-back costs no attempt, but
    /// a job every node hands back must still end.
    pub max_handbacks: u32,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Longest a node's lease request may wait for work.
    pub max_lease_wait_ms: u64,
    /// Longest a customer request waits for its jobs.
    pub request_timeout_ms: u64,
    /// Texts per embeddings job: longer inputs are split across jobs (and nodes).
    pub embeddings_per_job: usize,
    /// Share of an established node's jobs (0.0 ..= 1.0) checked by a second node before
    /// anyone is paid: the floor its share falls to as its record grows.
    pub verification_share: f64,
    /// Verified jobs a node needs before it is established: until then every job it answers
    /// is checked, it takes one job at a time, and it checks nobody else. A strike starts it
    /// again. 0 trusts every node from the start (a pool of one's own machines).
    pub probation_jobs: u64,
    /// Node ids established from the start (an operator's own nodes that seed the network's
    /// verifiers).
    pub trusted_nodes: Vec<String>,
    /// Strikes (results refused or failed verification) that quarantine a node: no more work,
    /// and its earnings are held.
    pub quarantine_strikes: u32,
    /// How long earnings stay pending before they are payable (a node caught meanwhile has
    /// them held).
    pub settlement_ms: u64,
    /// What one credit pays out in `currency`; told to nodes so owners see money.
    pub credit_value: f64,
    /// Three-letter code of the payout currency, e.g. `EUR`.
    pub currency: String,
    /// Jobs waiting for a node, at most; a request that does not fit is answered 503 at once.
    pub max_queued_jobs: usize,
    /// Registrations (and challenges) per source address per minute.
    pub registrations_per_minute: u32,
    /// Largest node request body, in bytes.
    pub node_body_limit_bytes: usize,
    /// A request's head must arrive within this long (also the idle keep-alive limit).
    pub header_timeout_ms: u64,
    /// A request's body must arrive within this long.
    pub body_timeout_ms: u64,
    /// Open connections, at most; more wait to be accepted.
    pub max_connections: usize,
    /// PEM certificate chain: with `tls_key_file`, the pool serves HTTPS itself (else plain
    /// HTTP, for a TLS-terminating proxy in front).
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<std::path::PathBuf>,
    /// The pool's fee on what nodes are paid, in hundredths of a percent: a customer is
    /// charged the nodes' pay plus this share of it (rounded up).
    pub fee_basis_points: u32,
    /// Where the operator's admin API listens (keys, usage, payouts while the pool serves);
    /// keep it on loopback. `None`: no admin API.
    pub admin_bind: Option<SocketAddr>,
    /// Where the pool keeps its state: `postgres://user@host:port/database` for PostgreSQL
    /// (several pool processes may share it), else a sled database in the data folder (one
    /// process).
    pub database: Option<String>,
    /// Most connections this process opens to PostgreSQL.
    pub database_connections: usize,
    /// The newest Hearth release, told to nodes when they join so their owners hear of it
    /// (`[release]` with `version`, an https `url` and `notes`). `None`: nodes hear of none.
    pub release: Option<hearth_protocol::ReleaseNotice>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: "Hearth pool".into(),
            demo: false,
            api_keys: Vec::new(),
            models: Vec::new(),
            lease_ms: 30_000,
            max_attempts: 3,
            max_handbacks: 10,
            body_limit_bytes: 8 << 20,
            max_lease_wait_ms: 30_000,
            request_timeout_ms: 300_000,
            embeddings_per_job: 16,
            verification_share: 0.05,
            probation_jobs: 20,
            trusted_nodes: Vec::new(),
            quarantine_strikes: 3,
            settlement_ms: 24 * 3600 * 1000,
            credit_value: 1.0,
            currency: "EUR".into(),
            max_queued_jobs: 10_000,
            registrations_per_minute: 60,
            node_body_limit_bytes: 2 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 20_000,
            tls_cert_file: None,
            tls_key_file: None,
            fee_basis_points: 1_000,
            admin_bind: None,
            database: None,
            database_connections: 16,
            release: None,
        }
    }
}

impl PoolConfig {
    /// The lease length.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// The offer for model `id`.
    pub fn model(&self, id: &str) -> Option<&ModelOffer> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Parse a TOML config file's text; unset fields keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let invalid = |field: &'static str, rule: String| Err(ConfigError::Invalid { field, rule });
        if config.embeddings_per_job == 0 {
            return invalid("embeddings_per_job", "must be at least 1".into());
        }
        if config.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1".into());
        }
        if config.max_handbacks == 0 {
            return invalid("max_handbacks", "must be at least 1".into());
        }
        if config.tls_cert_file.is_some() != config.tls_key_file.is_some() {
            return invalid(
                "tls_key_file",
                "goes with tls_cert_file: set both or neither".into(),
            );
        }
        if config.quarantine_strikes == 0 {
            return invalid("quarantine_strikes", "must be at least 1".into());
        }
        if config.max_queued_jobs == 0 {
            return invalid("max_queued_jobs", "must be at least 1".into());
        }
        if let Some(url) = &config.database
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return invalid(
                "database",
                format!(
                    "must be a postgres:// URL (or left out for the built-in sled database), not {url:?}"
                ),
            );
        }
        if config.database_connections == 0 {
            return invalid("database_connections", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&config.verification_share) {
            return invalid("verification_share", "must be between 0 and 1".into());
        }
        if !(config.credit_value.is_finite() && (0.0..=1e6).contains(&config.credit_value)) {
            return invalid("credit_value", "must be between 0 and 1000000".into());
        }
        if config.currency.len() != 3 || !config.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return invalid(
                "currency",
                format!(
                    "{:?}: use a three-letter code such as EUR or USD",
                    config.currency
                ),
            );
        }
        if let Some(release) = &config.release {
            if !release.url.starts_with("https://") {
                return invalid(
                    "release.url",
                    format!(
                        "{:?}: owners open it, so it must be an https:// address",
                        release.url
                    ),
                );
            }
            if !release.is_newer_than("0") {
                return invalid(
                    "release.version",
                    format!(
                        "{:?}: must be dotted numbers such as 0.2.0",
                        release.version
                    ),
                );
            }
        }
        Ok(config)
    }
}

/// What is wrong with a pool's config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or a field of the wrong type.
    #[error("config: {0}")]
    Syntax(String),
    /// A field outside what it may be.
    #[error("config: {field} {rule}")]
    Invalid { field: &'static str, rule: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_integers_rounded_up_for_token_thousands() {
        let offer = |task, micro_credits_per_unit| ModelOffer {
            id: "m".into(),
            task,
            micro_credits_per_unit,
        };
        let models = [
            offer(TaskKind::Embeddings, 20),
            offer(TaskKind::Chat, 2),
            offer(TaskKind::ImageClassification, 50),
        ];
        let embed = &models[0];
        assert_eq!(embed.price(1000), 20);
        assert_eq!(embed.price(1), 1, "a started thousand is paid");
        assert_eq!(embed.price(0), 0);
        assert_eq!(models[1].price(128), 256);
        assert_eq!(models[2].price(3), 150);
        assert_eq!(
            models[2].price(u64::MAX),
            u64::MAX,
            "saturates, never wraps"
        );
    }

    #[test]
    fn config_files_override_defaults() {
        let config = PoolConfig::from_toml(
            "bind = \"127.0.0.1:8040\"\napi_keys = [\"sk-test\"]\nlease_ms = 5000\n",
        )
        .unwrap();
        assert_eq!(config.bind.port(), 8040);
        assert_eq!(config.lease_ms, 5000);
        assert!(
            config.models.is_empty(),
            "the store's models, at their manifests' prices"
        );
        assert!(PoolConfig::from_toml("lease_ms = \"soon\"").is_err());
        assert!(PoolConfig::from_toml("max_attempts = 0").is_err());
        let shared =
            PoolConfig::from_toml("database = \"postgres://hearth@127.0.0.1:5432/pool\"").unwrap();
        assert_eq!(
            shared.database.as_deref(),
            Some("postgres://hearth@127.0.0.1:5432/pool")
        );
        assert!(PoolConfig::from_toml("database = \"mysql://x\"").is_err());
        let release = PoolConfig::from_toml(
            "[release]\nversion = \"0.2.0\"\nurl = \"https://example.org/r\"\nnotes = \"Faster.\"\n",
        )
        .unwrap()
        .release
        .unwrap();
        assert_eq!(release.version, "0.2.0");
        assert_eq!(release.headline(), "Faster.");
        for wrong in [
            "[release]\nversion = \"0.2.0\"\nurl = \"http://example.org/r\"\n",
            "[release]\nversion = \"next\"\nurl = \"https://example.org/r\"\n",
            "[release]\nversion = \"0.2.0\"\n",
        ] {
            assert!(PoolConfig::from_toml(wrong).is_err(), "{wrong}");
        }
    }
}
