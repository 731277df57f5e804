//! What Hearth costs its owner when it is not the point: memory with the window open and idle,
//! memory in the tray with the window closed (and whether it stays flat), and CPU while paused
//! and hidden. Runs the real programs on a private Xvfb desktop, started directly (no
//! WebDriver): the window (`hearth-app`, with the WebKit web and network processes it starts)
//! and the background process (`hearth-tray`: node, local API, tray), and reads `/proc`.
//!
//! Run: `cargo test --workspace --bench footprint -- --bench` (after building the app).
//! `HEARTH_FOOTPRINT_TRAY_SECS` sets how long the tray-only phase is watched (default 120).
//! Targets: window open and idle ≤ 200 MiB PSS in all; tray-only ≤ 60 MiB RSS and flat;
//! paused and hidden ≤ 0.3% of one core.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hearth_e2e::{Desktop, TrayMenu, X11, wait_for};

/// The processes `roots` and all their descendants, each once.
fn family_of(roots: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = roots.iter().flat_map(|&root| family(root)).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// A process and all its descendants.
fn family(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found
}

/// A `/proc/<pid>/smaps_rollup` or `status` figure in KiB.
fn kib(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Total PSS and RSS (MiB) of the app's processes, and one line per process.
fn memory(roots: &[u32]) -> (f64, f64, String) {
    let (mut pss, mut rss, mut lines) = (0, 0, Vec::new());
    for pid in family_of(roots) {
        let (p, r) = (
            kib(pid, "smaps_rollup", "Pss:"),
            kib(pid, "status", "VmRSS:"),
        );
        pss += p;
        rss += r;
        lines.push(format!(
            "{} {:.0}/{:.0}",
            name(pid),
            p as f64 / 1024.0,
            r as f64 / 1024.0
        ));
    }
    (pss as f64 / 1024.0, rss as f64 / 1024.0, lines.join(", "))
}

/// The app process's largest mappings by `key` (`Pss:` or `Rss:`, MiB), to see where its
/// memory goes.
fn largest_mappings(pid: u32, n: usize, key: &str) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_name: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            current = fields.nth(4).unwrap_or("[anon]").to_owned();
        } else if first == key {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by_name.entry(current.clone()).or_default() += kib;
        }
    }
    let mut largest: Vec<_> = by_name.into_iter().collect();
    largest.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    largest
        .into_iter()
        .take(n)
        .map(|(name, kib)| {
            let short = name.rsplit('/').next().unwrap_or(&name).to_owned();
            format!("{short} {:.0}", kib as f64 / 1024.0)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU time (user + system) of the app's processes, in clock ticks.
fn cpu_ticks(roots: &[u32]) -> u64 {
    family_of(roots)
        .into_iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
            let fields: Vec<&str> = after.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
            fields
                .get(11)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + fields
                    .get(12)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
        })
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("footprint: run with `cargo test --workspace --bench footprint -- --bench`");
        return Ok(());
    }
    let tray_secs: u64 = std::env::var("HEARTH_FOOTPRINT_TRAY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let desktop = Desktop::start().await?;
    // Models are let go one second into a pause, so the figures are the app's own.
    std::fs::create_dir_all(desktop.app_data_dir())?;
    std::fs::write(
        desktop.app_data_dir().join("config.toml"),
        std::env::var("HEARTH_FOOTPRINT_CONFIG")
            .unwrap_or_else(|_| "free_memory_after_s = 1\nfirst_run_done = true\n".into()),
    )?;
    let mut window_program = desktop.spawn_app(&[])?;
    let x11 = X11::connect(desktop.display())?;
    let window = wait_for("the window", Duration::from_secs(30), || async {
        x11.find_viewable_window("Hearth").ok().flatten()
    })
    .await?;
    let tray = wait_for("the tray", Duration::from_secs(30), || async {
        TrayMenu::find(&desktop).ok().flatten()
    })
    .await?;
    let core = desktop
        .hearth_pid()
        .ok_or_else(|| anyhow::anyhow!("no background process"))?;
    let both = [window_program.id(), core];

    // Working, window open: the models are loaded.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (working_pss, _, working) = memory(&both);

    // Paused from the tray, window open and idle.
    tray.click(&desktop, "Pause")?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (idle_pss, idle_rss, idle) = memory(&both);
    let idle_mappings = largest_mappings(window_program.id(), 8, "Pss:");
    let web_process = family(window_program.id())
        .into_iter()
        .find(|&pid| name(pid).starts_with("WebKitWebProc"));
    let web_mappings =
        web_process.map_or_else(String::new, |pid| largest_mappings(pid, 10, "Pss:"));

    // Window closed: its program and WebKit's end; the background process stays.
    x11.request_close(window)?;
    let closed = window_program.wait()?;
    anyhow::ensure!(closed.success(), "the window program exited with {closed}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, tray_rss_start, tray_start) = memory(&[core]);
    let tray_mappings = largest_mappings(core, 10, "Rss:");
    let (ticks0, t0) = (cpu_ticks(&[core]), Instant::now());
    let mut tray_rss = vec![tray_rss_start];
    let deadline = Instant::now() + Duration::from_secs(tray_secs);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10)).await;
        tray_rss.push(memory(&[core]).1);
    }
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let cpu_share =
        (cpu_ticks(&[core]) - ticks0) as f64 / ticks_per_s / t0.elapsed().as_secs_f64() * 100.0;
    desktop.quit_hearth().await?;

    // Started at login (`--in-tray`): the window was never built, so WebKit never started.
    let mut launcher = desktop.spawn_app(&["--in-tray"])?;
    let launched = launcher.wait()?;
    anyhow::ensure!(
        launched.success(),
        "`hearth-app --in-tray` exited with {launched}"
    );
    let core = desktop
        .hearth_pid()
        .ok_or_else(|| anyhow::anyhow!("no background process after --in-tray"))?;
    let tray = wait_for("the tray", Duration::from_secs(30), || async {
        TrayMenu::find(&desktop)
            .ok()
            .flatten()
            .filter(|t| t.items(&desktop).is_ok_and(|items| items.len() > 3))
    })
    .await?;
    tray.click(&desktop, "Pause")?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (_, login_rss, login) = memory(&[core]);
    let login_mappings = largest_mappings(core, 10, "Rss:");
    desktop.quit_hearth().await?;

    let max = tray_rss.iter().copied().fold(0.0, f64::max);
    let min = tray_rss.iter().copied().fold(f64::MAX, f64::min);
    println!("working, window open: {working_pss:.0} MiB PSS ({working})");
    println!(
        "paused, window open and idle: {idle_pss:.0} MiB PSS, {idle_rss:.0} MiB RSS (target <= 200 MiB PSS) ({idle})"
    );
    println!("  the window program's largest mappings then (MiB PSS): {idle_mappings}");
    println!("  WebKit's web process's largest mappings then (MiB PSS): {web_mappings}");
    println!(
        "tray only (window closed), paused: {tray_rss_start:.0} MiB RSS at first, {min:.0}..{max:.0} MiB over {tray_secs} s (target <= 60 MiB, flat) ({tray_start})"
    );
    println!("  the background process's largest mappings then (MiB RSS): {tray_mappings}");
    println!(
        "tray only, started at login (--in-tray), paused: {login_rss:.0} MiB RSS (target <= 60 MiB) ({login})"
    );
    println!("  the background process's largest mappings then (MiB RSS): {login_mappings}");
    println!(
        "paused and hidden: {cpu_share:.3}% of one core over {:.0} s (target <= 0.3%)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
