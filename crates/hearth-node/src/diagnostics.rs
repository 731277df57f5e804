//! Diagnostics: the newest log lines for the window, and a one-file bundle a user can attach
//! to a bug report — version, node state, hardware, benchmark, settings and recent logs.
//! Never in it: the node's private key, the API token (also scrubbed from log lines) or the
//! payout address.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{NodeConfig, RunningNode};

/// Log lines the bundle carries at most.
pub const BUNDLE_LOG_LINES: usize = 2000;

/// The last `max` lines of the log files in `log_dir` (`hearth*.log`, newest file last),
/// oldest first, with secrets scrubbed. Empty when there are none.
pub fn recent_log_lines(log_dir: &Path, max: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hearth") && n.ends_with(".log"))
        })
        .collect();
    // Daily files are named by date, so the name orders them.
    files.sort();
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for file in files.iter().rev() {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().rev() {
            if lines.len() >= max {
                break;
            }
            lines.push_front(scrub(line));
        }
        if lines.len() >= max {
            break;
        }
    }
    lines.into()
}

/// `line` with anything after `token=` replaced.
pub fn scrub(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("token=") {
        out.push_str(&rest[..at + "token=".len()]);
        out.push_str("[removed]");
        rest = &rest[at + "token=".len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '&' || c == '"')
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The whole bundle as text.
pub fn bundle(running: &RunningNode, log_dir: Option<&Path>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Hearth diagnostics\nversion {} ({} {})\nwritten {}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
        chrono::Local::now().to_rfc3339()
    );
    let overview = running.overview();
    let _ = writeln!(out, "== Node ==");
    let _ = writeln!(out, "node id   {}", overview.node_id);
    let _ = writeln!(out, "device    {}", overview.device);
    let _ = writeln!(out, "state     {:?}", overview.status.activity);
    let _ = writeln!(
        out,
        "pool      {} (connected: {}, demo: {}{})",
        overview.pool.url,
        overview.pool.connected,
        overview.pool.demo,
        overview
            .pool
            .error
            .as_deref()
            .map(|e| format!(", error: {e}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "today     {} jobs, {} failed",
        overview.earnings.today_jobs, overview.earnings.today_failed
    );
    match running.ledger().job_count() {
        Ok(count) => {
            let _ = writeln!(out, "ledger    {count} jobs");
        }
        Err(error) => {
            let _ = writeln!(out, "ledger    unreadable: {error}");
        }
    }
    let _ = writeln!(out, "\n== Hardware ==");
    out.push_str(&hearth_hardware::render_table(running.hardware_report()));
    let _ = writeln!(out, "\n== Benchmark ==");
    match running.hardware_view().benchmark {
        Some(bench) => {
            for b in bench.backends {
                let _ = writeln!(
                    out,
                    "{:<5} {:<50} {:>8.1} GFLOP/s {:>7.1} GB/s",
                    b.backend, b.device, b.matmul_gflops, b.bandwidth_gb_per_s
                );
            }
        }
        None => {
            let _ = writeln!(out, "not measured on this hardware");
        }
    }
    let _ = writeln!(out, "\n== Settings ==");
    out.push_str(&settings_without_secrets(&running.settings()));
    let _ = writeln!(out, "\n== Recent log lines ==");
    match log_dir {
        Some(dir) => {
            let lines = recent_log_lines(dir, BUNDLE_LOG_LINES);
            if lines.is_empty() {
                let _ = writeln!(out, "(no log files in {})", dir.display());
            }
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
        None => {
            let _ = writeln!(out, "(this node logs to its terminal only)");
        }
    }
    out
}

/// The settings as TOML, the payout address replaced.
fn settings_without_secrets(settings: &NodeConfig) -> String {
    let mut shown = settings.clone();
    if !shown.payout_address.is_empty() {
        shown.payout_address = "[removed]".into();
    }
    toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("(could not show: {e})\n"))
}

/// Write the bundle to `folder` as `hearth-diagnostics-<time>.txt`; its path.
pub fn save_bundle(
    running: &RunningNode,
    log_dir: Option<&Path>,
    folder: &Path,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(folder)?;
    let path = folder.join(format!(
        "hearth-diagnostics-{}.txt",
        chrono::Local::now().format("%Y-%m-%d-%H%M%S")
    ));
    hearth_instance::write_atomic(&path, bundle(running, log_dir).as_bytes())?;
    tracing::info!(path = %path.display(), "diagnostics bundle written");
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_scrubbed_from_log_lines() {
        assert_eq!(
            scrub("open http://127.0.0.1:7420/?token=abc123 now"),
            "open http://127.0.0.1:7420/?token=[removed] now"
        );
        assert_eq!(
            scrub("a token=x&b=1 token=y"),
            "a token=[removed]&b=1 token=[removed]"
        );
        assert_eq!(scrub("nothing here"), "nothing here");
    }

    #[test]
    fn the_newest_lines_come_from_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hearth.2026-11-24.log"), "old 1\nold 2\n").unwrap();
        std::fs::write(dir.path().join("hearth.2026-11-25.log"), "new 1\nnew 2\n").unwrap();
        std::fs::write(dir.path().join("other.txt"), "not a log\n").unwrap();
        assert_eq!(recent_log_lines(dir.path(), 3), ["old 2", "new 1", "new 2"]);
        assert!(recent_log_lines(&dir.path().join("missing"), 3).is_empty());
    }

    #[test]
    fn the_payout_address_is_not_in_the_bundle() {
        let settings = NodeConfig {
            payout_address: "wallet-123".into(),
            ..NodeConfig::default()
        };
        let shown = settings_without_secrets(&settings);
        assert!(!shown.contains("wallet-123"), "{shown}");
        assert!(shown.contains("payout_address = \"[removed]\""), "{shown}");
    }
}
