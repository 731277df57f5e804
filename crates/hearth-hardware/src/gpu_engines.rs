//! Which processes keep a GPU busy on Windows: the "GPU Engine" performance counters, one
//! instance per process and engine (what Task Manager's GPU column reads), for the pause
//! policy's "another program is using the GPU".
//!
//! An instance is named `pid_<pid>_luid_<high>_<low>_phys_<n>_eng_<n>_engtype_<type>` and its
//! `Utilization Percentage` is how busy that process kept that engine since the last reading.
//! Only engines that run shaders count (3D, compute, CUDA, graphics queues); video decoding
//! and copy engines are fixed-function units that do not slow Hearth's work.

use std::collections::BTreeMap;

/// One "GPU Engine" counter instance's name, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInstance {
    pub pid: u32,
    /// The adapter, as its LUID's two halves.
    pub adapter: String,
    pub engine: u32,
    /// `3D`, `Compute_0`, `VideoDecode`, `Copy`, `Cuda`, `High Priority 3D`, ...
    pub engine_type: String,
}

impl EngineInstance {
    /// Parse an instance name; `None` for names not in the counter's format.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("pid_")?;
        let (pid, rest) = rest.split_once("_luid_")?;
        let (adapter, rest) = rest.split_once("_phys_")?;
        let (_phys, rest) = rest.split_once("_eng_")?;
        let (engine, engine_type) = rest.split_once("_engtype_")?;
        Some(Self {
            pid: pid.parse().ok()?,
            adapter: adapter.to_owned(),
            engine: engine.parse().ok()?,
            engine_type: engine_type.to_owned(),
        })
    }

    /// Whether the engine runs shaders (and so competes with Hearth's work).
    pub fn runs_shaders(&self) -> bool {
        ["3D", "Compute", "Graphics", "Cuda"]
            .iter()
            .any(|kind| self.engine_type.contains(kind))
    }
}

/// From one reading of every instance (name, utilisation in percent): each process's busiest
/// shader engine, in percent, for processes above zero. `exclude_pid` (Hearth) is left out.
pub fn busiest_engine_by_process(
    readings: &[(String, f64)],
    exclude_pid: u32,
) -> BTreeMap<u32, f64> {
    let mut busiest: BTreeMap<u32, f64> = BTreeMap::new();
    for (name, percent) in readings {
        let Some(instance) = EngineInstance::parse(name) else {
            continue;
        };
        if instance.pid == exclude_pid
            || !instance.runs_shaders()
            || percent.is_nan()
            || *percent <= 0.0
        {
            continue;
        }
        let entry = busiest.entry(instance.pid).or_insert(0.0);
        *entry = entry.max(percent.min(100.0));
    }
    busiest
}

/// The "GPU Engine" counters, read through PDH. Each [`GpuEngineCounters::read`] gives the
/// utilisation since the one before.
#[cfg(windows)]
#[derive(Debug)]
pub struct GpuEngineCounters {
    query: windows::Win32::System::Performance::PDH_HQUERY,
    counter: windows::Win32::System::Performance::PDH_HCOUNTER,
}

// The query's handles are used from one thread at a time (&mut self), which PDH allows.
#[cfg(windows)]
#[allow(unsafe_code)]
// SAFETY: PDH handles are process-wide and not tied to the thread that opened them.
unsafe impl Send for GpuEngineCounters {}

#[cfg(windows)]
#[allow(unsafe_code)]
impl GpuEngineCounters {
    /// Open the counters; an error where the system has none (Windows before 10 1709, Wine).
    pub fn open() -> Result<Self, String> {
        use windows::Win32::System::Performance::{
            PDH_HCOUNTER, PDH_HQUERY, PdhAddEnglishCounterW, PdhCloseQuery, PdhCollectQueryData,
            PdhOpenQueryW,
        };
        use windows::core::{PCWSTR, w};
        let mut query = PDH_HQUERY::default();
        // SAFETY: out-pointer to a local; no data source (the live system).
        let status = unsafe { PdhOpenQueryW(PCWSTR::null(), 0, &mut query) };
        if status != 0 {
            return Err(format!("PdhOpenQueryW failed ({status:#x})"));
        }
        let mut counter = PDH_HCOUNTER::default();
        // SAFETY: a live query, a static wide string, an out-pointer to a local.
        let status = unsafe {
            PdhAddEnglishCounterW(
                query,
                w!(r"\GPU Engine(*)\Utilization Percentage"),
                0,
                &mut counter,
            )
        };
        if status != 0 {
            // SAFETY: the query opened above, closed once.
            unsafe { PdhCloseQuery(query) };
            return Err(format!(
                "this system has no GPU Engine performance counters ({status:#x})"
            ));
        }
        // A rate needs a reading to start from.
        // SAFETY: a live query.
        unsafe { PdhCollectQueryData(query) };
        Ok(Self { query, counter })
    }

    /// Every instance's utilisation (percent) since the last read.
    pub fn read(&mut self) -> Result<Vec<(String, f64)>, String> {
        use windows::Win32::System::Performance::{
            PDH_CSTATUS_NEW_DATA, PDH_CSTATUS_VALID_DATA, PDH_FMT_COUNTERVALUE_ITEM_W,
            PDH_FMT_DOUBLE, PDH_MORE_DATA, PdhCollectQueryData, PdhGetFormattedCounterArrayW,
        };
        // SAFETY: a live query.
        let status = unsafe { PdhCollectQueryData(self.query) };
        if status != 0 {
            return Err(format!("PdhCollectQueryData failed ({status:#x})"));
        }
        let (mut bytes, mut count) = (0u32, 0u32);
        // SAFETY: asks only for the size (no buffer).
        let status = unsafe {
            PdhGetFormattedCounterArrayW(self.counter, PDH_FMT_DOUBLE, &mut bytes, &mut count, None)
        };
        if status != PDH_MORE_DATA {
            // No instances (no process uses a GPU) is not an error.
            return Ok(Vec::new());
        }
        // Items first, then the names they point to, in one buffer of `bytes` bytes; u64s keep
        // it aligned for the items.
        let mut buffer = vec![0u64; (bytes as usize).div_ceil(8)];
        let items = buffer.as_mut_ptr().cast::<PDH_FMT_COUNTERVALUE_ITEM_W>();
        // SAFETY: the buffer holds `bytes` bytes, as PDH asked for.
        let status = unsafe {
            PdhGetFormattedCounterArrayW(
                self.counter,
                PDH_FMT_DOUBLE,
                &mut bytes,
                &mut count,
                Some(items),
            )
        };
        if status != 0 {
            return Err(format!("PdhGetFormattedCounterArrayW failed ({status:#x})"));
        }
        let mut readings = Vec::with_capacity(count as usize);
        for index in 0..count as usize {
            // SAFETY: PDH wrote `count` items at the start of the buffer, each name a
            // NUL-terminated wide string inside it.
            let (name, value) = unsafe {
                let item = &*items.add(index);
                let status = item.FmtValue.CStatus;
                if status != PDH_CSTATUS_VALID_DATA && status != PDH_CSTATUS_NEW_DATA {
                    continue;
                }
                (
                    item.szName.to_string().unwrap_or_default(),
                    item.FmtValue.Anonymous.doubleValue,
                )
            };
            readings.push((name, value));
        }
        Ok(readings)
    }
}

#[cfg(windows)]
#[allow(unsafe_code)]
impl Drop for GpuEngineCounters {
    fn drop(&mut self) {
        // SAFETY: the query this value opened, closed once.
        unsafe { windows::Win32::System::Performance::PdhCloseQuery(self.query) };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One reading in the counters' format: a game on the 3D engine, a video in a browser
    /// (decode engine busy, 3D barely), Hearth itself on compute, the desktop compositor, and
    /// an instance of another counter set's format.
    fn reading() -> Vec<(String, f64)> {
        let luid = "0x00000000_0x0000D1B2";
        let engine = |pid: u32, eng: u32, kind: &str, percent: f64| {
            (
                format!("pid_{pid}_luid_{luid}_phys_0_eng_{eng}_engtype_{kind}"),
                percent,
            )
        };
        vec![
            engine(8120, 0, "3D", 87.5),
            engine(8120, 2, "Copy", 12.0),
            engine(8120, 6, "Compute_0", 4.0),
            engine(5544, 0, "3D", 1.5),
            engine(5544, 4, "VideoDecode", 35.0),
            engine(4242, 6, "Compute_0", 99.0),
            engine(1204, 0, "3D", 3.25),
            engine(1300, 0, "3D", 0.0),
            ("_Total".into(), 100.0),
        ]
    }

    /// Run as a Windows program. Wine has no GPU Engine counters: opening them says so (and
    /// the monitor then watches no other program's GPU use) instead of failing later.
    #[cfg(windows)]
    #[test]
    fn on_windows_the_counters_are_read_or_their_absence_is_told() {
        let under_wine = std::env::var_os("WINEPREFIX").is_some();
        match GpuEngineCounters::open() {
            Ok(mut counters) => {
                assert!(!under_wine, "Wine has grown GPU Engine counters: test them");
                for (name, percent) in counters.read().unwrap() {
                    assert!((0.0..=100.0).contains(&percent), "{name}: {percent}");
                }
            }
            Err(reason) => assert!(
                reason.contains("no GPU Engine performance counters"),
                "{reason}"
            ),
        }
    }

    #[test]
    fn instance_names_are_taken_apart() {
        let instance = EngineInstance::parse(
            "pid_8120_luid_0x00000000_0x0000D1B2_phys_0_eng_9_engtype_High Priority 3D",
        )
        .unwrap();
        assert_eq!(instance.pid, 8120);
        assert_eq!(instance.adapter, "0x00000000_0x0000D1B2");
        assert_eq!(instance.engine, 9);
        assert_eq!(instance.engine_type, "High Priority 3D");
        assert!(instance.runs_shaders());
        assert_eq!(EngineInstance::parse("_Total"), None);
        assert_eq!(
            EngineInstance::parse("pid_x_luid_0_phys_0_eng_0_engtype_3D"),
            None
        );
    }

    #[test]
    fn each_process_counts_its_busiest_shader_engine_and_hearth_none() {
        let busiest = busiest_engine_by_process(&reading(), 4242);
        assert_eq!(
            busiest.into_iter().collect::<Vec<_>>(),
            [(1204, 3.25), (5544, 1.5), (8120, 87.5)],
            "the game at its 3D engine's figure; the video's decode engine does not count; \
             Hearth (4242) and idle processes are left out"
        );
    }
}
