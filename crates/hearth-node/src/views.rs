//! What the window's pages show beyond the overview: earnings over time (Earnings page) and
//! the job history a page at a time (History page). Every type crosses the IPC boundary, so
//! each derives [`TS`] like those in [`crate::status`].

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::status::{JobState, JobSummary};

/// One hour's totals, for the charts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct HourEarnings {
    /// Start of the hour, ms since the Unix epoch.
    #[ts(type = "number")]
    pub at_ms: u64,
    #[ts(type = "number")]
    pub micro_credits: u64,
    #[ts(type = "number")]
    pub jobs_completed: u64,
    #[ts(type = "number")]
    pub jobs_failed: u64,
    /// GPU energy spent on jobs (Wh).
    pub energy_wh: f64,
    /// Some of the energy was estimated (no power sensor), not measured.
    pub energy_estimated: bool,
}

/// Totals over the last `days`, with electricity and what is left after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct PeriodEarnings {
    pub days: u32,
    #[ts(type = "number")]
    pub micro_credits: u64,
    #[ts(type = "number")]
    pub jobs_completed: u64,
    pub energy_wh: f64,
    pub energy_estimated: bool,
    /// Earnings in the owner's currency (credits × the value of one credit).
    pub value: f64,
    /// Electricity for the jobs, in the owner's currency.
    pub electricity_cost: f64,
    /// `value − electricity_cost`.
    pub net: f64,
}

/// One model's share of the earnings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ModelEarnings {
    pub model: String,
    #[ts(type = "number")]
    pub jobs: u64,
    #[ts(type = "number")]
    pub micro_credits: u64,
}

/// Everything the Earnings page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct EarningsReport {
    /// Every hour of the last 30 days that had work, oldest first.
    pub hours: Vec<HourEarnings>,
    /// The last 1, 7 and 30 days.
    pub periods: Vec<PeriodEarnings>,
    /// Completed jobs of the last 30 days by model, most credits first.
    pub by_model: Vec<ModelEarnings>,
    /// The owner's electricity price per kWh and currency (from the settings).
    pub price_per_kwh: f64,
    pub currency: String,
    /// What one credit is worth in `currency` (from the settings).
    pub credit_value: f64,
    /// Credits from the local demo pool are not money.
    pub demo: bool,
    #[ts(type = "number")]
    pub now_ms: u64,
}

/// Which jobs the History page asks for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
#[serde(default)]
pub struct JobQuery {
    /// Rows to skip, newest first.
    #[ts(type = "number")]
    pub offset: u64,
    /// Rows wanted (at most [`JobQuery::MAX_LIMIT`]).
    pub limit: u32,
    pub state: Option<JobState>,
    pub model: Option<String>,
    /// Jobs whose id starts with this (the search box).
    pub id_prefix: Option<String>,
    /// Jobs started in `[from_ms, to_ms)`.
    #[ts(type = "number | null")]
    pub from_ms: Option<u64>,
    #[ts(type = "number | null")]
    pub to_ms: Option<u64>,
}

impl JobQuery {
    /// The most rows one page may hold.
    pub const MAX_LIMIT: u32 = 500;
}

/// One page of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct JobPage {
    /// Jobs matching the query in all.
    #[ts(type = "number")]
    pub total: u64,
    #[ts(type = "number")]
    pub offset: u64,
    pub jobs: Vec<JobSummary>,
}
