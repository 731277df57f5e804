//! The money pages' figures, read from the ledger: today's and the lifetime earnings (pending
//! and payable under the pool's terms), the Earnings page's report, the job history's pages, and
//! what an hour of work earns.

use hearth_ledger::Ledger;
use hearth_protocol::now_unix_ms;

use crate::config::NodeConfig;
use crate::status::{Earnings, JobState, JobSummary, PoolStatus};

const MS_PER_HOUR: u64 = 3_600_000;

/// Local midnight today, in Unix ms.
fn local_midnight_ms() -> u64 {
    use chrono::{Local, TimeZone};
    let today = Local::now().date_naive();
    today
        .and_hms_opt(0, 0, 0)
        .and_then(|midnight| Local.from_local_datetime(&midnight).earliest())
        .map_or(0, |t| u64::try_from(t.timestamp_millis()).unwrap_or(0))
}

/// Credits per hour of computing over the completed jobs among `jobs` (`None`: none yet).
pub fn expected_earnings(jobs: &[JobSummary]) -> Option<crate::views::ExpectedEarnings> {
    let (mut micro, mut busy_ms, mut count) = (0u64, 0u64, 0u64);
    for job in jobs.iter().filter(|j| j.state == JobState::Completed) {
        let Some(ended) = job.ended_unix_ms else {
            continue;
        };
        micro += job.micro_credits;
        busy_ms += ended.saturating_sub(job.started_unix_ms).max(1);
        count += 1;
    }
    (count > 0).then(|| crate::views::ExpectedEarnings {
        micro_credits_per_busy_hour: (micro as f64 * 3_600_000.0 / busy_ms as f64) as u64,
        jobs: count,
        busy_s: busy_ms as f64 / 1000.0,
    })
}

/// How many days the Earnings page looks back.
const REPORT_DAYS: u32 = 30;
/// Jobs read at most for the per-model breakdown (newest first).
const BY_MODEL_SCAN_LIMIT: usize = 200_000;

/// The Earnings page's figures from `ledger` at `now_ms`, priced with `config`'s electricity
/// price and credit value.
pub fn earnings_report(
    ledger: &Ledger,
    config: &NodeConfig,
    demo: bool,
    now_ms: u64,
) -> Result<crate::views::EarningsReport, hearth_ledger::LedgerError> {
    use crate::views::{EarningsReport, HourEarnings, ModelEarnings, PeriodEarnings};
    const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;
    let from = now_ms.saturating_sub(u64::from(REPORT_DAYS) * MS_PER_DAY);
    let hours: Vec<HourEarnings> = ledger
        .hourly(from, now_ms + 1)?
        .into_iter()
        .map(|(at_ms, t)| HourEarnings {
            at_ms,
            micro_credits: t.micro_credits,
            jobs_completed: t.jobs_completed,
            jobs_failed: t.jobs_failed,
            energy_wh: t.energy_wh,
            energy_estimated: t.energy_estimated,
        })
        .collect();
    let periods = [1u32, 7, REPORT_DAYS]
        .into_iter()
        .map(|days| {
            let since = now_ms.saturating_sub(u64::from(days) * MS_PER_DAY);
            let inside = hours.iter().filter(|h| h.at_ms + MS_PER_HOUR > since);
            let mut period = PeriodEarnings {
                days,
                micro_credits: 0,
                jobs_completed: 0,
                energy_wh: 0.0,
                energy_estimated: false,
                value: 0.0,
                electricity_cost: 0.0,
                net: 0.0,
            };
            for hour in inside {
                period.micro_credits += hour.micro_credits;
                period.jobs_completed += hour.jobs_completed;
                period.energy_wh += hour.energy_wh;
                period.energy_estimated |= hour.energy_estimated;
            }
            period.value = period.micro_credits as f64 / 1e6 * config.credit_value;
            period.electricity_cost = period.energy_wh / 1000.0 * config.electricity_price_per_kwh;
            period.net = period.value - period.electricity_cost;
            period
        })
        .collect();
    let mut models: std::collections::BTreeMap<String, ModelEarnings> = Default::default();
    let (_, recent) = ledger.jobs_page(from, now_ms + 1, 0, BY_MODEL_SCAN_LIMIT, None)?;
    for job in recent
        .iter()
        .filter(|j| j.status == hearth_ledger::JobStatus::Completed)
    {
        let entry = models
            .entry(job.model.clone())
            .or_insert_with(|| ModelEarnings {
                model: job.model.clone(),
                jobs: 0,
                micro_credits: 0,
            });
        entry.jobs += 1;
        entry.micro_credits += job.micro_credits;
    }
    let mut by_model: Vec<ModelEarnings> = models.into_values().collect();
    by_model.sort_by_key(|m| std::cmp::Reverse(m.micro_credits));
    Ok(EarningsReport {
        hours,
        periods,
        by_model,
        price_per_kwh: config.electricity_price_per_kwh,
        currency: config.currency.clone(),
        credit_value: config.credit_value,
        demo,
        now_ms,
    })
}

/// One page of `ledger`'s jobs for `query` (an id search ignores the other filters).
pub fn job_page(
    ledger: &Ledger,
    query: &crate::views::JobQuery,
) -> Result<crate::views::JobPage, hearth_ledger::LedgerError> {
    use crate::views::{JobPage, JobQuery};
    let limit = query.limit.clamp(1, JobQuery::MAX_LIMIT) as usize;
    let offset = usize::try_from(query.offset).unwrap_or(usize::MAX);
    if let Some(prefix) = query
        .id_prefix
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (total, found) = ledger.jobs_with_id_prefix(prefix, offset, limit)?;
        return Ok(JobPage {
            total,
            offset: query.offset,
            jobs: found.iter().map(JobSummary::from).collect(),
        });
    }
    let state = query.state;
    let model = query.model.clone().filter(|m| !m.is_empty());
    let keep = move |record: &hearth_ledger::JobRecord| {
        state.is_none_or(|s| JobState::from(record.status) == s)
            && model.as_deref().is_none_or(|m| record.model == m)
    };
    let filtered = state.is_some() || query.model.as_deref().is_some_and(|m| !m.is_empty());
    let (total, jobs) = ledger.jobs_page(
        query.from_ms.unwrap_or(0),
        query.to_ms.unwrap_or(u64::MAX),
        offset,
        limit,
        filtered.then_some(&keep as &dyn Fn(&hearth_ledger::JobRecord) -> bool),
    )?;
    Ok(JobPage {
        total,
        offset: query.offset,
        jobs: jobs.iter().map(JobSummary::from).collect(),
    })
}

/// Today's totals, the last hour's credits, the lifetime total and what of it is payable under
/// `pool`'s terms, from the ledger's hourly table.
pub fn earnings(ledger: &Ledger, pool: &PoolStatus) -> Earnings {
    let demo = pool.demo;
    let now = now_unix_ms();
    let today = ledger.totals_between(local_midnight_ms(), now + 1);
    let hour = ledger.totals_between(now.saturating_sub(MS_PER_HOUR), now + 1);
    // Payable: the hours before the settlement time (unknown terms: none yet); pending: the
    // hours since. Together they are the lifetime total, each hour read once.
    let settled_before = pool
        .terms
        .as_ref()
        .map_or(0, |t| now.saturating_sub(t.settlement_ms));
    let split = settled_before.div_ceil(MS_PER_HOUR) * MS_PER_HOUR;
    let payable = ledger.totals_between(0, split);
    let pending = ledger.totals_between(split, now + 1);
    match (today, hour, payable, pending) {
        (Ok(today), Ok(hour), Ok(payable), Ok(pending)) => Earnings {
            today_micro_credits: today.micro_credits,
            today_jobs: today.jobs_completed,
            today_failed: today.jobs_failed,
            last_hour_micro_credits: hour.micro_credits,
            lifetime_micro_credits: payable.micro_credits.saturating_add(pending.micro_credits),
            today_energy_wh: today.energy_wh,
            today_energy_estimated: today.energy_estimated,
            pending_micro_credits: pending.micro_credits,
            payable_micro_credits: payable.micro_credits,
            demo,
        },
        (Err(error), ..) | (_, Err(error), ..) | (_, _, Err(error), _) | (.., Err(error)) => {
            tracing::error!(%error, "could not total the ledger");
            Earnings {
                demo,
                ..Earnings::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn paid(id: &str, ended_unix_ms: u64, micro_credits: u64) -> hearth_ledger::JobRecord {
        let mut job =
            hearth_ledger::JobRecord::started(id, "all-minilm-l6-v2", "embeddings", ended_unix_ms);
        job.ended_unix_ms = Some(ended_unix_ms);
        job.status = hearth_ledger::JobStatus::Completed;
        job.micro_credits = micro_credits;
        job.energy_wh = Some(0.5);
        job.energy_estimated = true;
        job
    }

    #[test]
    fn earnings_split_pending_from_payable_by_the_pools_settlement_time() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let now = now_unix_ms();
        let day = 24 * MS_PER_HOUR;
        ledger
            .import_jobs(&[
                paid("old", now - 3 * day, 700),
                paid("recent", now - 2 * MS_PER_HOUR, 40),
            ])
            .unwrap();
        let mut pool = PoolStatus::default();
        // No terms yet: nothing is known to be payable.
        let unknown = earnings(&ledger, &pool);
        assert_eq!(unknown.lifetime_micro_credits, 740);
        assert_eq!(
            (unknown.pending_micro_credits, unknown.payable_micro_credits),
            (740, 0)
        );
        pool.terms = Some(crate::status::PoolTerms {
            credit_value: 0.5,
            currency: "EUR".into(),
            settlement_ms: day,
        });
        let settled = earnings(&ledger, &pool);
        assert_eq!(
            (settled.pending_micro_credits, settled.payable_micro_credits),
            (40, 700)
        );
    }
}
