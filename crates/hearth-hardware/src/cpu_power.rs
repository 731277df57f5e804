//! The processor's power and temperature, read from sysfs where the kernel publishes them.
//!
//! Power: the RAPL energy counters under `class/powercap` (Intel, and AMD Zen on Linux 5.8+),
//! summed over the packages; the difference between two readings over the time between them is
//! the power measured. Where the counters are missing or unreadable (most kernels since 2020
//! let only root read them), power is *estimated* as the machine's CPU use times the processor's
//! power (configured, or a typical desktop part's), and every figure built on it says so.
//!
//! Temperature: the first hwmon sensor of a CPU driver (`k10temp`, `coretemp`, `zenpower`,
//! `cpu_thermal`), `temp1_input` in millidegrees.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::amd::read_number;

/// The processor power assumed for estimates when the owner has not set theirs: a typical
/// desktop part's rated power (TDP).
pub const TYPICAL_CPU_WATTS: f32 = 65.0;

/// hwmon drivers that report the processor's temperature, most specific first.
const CPU_SENSORS: [&str; 4] = ["k10temp", "coretemp", "zenpower", "cpu_thermal"];

/// Package power of the last interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuPowerReading {
    /// Watts over the interval before the reading.
    pub watts: f32,
    /// True when `watts` is CPU use × the processor's power, not a measurement.
    pub estimated: bool,
}

/// Reads the processor's power (measured or estimated) and temperature.
#[derive(Debug)]
pub struct CpuPower {
    packages: Vec<PathBuf>,
    /// The last counter total (µJ) and when it was read.
    last: Option<(Instant, u64)>,
    /// Where the counters wrap, summed over the packages (µJ).
    wrap_uj: u64,
    temperature: Option<PathBuf>,
    assumed_watts: f32,
}

impl CpuPower {
    /// Read under `sysfs` (`/sys` on Linux); estimate with `assumed_watts` where nothing
    /// is measured.
    pub fn new(sysfs: impl AsRef<Path>, assumed_watts: f32) -> Self {
        let sysfs = sysfs.as_ref();
        let packages = rapl_packages(sysfs);
        let wrap_uj = packages
            .iter()
            .filter_map(|p| read_number(&p.join("max_energy_range_uj")))
            .sum();
        Self {
            packages,
            last: None,
            wrap_uj,
            temperature: cpu_temperature_file(sysfs),
            assumed_watts: if assumed_watts.is_finite() && assumed_watts > 0.0 {
                assumed_watts
            } else {
                TYPICAL_CPU_WATTS
            },
        }
    }

    /// No sensors at all: every figure estimated with `assumed_watts`.
    pub fn estimated(assumed_watts: f32) -> Self {
        Self::new(Path::new("/nonexistent"), assumed_watts)
    }

    /// The processor's power assumed for estimates.
    pub fn assumed_watts(&self) -> f32 {
        self.assumed_watts
    }

    /// Power over the interval ending `now`, given the machine's CPU use (0..=100) in it.
    pub fn read(&mut self, now: Instant, cpu_percent: f32) -> CpuPowerReading {
        let estimate = CpuPowerReading {
            watts: self.assumed_watts * cpu_percent.clamp(0.0, 100.0) / 100.0,
            estimated: true,
        };
        if self.packages.is_empty() {
            return estimate;
        }
        let total: Option<u64> = self
            .packages
            .iter()
            .map(|p| read_number(&p.join("energy_uj")))
            .sum();
        let Some(total) = total else {
            // Unreadable now (permissions): stop trying.
            self.packages.clear();
            return estimate;
        };
        let previous = self.last.replace((now, total));
        let Some((then, before)) = previous else {
            return estimate;
        };
        let seconds = now.duration_since(then).as_secs_f64();
        if seconds <= 0.0 {
            return estimate;
        }
        let used = if total >= before {
            total - before
        } else {
            // The counter wrapped.
            self.wrap_uj.saturating_sub(before).saturating_add(total)
        };
        CpuPowerReading {
            watts: (used as f64 / 1e6 / seconds) as f32,
            estimated: false,
        }
    }

    /// The processor's temperature in °C, where a sensor reports it.
    pub fn temperature_c(&self) -> Option<f32> {
        let milli = read_number(self.temperature.as_deref()?)?;
        Some(milli as f32 / 1000.0)
    }
}

/// The package domains: `intel-rapl:N` (not the sub-domains `intel-rapl:N:M`).
fn rapl_packages(sysfs: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sysfs.join("class/powercap")) else {
        return Vec::new();
    };
    let mut packages: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("intel-rapl:")
                .is_some_and(|n| !n.contains(':'))
        })
        .map(|e| e.path())
        .filter(|p| read_number(&p.join("energy_uj")).is_some())
        .collect();
    packages.sort();
    packages
}

/// `temp1_input` of the first CPU sensor, by the preference in [`CPU_SENSORS`].
fn cpu_temperature_file(sysfs: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sysfs.join("class/hwmon")).ok()?;
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = std::fs::read_to_string(e.path().join("name")).ok()?;
            let rank = CPU_SENSORS.iter().position(|s| *s == name.trim())?;
            let file = e.path().join("temp1_input");
            file.exists().then_some((rank, file))
        })
        .collect();
    found.sort();
    found.into_iter().next().map(|(_, file)| file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn rapl_counters_give_measured_power_and_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let rapl = dir.path().join("class/powercap/intel-rapl:0");
        write(&rapl.join("energy_uj"), "1000000\n");
        write(&rapl.join("max_energy_range_uj"), "40000000\n");
        // A sub-domain (the cores) is part of the package and not added again.
        write(
            &dir.path().join("class/powercap/intel-rapl:0:0/energy_uj"),
            "5\n",
        );
        write(&dir.path().join("class/hwmon/hwmon2/name"), "k10temp\n");
        write(
            &dir.path().join("class/hwmon/hwmon2/temp1_input"),
            "54250\n",
        );
        write(&dir.path().join("class/hwmon/hwmon0/name"), "nvme\n");
        write(
            &dir.path().join("class/hwmon/hwmon0/temp1_input"),
            "40000\n",
        );
        let mut cpu = CpuPower::new(dir.path(), 65.0);
        assert_eq!(cpu.temperature_c(), Some(54.25));
        let start = Instant::now();
        let first = cpu.read(start, 50.0);
        assert_eq!(
            first,
            CpuPowerReading {
                watts: 32.5,
                estimated: true
            }
        );
        // 30 J over 2 s: 15 W.
        write(&rapl.join("energy_uj"), "31000000\n");
        let second = cpu.read(start + Duration::from_secs(2), 50.0);
        assert_eq!(
            second,
            CpuPowerReading {
                watts: 15.0,
                estimated: false
            }
        );
        // The counter wraps at 40 J: from 31 J to 1 J is 10 J, over 1 s.
        write(&rapl.join("energy_uj"), "1000000\n");
        let wrapped = cpu.read(start + Duration::from_secs(3), 50.0);
        assert_eq!(
            wrapped,
            CpuPowerReading {
                watts: 10.0,
                estimated: false
            }
        );
    }

    #[test]
    fn without_sensors_power_is_estimated_from_cpu_use() {
        let mut cpu = CpuPower::estimated(120.0);
        let reading = cpu.read(Instant::now(), 25.0);
        assert_eq!(
            reading,
            CpuPowerReading {
                watts: 30.0,
                estimated: true
            }
        );
        assert_eq!(cpu.temperature_c(), None);
        assert_eq!(
            CpuPower::estimated(f32::NAN).assumed_watts(),
            TYPICAL_CPU_WATTS
        );
    }
}
