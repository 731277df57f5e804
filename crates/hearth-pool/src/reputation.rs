//! What the pool knows of each node's work, and what follows from it. A record belongs to the
//! node's key: it is stored, so it survives registering again and pool restarts.
//!
//! - A new key is on probation: every job it answers is checked by an established node, it
//!   takes one job at a time and it verifies nobody ([`PoolConfig::probation_jobs`]).
//! - After that the share of its jobs that is checked falls as its clean record grows, down
//!   to [`PoolConfig::verification_share`]; a strike puts it back on probation.
//! - [`PoolConfig::quarantine_strikes`] strikes quarantine the key: no more work, a clear
//!   reason on each request, and its earnings held.

use serde::{Deserialize, Serialize};

use crate::config::PoolConfig;

/// One node's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Results that passed verification, ever.
    pub verified: u64,
    /// Results that passed verification since the last strike.
    pub verified_since_strike: u64,
    /// Results refused or that failed verification, ever.
    pub strikes: u32,
    /// Why the node may no longer work here, once it may not.
    pub quarantined: Option<String>,
}

impl NodeRecord {
    /// Whether this node may check other nodes' answers.
    pub fn is_established(&self, config: &PoolConfig, node_id: &str) -> bool {
        self.quarantined.is_none()
            && (self.verified_since_strike >= config.probation_jobs
                || config.trusted_nodes.iter().any(|n| n == node_id))
    }

    /// The chance that a result of this node is checked before it is paid.
    pub fn verification_share(&self, config: &PoolConfig, node_id: &str) -> f64 {
        if config.trusted_nodes.iter().any(|n| n == node_id) {
            return config.verification_share;
        }
        if self.verified_since_strike < config.probation_jobs {
            return 1.0;
        }
        let falling = config.probation_jobs as f64 / self.verified_since_strike.max(1) as f64;
        falling.clamp(config.verification_share, 1.0)
    }

    /// A result of this node passed a check.
    pub fn passed(&mut self) {
        self.verified = self.verified.saturating_add(1);
        self.verified_since_strike = self.verified_since_strike.saturating_add(1);
    }

    /// A result of this node was refused or failed a check, for `reason`.
    pub fn strike(&mut self, config: &PoolConfig, reason: &str) {
        self.strikes = self.strikes.saturating_add(1);
        self.verified_since_strike = 0;
        if self.strikes >= config.quarantine_strikes && self.quarantined.is_none() {
            // Short enough to read in the owner's app.
            let mut last: String = reason.chars().take(120).collect();
            if last.len() < reason.len() {
                last.push('…');
            }
            self.quarantined = Some(format!(
                "{} results were refused or failed verification (the last: {last}); this node gets no more work and its earnings are held",
                self.strikes
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_nodes_are_checked_always_then_less_and_always_again_after_a_strike() {
        let config = PoolConfig {
            verification_share: 0.05,
            probation_jobs: 20,
            quarantine_strikes: 3,
            ..PoolConfig::default()
        };
        let mut record = NodeRecord::default();
        assert_eq!(record.verification_share(&config, "n"), 1.0);
        assert!(!record.is_established(&config, "n"));
        for _ in 0..20 {
            record.passed();
        }
        assert!(record.is_established(&config, "n"));
        assert_eq!(record.verification_share(&config, "n"), 1.0);
        for _ in 0..20 {
            record.passed();
        }
        assert_eq!(record.verification_share(&config, "n"), 0.5);
        for _ in 0..1000 {
            record.passed();
        }
        assert_eq!(record.verification_share(&config, "n"), 0.05);
        record.strike(&config, "bad vectors");
        assert_eq!(record.verification_share(&config, "n"), 1.0);
        assert!(!record.is_established(&config, "n"));
        assert!(record.quarantined.is_none());
        record.strike(&config, "bad vectors");
        record.strike(&config, "bad text");
        let reason = record.quarantined.clone().unwrap_or_default();
        assert!(
            reason.contains("3 results") && reason.contains("bad text"),
            "{reason}"
        );
        assert!(!record.is_established(&config, "n"));
        // Trusted nodes seed the verifiers.
        let trusted = PoolConfig {
            trusted_nodes: vec!["seed".into()],
            ..config
        };
        assert!(NodeRecord::default().is_established(&trusted, "seed"));
        assert_eq!(
            NodeRecord::default().verification_share(&trusted, "seed"),
            0.05
        );
    }
}
