//! Whether the GPU can be trusted with work, asked of a separate process.
//!
//! A GPU whose driver cannot compile Hearth's kernels does not always fail politely: under
//! Wine, wgpu's DX12 device has no shader compiler, and the first model loaded on it took the
//! whole program down (burn aborts when a panic escapes its weight loading). A broken or
//! outdated driver on a Windows PC can do the same, and a node that dies at every start
//! strands its owner. So before "auto" trusts a GPU, `hearth-models gpu-check` runs a small
//! computation on it in a child process and compares the answer with the processor's; a crash,
//! a hang or a wrong answer costs only the child, and the node works on the processor and says
//! why. The verdict is stored in the data folder and asked again when the adapter, its driver
//! or Hearth's version changes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::device::{AdapterSummary, ComputeDevice};
use crate::error::{InferenceError, Result};

/// The verdict's file in the data folder.
pub const GPU_CHECK_FILE: &str = "gpu-check.json";

/// `hearth-models`' command that runs the check and prints its verdict as JSON.
pub const GPU_CHECK_COMMAND: &str = "gpu-check";

/// How long the child may take: the first use of a GPU compiles its kernels, seconds on a
/// slow driver; a driver that hangs is not waited for longer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest difference allowed between the GPU's answer and the processor's (probabilities
/// of a softmax over 48 values; f32 arithmetic on either side differs by about 1e-7).
const TOLERANCE: f32 = 1e-4;

/// The check's operands: `[ROWS, INNER] × [INNER, COLS]`.
const ROWS: usize = 64;
const INNER: usize = 96;
const COLS: usize = 48;

/// What the check found for one adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuVerdict {
    /// The adapter, as wgpu names it.
    pub adapter: String,
    /// The graphics API it was reached through (Vulkan, Dx12, Metal).
    pub api: String,
    /// Its driver and version: a new driver is checked again.
    pub driver: String,
    /// The Hearth version that checked (a new version checks again).
    pub hearth_version: String,
    /// Whether the GPU computed the check's answer.
    pub passed: bool,
    /// The largest difference from the processor's answer, or why there was no answer.
    pub detail: String,
    /// When it was checked (seconds since the Unix epoch).
    pub checked_at_unix: u64,
}

impl GpuVerdict {
    fn new(adapter: &AdapterSummary, passed: bool, detail: String) -> Self {
        Self {
            adapter: adapter.name.clone(),
            api: adapter.api.clone(),
            driver: adapter.driver.clone(),
            hearth_version: env!("CARGO_PKG_VERSION").to_owned(),
            passed,
            detail,
            checked_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Whether this verdict is about `adapter` with this version of Hearth.
    fn is_for(&self, adapter: &AdapterSummary) -> bool {
        self.adapter == adapter.name
            && self.api == adapter.api
            && self.driver == adapter.driver
            && self.hearth_version == env!("CARGO_PKG_VERSION")
    }
}

/// The check's operands: fixed values in [-1, 1], different in every position.
fn operands() -> (Vec<f32>, Vec<f32>) {
    let value = |i: usize, k: usize| ((i * 37 + k * 11) % 29) as f32 / 14.0 - 1.0;
    let a = (0..ROWS * INNER).map(|i| value(i, 3)).collect();
    let b = (0..INNER * COLS).map(|i| value(i, 5)).collect();
    (a, b)
}

/// `softmax(A·B)` by rows, on the host in f64: the answer the GPU must give.
fn expected(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(ROWS * COLS);
    for row in 0..ROWS {
        let logits: Vec<f64> = (0..COLS)
            .map(|col| {
                (0..INNER)
                    .map(|k| f64::from(a[row * INNER + k]) * f64::from(b[k * COLS + col]))
                    .sum()
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        out.extend(logits.iter().map(|l| ((l - max).exp() / total) as f32));
    }
    out
}

/// Run the check on `device`: the largest difference between its `softmax(A·B)` and the
/// host's. Compiling and running kernels is what a broken driver fails at.
pub fn largest_difference(device: &ComputeDevice) -> Result<f32> {
    let (a, b) = operands();
    let want = expected(&a, &b);
    let a = Tensor::<2>::from_data(TensorData::new(a, [ROWS, INNER]), &device.device);
    let b = Tensor::<2>::from_data(TensorData::new(b, [INNER, COLS]), &device.device);
    let got = crate::weights::tensor_values(softmax(a.matmul(b), 1))?;
    if got.len() != want.len() {
        return Err(InferenceError::Execution(format!(
            "the GPU answered {} values for {}",
            got.len(),
            want.len()
        )));
    }
    Ok(got
        .iter()
        .zip(&want)
        .map(|(g, w)| {
            if g.is_finite() {
                (g - w).abs()
            } else {
                f32::INFINITY
            }
        })
        .fold(0.0, f32::max))
}

/// The check, in this process, on the GPU wgpu picks (what `hearth-models gpu-check` runs).
pub fn check_here() -> Result<GpuVerdict> {
    let device = ComputeDevice::wgpu()?;
    let adapter = device
        .adapter
        .clone()
        .ok_or_else(|| InferenceError::BackendUnavailable {
            backend: "wgpu",
            reason: "the wgpu device has no adapter".into(),
        })?;
    Ok(match largest_difference(&device) {
        Ok(difference) if difference <= TOLERANCE => GpuVerdict::new(
            &adapter,
            true,
            format!("largest difference from the processor's answer: {difference:.1e}"),
        ),
        Ok(difference) => GpuVerdict::new(
            &adapter,
            false,
            format!("it computed a wrong answer (off by {difference:.1e})"),
        ),
        Err(error) => GpuVerdict::new(&adapter, false, format!("it could not compute: {error}")),
    })
}

/// The verdict on `adapter`: the one stored in `data_dir` when it is for this adapter and
/// version, else `program gpu-check` run in a child process (`program` is `hearth-models`)
/// and stored. `None` when no check could be made (the program is missing): the GPU is then
/// used as before, unchecked.
pub fn verdict(data_dir: &Path, adapter: &AdapterSummary, program: &Path) -> Option<GpuVerdict> {
    let file = data_dir.join(GPU_CHECK_FILE);
    if let Some(stored) = std::fs::read(&file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<GpuVerdict>(&bytes).ok())
        .filter(|stored| stored.is_for(adapter))
    {
        return Some(stored);
    }
    let verdict = match run_child(program, CHECK_TIMEOUT) {
        Ok(ChildOutcome::Verdict(verdict)) => verdict,
        Ok(ChildOutcome::Failed(why)) => GpuVerdict::new(adapter, false, why),
        Err(error) => {
            tracing::warn!(%error, program = %program.display(), "the GPU could not be checked; it is used unchecked");
            return None;
        }
    };
    let bytes = serde_json::to_vec_pretty(&verdict).unwrap_or_default();
    if let Err(error) = hearth_instance::write_atomic(&file, &bytes) {
        // It is checked again at the next start.
        tracing::warn!(%error, "could not store the GPU check's verdict");
    }
    Some(verdict)
}

/// How the child ended.
enum ChildOutcome {
    /// It printed a verdict (passed or not).
    Verdict(GpuVerdict),
    /// It crashed, hung or printed nothing usable: why, in words.
    Failed(String),
}

/// Run `program gpu-check --json`, waiting at most `timeout`.
fn run_child(program: &Path, timeout: Duration) -> std::io::Result<ChildOutcome> {
    let mut child = Command::new(program)
        .args([GPU_CHECK_COMMAND, "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // No backtrace: the reason is the panic's first line.
        .env("RUST_BACKTRACE", "0")
        .spawn()?;
    // The pipes are drained while the child runs, so a chatty child cannot block on them.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        return Ok(ChildOutcome::Failed(format!(
            "it did not finish a small computation in {} s",
            timeout.as_secs()
        )));
    };
    // A verdict printed is the answer, passed or failed (a failed one also ends with an
    // error status).
    if let Ok(verdict) = serde_json::from_str::<GpuVerdict>(stdout.trim()) {
        return Ok(ChildOutcome::Verdict(verdict));
    }
    let said = hearth_cli::shorten(reason_in(&stderr).unwrap_or("it said nothing"), 200);
    Ok(ChildOutcome::Failed(format!(
        "the check ended with {status}: {said}"
    )))
}

/// What a failed child said of why: a panic's message (the line after "panicked at"), else
/// its last line (an abort's reason comes last; the loader's chatter comes first).
fn reason_in(stderr: &str) -> Option<&str> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("note:"))
        .collect();
    lines
        .iter()
        .position(|line| line.contains("panicked at"))
        .and_then(|at| lines.get(at + 1))
        .or(lines.last())
        .copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_processor_gives_the_expected_answer() {
        let difference = largest_difference(&ComputeDevice::cpu()).unwrap();
        assert!(difference <= TOLERANCE, "{difference}");
        // Rows of probabilities, not a trivial answer.
        let (a, b) = operands();
        let want = expected(&a, &b);
        for row in want.chunks(COLS) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(row.iter().copied().fold(0.0, f32::max) < 0.99);
        }
    }

    fn adapter() -> AdapterSummary {
        AdapterSummary {
            name: "Example GPU".into(),
            api: "Dx12".into(),
            is_hardware: true,
            driver: "Example driver 1.2.3".into(),
        }
    }

    /// A program standing in for `hearth-models`: a shell script.
    #[cfg(unix)]
    fn program(dir: &Path, script: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("checker");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[cfg(unix)]
    #[test]
    fn a_checker_that_aborts_fails_the_gpu_with_its_reason_and_the_verdict_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let aborts = program(
            dir.path(),
            "echo 'FXC D3DCompile error (Not implemented)' >&2; kill -ABRT $$",
        );
        let verdict = verdict(dir.path(), &adapter(), &aborts).unwrap();
        assert!(!verdict.passed);
        assert!(
            verdict
                .detail
                .contains("FXC D3DCompile error (Not implemented)"),
            "{}",
            verdict.detail
        );
        // Stored: a checker that would pass is not asked again for this adapter.
        let passes = program(dir.path(), "exit 0");
        assert_eq!(
            super::verdict(dir.path(), &adapter(), &passes),
            Some(verdict)
        );
        // Another adapter is checked afresh (and a checker printing no verdict fails it).
        let other = AdapterSummary {
            name: "Another GPU".into(),
            ..adapter()
        };
        let fresh = super::verdict(dir.path(), &other, &passes).unwrap();
        assert!(!fresh.passed);
        assert_eq!(fresh.adapter, "Another GPU");
    }

    #[test]
    fn the_reason_is_a_panics_message_or_the_last_line() {
        let panicked = "wine: configuration updated\n\nthread 'DSD-4-0' (292) panicked at \
                        cubecl-wgpu/src/runtime.rs:51:57:\nUnable to acquire wgpu device: \
                        Parent device is lost\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            reason_in(panicked),
            Some("Unable to acquire wgpu device: Parent device is lost")
        );
        assert_eq!(
            reason_in("loading\nFXC D3DCompile error (Not implemented)\n"),
            Some("FXC D3DCompile error (Not implemented)")
        );
        assert_eq!(reason_in("\n"), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_checker_that_hangs_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let hangs = program(dir.path(), "exec sleep 600");
        let started = Instant::now();
        let ChildOutcome::Failed(why) = run_child(&hangs, Duration::from_millis(300)).unwrap()
        else {
            panic!("a hung checker passed");
        };
        assert!(why.contains("did not finish"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[cfg(unix)]
    #[test]
    fn a_passing_verdict_is_taken_from_the_checker() {
        let dir = tempfile::tempdir().unwrap();
        let passed = GpuVerdict::new(&adapter(), true, "largest difference 1e-7".into());
        let prints = program(
            dir.path(),
            &format!("echo '{}'", serde_json::to_string(&passed).unwrap()),
        );
        assert_eq!(verdict(dir.path(), &adapter(), &prints), Some(passed));
        assert!(
            verdict(dir.path(), &adapter(), &dir.path().join("missing")).is_some(),
            "stored"
        );
        let elsewhere = tempfile::tempdir().unwrap();
        assert_eq!(
            verdict(elsewhere.path(), &adapter(), &dir.path().join("missing")),
            None,
            "no checker: unchecked"
        );
    }
}
