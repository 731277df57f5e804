//! `GET /metrics` in Prometheus' text format: what an operator graphs and alerts on. Counters
//! are this process's since it started (Prometheus sums processes); gauges of the queue are
//! read from the store, so they are the whole network's.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the lease-to-result histogram's buckets.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// How a result (or a lease) ended, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Checked and paid.
    Paid,
    /// Refused by the result checks (wrong shape, units that do not add up).
    Refused,
    /// Its answer failed verification by another node.
    FailedVerification,
    /// Answers disagreed and nobody was paid.
    Unresolved,
    /// The lease ran out before a result came.
    LeaseExpired,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Self::Paid,
        Self::Refused,
        Self::FailedVerification,
        Self::Unresolved,
        Self::LeaseExpired,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Refused => "refused",
            Self::FailedVerification => "failed_verification",
            Self::Unresolved => "unresolved",
            Self::LeaseExpired => "lease_expired",
        }
    }
}

/// This process's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 5],
    /// Jobs submitted by customers of this process.
    submitted: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Count `n` jobs ending in `outcome`.
    pub fn count(&self, outcome: Outcome, n: u64) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[i].fetch_add(n, Ordering::Relaxed);
    }

    /// Count jobs submitted.
    pub fn submitted(&self, n: u64) {
        self.submitted.fetch_add(n, Ordering::Relaxed);
    }

    /// Record the time from a lease to its result's acceptance.
    pub fn lease_to_result(&self, ms: u64) {
        let seconds = ms as f64 / 1000.0;
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS_S) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(ms.saturating_mul(1000), Ordering::Relaxed);
    }
}

/// What `/metrics` shows besides the counters.
#[derive(Debug, Default)]
pub struct Gauges {
    pub queued: usize,
    pub leased: usize,
    pub finished: usize,
    /// Nodes in a long poll at this process.
    pub nodes_waiting: usize,
    /// Customers of this process waiting for jobs.
    pub customers_waiting: usize,
    /// Database connections (open, idle, max, requests waiting), where there is a database.
    pub connections: Option<crate::store::ConnectionUse>,
    /// Whether the store answered.
    pub store_up: bool,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The text exposition of `metrics` and `gauges`.
pub fn render(metrics: &Metrics, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "hearth_pool_jobs",
        "gauge",
        "Jobs in the store by state (the whole network's queue).",
    );
    for (state, n) in [
        ("queued", gauges.queued),
        ("leased", gauges.leased),
        ("finished", gauges.finished),
    ] {
        let _ = writeln!(out, "hearth_pool_jobs{{state=\"{state}\"}} {n}");
    }
    family(
        &mut out,
        "hearth_pool_nodes_waiting",
        "gauge",
        "Nodes holding a long poll for work at this process.",
    );
    let _ = writeln!(out, "hearth_pool_nodes_waiting {}", gauges.nodes_waiting);
    family(
        &mut out,
        "hearth_pool_customers_waiting",
        "gauge",
        "Customer jobs of this process waiting for an outcome.",
    );
    let _ = writeln!(
        out,
        "hearth_pool_customers_waiting {}",
        gauges.customers_waiting
    );
    family(
        &mut out,
        "hearth_pool_jobs_submitted_total",
        "counter",
        "Jobs submitted by customers of this process.",
    );
    let _ = writeln!(
        out,
        "hearth_pool_jobs_submitted_total {}",
        metrics.submitted.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "hearth_pool_job_outcomes_total",
        "counter",
        "Results and leases handled by this process, by outcome.",
    );
    for (outcome, n) in Outcome::ALL.iter().zip(&metrics.outcomes) {
        let _ = writeln!(
            out,
            "hearth_pool_job_outcomes_total{{outcome=\"{}\"}} {}",
            outcome.label(),
            n.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "hearth_pool_verification_failures_total",
        "counter",
        "Answers that failed verification by another node.",
    );
    let _ = writeln!(
        out,
        "hearth_pool_verification_failures_total {}",
        metrics.outcomes[2].load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "hearth_pool_lease_to_result_seconds",
        "histogram",
        "Time from a job's lease to its result being accepted at this process.",
    );
    for (bucket, bound) in metrics.latency_buckets.iter().zip(LATENCY_BUCKETS_S) {
        let _ = writeln!(
            out,
            "hearth_pool_lease_to_result_seconds_bucket{{le=\"{bound}\"}} {}",
            bucket.load(Ordering::Relaxed)
        );
    }
    let count = metrics.latency_count.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "hearth_pool_lease_to_result_seconds_bucket{{le=\"+Inf\"}} {count}\n\
         hearth_pool_lease_to_result_seconds_sum {}\n\
         hearth_pool_lease_to_result_seconds_count {count}",
        metrics.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    family(
        &mut out,
        "hearth_pool_store_up",
        "gauge",
        "1 when the store answered this scrape.",
    );
    let _ = writeln!(out, "hearth_pool_store_up {}", u8::from(gauges.store_up));
    if let Some(c) = gauges.connections {
        family(
            &mut out,
            "hearth_pool_db_connections",
            "gauge",
            "This process's database connections: open, idle, the most allowed, and requests waiting for one.",
        );
        for (state, n) in [
            ("open", c.open),
            ("idle", c.idle),
            ("max", c.max),
            ("waiting", c.waiting),
        ] {
            let _ = writeln!(out, "hearth_pool_db_connections{{state=\"{state}\"}} {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_every_family_with_its_values() {
        let metrics = Metrics::default();
        metrics.count(Outcome::Paid, 3);
        metrics.count(Outcome::FailedVerification, 1);
        metrics.lease_to_result(3);
        metrics.lease_to_result(700);
        let text = render(
            &metrics,
            &Gauges {
                queued: 5,
                store_up: true,
                ..Gauges::default()
            },
        );
        for line in [
            "hearth_pool_jobs{state=\"queued\"} 5",
            "hearth_pool_job_outcomes_total{outcome=\"paid\"} 3",
            "hearth_pool_verification_failures_total 1",
            "hearth_pool_lease_to_result_seconds_bucket{le=\"0.005\"} 1",
            "hearth_pool_lease_to_result_seconds_bucket{le=\"1\"} 2",
            "hearth_pool_lease_to_result_seconds_bucket{le=\"+Inf\"} 2",
            "hearth_pool_lease_to_result_seconds_count 2",
            "hearth_pool_store_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("hearth_pool_db_connections"));
    }
}
