//! Resource use over time. The sampler's one-second readings are averaged into minutes and
//! kept in the ledger for a week, so the window's hour and day charts survive restarts; a
//! chart asks for a span and gets at most [`MAX_POINTS`] points, each an average. Live readings
//! also go to the node's subscribers and the pause policy (temperature, GPU memory), and give
//! each job its energy.

use std::sync::Arc;

use hearth_hardware::Sampler;
use hearth_ledger::Ledger;
use tokio::task::JoinHandle;

use crate::Node;
use crate::executor::Executor;
use crate::status::{GpuLive, NodeEvent, Telemetry};

/// One stored record covers this long.
pub const MINUTE_MS: u64 = 60_000;
/// Stored records are kept this long.
pub const KEEP_MS: u64 = 8 * 24 * 60 * MINUTE_MS;
/// The most points a chart is given.
pub const MAX_POINTS: usize = 240;
/// Spans up to this long come from the one-second readings in memory; longer ones from the
/// stored minutes.
pub const LIVE_SPAN_MS: u64 = 10 * MINUTE_MS;

fn mean(values: impl Iterator<Item = f32>) -> Option<f32> {
    let (sum, n) = values.fold((0.0f64, 0u32), |(s, n), v| (s + f64::from(v), n + 1));
    (n > 0).then(|| (sum / f64::from(n)) as f32)
}

fn mean_u64(values: impl Iterator<Item = u64>) -> Option<u64> {
    let (sum, n) = values.fold((0u128, 0u128), |(s, n), v| (s + u128::from(v), n + 1));
    (n > 0).then(|| u64::try_from(sum / n).unwrap_or(u64::MAX))
}

impl Telemetry {
    /// The average of `samples` (time: the last one's), GPU by GPU; a figure a GPU did not
    /// report in any sample stays unknown. `None` for no samples.
    pub fn average(samples: &[Telemetry]) -> Option<Telemetry> {
        let last = samples.last()?;
        let f = |get: fn(&Telemetry) -> f32| mean(samples.iter().map(get)).unwrap_or(0.0);
        let u = |get: fn(&Telemetry) -> u64| mean_u64(samples.iter().map(get)).unwrap_or(0);
        let gpus = last
            .gpus
            .iter()
            .map(|template| {
                let same: Vec<&GpuLive> = samples
                    .iter()
                    .flat_map(|s| s.gpus.iter().filter(|g| g.id == template.id))
                    .collect();
                let of =
                    |get: fn(&GpuLive) -> Option<f32>| mean(same.iter().filter_map(|g| get(g)));
                let of_u =
                    |get: fn(&GpuLive) -> Option<u64>| mean_u64(same.iter().filter_map(|g| get(g)));
                GpuLive {
                    utilisation_percent: of(|g| g.utilisation_percent),
                    vram_used_bytes: of_u(|g| g.vram_used_bytes),
                    hearth_vram_bytes: of_u(|g| g.hearth_vram_bytes),
                    temperature_c: of(|g| g.temperature_c),
                    power_w: of(|g| g.power_w),
                    fan_percent: of(|g| g.fan_percent),
                    energy_estimated: same.iter().any(|g| g.energy_estimated),
                    ..template.clone()
                }
            })
            .collect();
        Some(Telemetry {
            at_unix_ms: last.at_unix_ms,
            cpu_percent: f(|t| t.cpu_percent),
            hearth_cpu_percent: f(|t| t.hearth_cpu_percent),
            logical_cores: last.logical_cores,
            ram_used_bytes: u(|t| t.ram_used_bytes),
            ram_total_bytes: last.ram_total_bytes,
            hearth_ram_bytes: u(|t| t.hearth_ram_bytes),
            cpu_power_w: f(|t| t.cpu_power_w),
            cpu_power_estimated: samples.iter().any(|t| t.cpu_power_estimated),
            cpu_temperature_c: mean(samples.iter().filter_map(|t| t.cpu_temperature_c)),
            gpus,
        })
    }
}

/// At most `max` points covering `points` (oldest first): consecutive runs averaged.
pub fn downsample(points: Vec<Telemetry>, max: usize) -> Vec<Telemetry> {
    if points.len() <= max || max == 0 {
        return points;
    }
    let per = points.len().div_ceil(max);
    points.chunks(per).filter_map(Telemetry::average).collect()
}

/// Resource use over the last `span_ms` before `now_ms`, oldest first, at most
/// [`MAX_POINTS`] points: from the sampler's readings for short spans, else from the minutes
/// stored in the ledger followed by the minutes not stored yet.
pub fn history(
    sampler: Option<&Sampler>,
    ledger: &Ledger,
    span_ms: u64,
    now_ms: u64,
) -> Result<Vec<Telemetry>, hearth_ledger::LedgerError> {
    let from = now_ms.saturating_sub(span_ms);
    let live = |since: u64| -> Vec<Telemetry> {
        sampler.map_or_else(Vec::new, |sampler| {
            sampler
                .history_since(since)
                .iter()
                .map(|s| Telemetry::from(s.as_ref()))
                .collect()
        })
    };
    if span_ms <= LIVE_SPAN_MS && sampler.is_some() {
        return Ok(downsample(live(from), MAX_POINTS));
    }
    let mut points: Vec<Telemetry> = ledger
        .telemetry_between::<Telemetry>(from, now_ms.saturating_add(1))?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    // The minutes not stored yet (the current one, and any since the last record) from the
    // readings in memory, averaged a minute at a time like the stored ones.
    let stored_until = points.last().map_or(from, |p| p.at_unix_ms + 1);
    let recent = live(stored_until);
    for minute in recent.chunk_by(|a, b| a.at_unix_ms / MINUTE_MS == b.at_unix_ms / MINUTE_MS) {
        points.extend(Telemetry::average(minute));
    }
    Ok(downsample(points, MAX_POINTS))
}

/// Average the sampler's readings into minutes and store each in the ledger as it ends.
pub fn record_minutes(
    sampler: &Sampler,
    ledger: Arc<Ledger>,
    storage: Arc<crate::storage::StorageHealth>,
) -> JoinHandle<()> {
    let mut samples = sampler.subscribe();
    tokio::spawn(async move {
        let mut minute: Vec<Telemetry> = Vec::new();
        loop {
            let sample = match samples.recv().await {
                Ok(sample) => sample,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let reading = Telemetry::from(sample.as_ref());
            let ends_minute = minute.first().is_some_and(|first| {
                first.at_unix_ms / MINUTE_MS != reading.at_unix_ms / MINUTE_MS
            });
            if ends_minute && let Some(average) = Telemetry::average(&minute) {
                let ledger = Arc::clone(&ledger);
                let stored = tokio::task::spawn_blocking(move || {
                    ledger.record_telemetry(average.at_unix_ms, &average, KEEP_MS)
                })
                .await;
                if let Ok(Err(error)) = stored {
                    tracing::warn!(%error, "resource history not stored");
                    if let Some(failure) = crate::storage::WriteFailure::from_ledger(&error) {
                        storage.failed(&failure);
                    }
                }
                minute.clear();
            }
            minute.push(reading);
        }
    })
}

/// Telemetry to the node's subscribers, and the hottest GPU's temperature to the pause policy.
/// With a VRAM limit, the GPU's memory figures and what Hearth's models hold decide whether
/// memory is short, for the GPU the models run on.
pub(crate) fn forward_telemetry(
    node: &Node,
    sampler: &Sampler,
    policy: Option<crate::pause::watcher::PolicyInputs>,
    vram: Option<crate::pause::policy::VramGuard>,
    executor: Arc<Executor>,
) -> JoinHandle<()> {
    let mut samples = sampler.subscribe();
    let node = node.clone();
    let mut vram = vram;
    tokio::spawn(async move {
        let mut was_short = false;
        loop {
            match samples.recv().await {
                Ok(sample) => {
                    let hottest = sample
                        .gpus
                        .iter()
                        .filter_map(|g| g.temperature_c)
                        .reduce(f32::max);
                    if let (Some(policy), Some(celsius)) = (&policy, hottest) {
                        policy.send(crate::pause::policy::Input::Temperature(celsius));
                    }
                    if let (Some(policy), Some(guard)) = (&policy, &mut vram) {
                        let ours = executor.device().adapter.as_ref().map(|a| a.name.as_str());
                        let gpu = sample
                            .gpus
                            .iter()
                            .filter(|g| g.vram_total_bytes.is_some() && g.vram_used_bytes.is_some())
                            .find(|g| ours.is_none_or(|name| g.name == name))
                            .or_else(|| sample.gpus.iter().find(|g| g.vram_total_bytes.is_some()));
                        if let Some(gpu) = gpu {
                            let short = guard.observe(
                                gpu.vram_total_bytes.unwrap_or(0),
                                gpu.vram_used_bytes.unwrap_or(0),
                                executor.loaded_bytes(),
                            );
                            if short != was_short {
                                tracing::info!(short, gpu = %gpu.name, "GPU memory pressure changed");
                                policy.send(crate::pause::policy::Input::VramPressure(short));
                                was_short = short;
                            }
                        }
                    }
                    node.announce(NodeEvent::Telemetry {
                        telemetry: live_telemetry(&sample, &executor),
                    });
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

/// Live telemetry from a sample, with what Hearth's models hold on the GPU they run on.
pub(crate) fn live_telemetry(
    sample: &hearth_hardware::TelemetrySample,
    executor: &Executor,
) -> Telemetry {
    let mut telemetry = Telemetry::from(sample);
    let ours = executor.device().adapter.as_ref().filter(|a| {
        a.is_hardware && executor.device().backend == hearth_inference::ComputeBackend::Wgpu
    });
    if let Some(adapter) = ours
        && let Some(gpu) = telemetry.gpus.iter_mut().find(|g| g.name == adapter.name)
    {
        gpu.hearth_vram_bytes = Some(executor.loaded_bytes());
    }
    telemetry
}

/// Energy Hearth used between `from` and `to` (Unix ms): the GPUs' and its share of the
/// processor's (see [`energy_over`]).
pub(crate) fn energy_between(sampler: &Sampler, from: u64, to: u64) -> Option<(f64, bool)> {
    energy_over(
        &sampler.history_since(from),
        sampler.latest().as_deref(),
        from,
        to,
    )
}

/// Energy over `from..to` (Unix ms) from `samples`, each covering the interval before it and
/// counted in proportion to its overlap. The part after the newest reading (`latest`: a job
/// ends before the next one is taken) is extrapolated at that reading's power and marked
/// estimated. `None` with no reading at all (telemetry off, or the first second of a run).
fn energy_over(
    samples: &[Arc<hearth_hardware::TelemetrySample>],
    latest: Option<&hearth_hardware::TelemetrySample>,
    from: u64,
    to: u64,
) -> Option<(f64, bool)> {
    let latest = latest?;
    let mut total = 0.0;
    let mut estimated = false;
    for sample in samples {
        let end = sample.at_unix_ms;
        let start = end.saturating_sub((sample.interval_s * 1000.0) as u64);
        let overlap = end.min(to).saturating_sub(start.max(from));
        if overlap == 0 || end <= start {
            continue;
        }
        let share = overlap as f64 / (end - start) as f64;
        let (wh, sample_estimated) = sample.hearth_energy_wh();
        total += wh * share;
        estimated |= sample_estimated;
    }
    let uncovered = to.saturating_sub(latest.at_unix_ms.max(from));
    let latest_hours = latest.interval_s / 3600.0;
    if uncovered > 0 && latest_hours > 0.0 {
        let (wh, _) = latest.hearth_energy_wh();
        total += wh / latest_hours * (uncovered as f64 / 3_600_000.0);
        estimated = true;
    }
    Some((total, estimated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: u64, cpu: f32, gpu_power: Option<f32>) -> Telemetry {
        Telemetry {
            at_unix_ms: at,
            cpu_percent: cpu,
            hearth_cpu_percent: cpu / 2.0,
            logical_cores: 8,
            ram_used_bytes: 4 << 30,
            ram_total_bytes: 16 << 30,
            hearth_ram_bytes: 1 << 30,
            cpu_power_w: 30.0,
            cpu_power_estimated: true,
            cpu_temperature_c: None,
            gpus: vec![GpuLive {
                id: "nvml:0".into(),
                name: "RTX".into(),
                source: "NVIDIA driver (NVML)".into(),
                utilisation_percent: Some(cpu),
                vram_used_bytes: Some(2 << 30),
                vram_total_bytes: Some(12 << 30),
                hearth_vram_bytes: None,
                temperature_c: Some(60.0),
                power_w: gpu_power,
                fan_percent: None,
                energy_estimated: gpu_power.is_none(),
            }],
        }
    }

    #[test]
    fn averages_keep_unknowns_unknown_and_the_last_time() {
        let avg = Telemetry::average(&[
            reading(1_000, 20.0, Some(100.0)),
            reading(2_000, 40.0, None),
        ])
        .unwrap();
        assert_eq!(avg.at_unix_ms, 2_000);
        assert_eq!(avg.cpu_percent, 30.0);
        assert_eq!(avg.hearth_cpu_percent, 15.0);
        let gpu = &avg.gpus[0];
        assert_eq!(gpu.power_w, Some(100.0), "the one reading there was");
        assert_eq!(gpu.fan_percent, None);
        assert_eq!(gpu.utilisation_percent, Some(30.0));
        assert!(gpu.energy_estimated);
        assert_eq!(Telemetry::average(&[]), None);
    }

    #[test]
    fn downsampling_averages_runs_into_at_most_the_points_asked() {
        let points: Vec<Telemetry> = (0..1000)
            .map(|i| reading(i * 1000, (i % 10) as f32 * 10.0, Some(50.0)))
            .collect();
        let few = downsample(points.clone(), 240);
        assert!(few.len() <= 240 && few.len() >= 200, "{}", few.len());
        assert_eq!(few.last().unwrap().at_unix_ms, 999_000);
        // Runs of 5 alternate between averages of 0..40 and 50..90.
        assert_eq!(few[0].cpu_percent, 20.0);
        assert_eq!(few[1].cpu_percent, 70.0);
        assert_eq!(downsample(points[..10].to_vec(), 240).len(), 10);
    }

    fn sample_at(at_unix_ms: u64, cpu_energy_wh: f64) -> Arc<hearth_hardware::TelemetrySample> {
        Arc::new(hearth_hardware::TelemetrySample {
            at_unix_ms,
            interval_s: 1.0,
            cpu_percent: 50.0,
            ram_used_bytes: 0,
            ram_total_bytes: 0,
            process_cpu_percent: 100.0,
            process_memory_bytes: 0,
            logical_cores: 2,
            cpu_power_w: 36.0,
            cpu_power_estimated: false,
            cpu_temperature_c: None,
            process_cpu_energy_wh: cpu_energy_wh,
            gpus: vec![],
        })
    }

    #[test]
    fn a_jobs_energy_counts_the_readings_it_overlaps_and_extrapolates_past_the_newest() {
        // Two readings of 0.01 Wh a second (36 W), at 1 s and 2 s.
        let samples = [sample_at(1_000, 0.01), sample_at(2_000, 0.01)];
        let latest = samples.last().map(AsRef::as_ref);
        // A job from 0.5 s to 1.5 s: half of each reading, measured.
        let (wh, estimated) = energy_over(&samples, latest, 500, 1_500).unwrap();
        assert!((wh - 0.01).abs() < 1e-9, "{wh}");
        assert!(!estimated);
        // A short job after the newest reading: at its power, and said to be estimated.
        let (wh, estimated) = energy_over(&samples[2..], latest, 2_100, 2_350).unwrap();
        assert!((wh - 0.0025).abs() < 1e-9, "{wh}");
        assert!(estimated);
        // Half covered, half after.
        let (wh, estimated) = energy_over(&samples[1..], latest, 1_500, 2_500).unwrap();
        assert!((wh - 0.01).abs() < 1e-9, "{wh}");
        assert!(estimated);
        // No reading yet: unknown, not zero.
        assert_eq!(energy_over(&[], None, 0, 100), None);
    }
}
