//! `hearth-node`: Hearth without a window, for rigs without a display, and the command line
//! for a running node.
//!
//! ```text
//! hearth-node run [--pool URL|embedded] [--port N] [--backend auto|cpu|wgpu] [--no-demo]
//! hearth-node status | pause [--for 90s|30m|2h] | resume   (ask the running node)
//! hearth-node hardware                         (what this machine has)
//! hearth-node bench [--force]                  (the capability benchmark)
//! hearth-node ledger verify | ledger export [FILE]
//! hearth-node config | config set KEY VALUE
//! ```
//! Every command takes `--data-dir DIR` (default: the folder the desktop app uses too,
//! `$HEARTH_DATA_DIR`, else `~/.local/share/app.hearth.desktop`; see
//! `hearth_instance::DataFolder`), so `status`, `pause` and `resume` steer the app's node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hearth_cli::usage;
use hearth_node::server::{self, VerifyReport};
use hearth_node::{NodeConfig, NodeStatus, Overview, RunningNode, StartOptions};

const USAGE: &str = "usage: hearth-node [--data-dir DIR] <command>
  run [--pool URL|embedded] [--port N] [--backend auto|cpu|wgpu] [--no-demo]
                          run the node with its web UI and API on 127.0.0.1
  status                  what the running node is doing
  pause [--for 90s|30m|2h]  stop taking work (until resumed, or for a while)
  resume                  take work again
  resume --anyway [--for 1h]  work through a game's pause (or skip the wait after it),
                          until it ends or for a while
  resume --no-anyway      let the game pause Hearth again
  hardware                the GPUs, CPU and memory Hearth sees
  bench [--force]         the capability benchmark (stored; --force measures again)
  ledger verify           check every receipt's signature and the hash chain
  ledger export [FILE]    every job as CSV (to FILE or standard output)
  config                  show the settings
  config set KEY VALUE    change one (pool, backend, concurrency, demo_interval_ms, api_port,
                          model_memory_mib, model_disk_mib, detect_games, detect_fullscreen,
                          idle_only,
                          away_after_s, games,
                          game_cooldown_s, watch_interval_ms, temperature_stop_c,
                          temperature_resume_c, schedule \"mon-fri 18:00-08:00; weekends 00:00-24:00\")";

/// `print!` that ends the program quietly once standard output is closed (`| head` stopped
/// reading), as command-line tools do, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}

/// `println!`, likewise.
macro_rules! outln {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

fn write_out(text: std::fmt::Arguments) {
    use std::io::Write as _;
    if let Err(error) = std::io::stdout().lock().write_fmt(text) {
        exit_on_output_error(error);
    }
}

/// A closed standard output ends the program without complaint; any other failure to write
/// to it is an error.
fn exit_on_output_error(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("hearth-node: writing to standard output: {error}");
    std::process::exit(1);
}

fn main() -> std::process::ExitCode {
    // A child started to list the GPUs answers and exits here (see hearth_hardware::probe).
    hearth_hardware::probe::serve_probe_if_asked();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sled=warn,wgpu_core=warn,wgpu_hal=warn,naga=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => hearth_cli::report("hearth-node", &error),
    }
}

/// The commands, for naming the nearest one to a typo.
const COMMANDS: &[&str] = &[
    "run", "status", "pause", "resume", "hardware", "bench", "ledger", "config", "help",
];

/// The usage error for a command line no command matched: what is wrong with it, in words.
fn misused(command: &[&str]) -> anyhow::Error {
    match command {
        [] => usage("no command given"),
        [word, ..] if !COMMANDS.contains(word) => hearth_cli::unknown_command(word, COMMANDS),
        ["pause", "--for"] => usage("pause --for needs a length, e.g. 90s, 30m or 2h"),
        ["resume", "--anyway", "--for"] => {
            usage("resume --anyway --for needs a length, e.g. 30m or 2h")
        }
        ["ledger"] => usage("ledger needs verify or export"),
        ["ledger", "export", _, extra @ ..] => usage(format!(
            "ledger export takes one FILE; unexpected {extra:?}"
        )),
        ["config", "set", ..] => usage("config set needs a KEY and a VALUE"),
        [word, rest @ ..] => usage(format!("{word}: unexpected {rest:?}")),
    }
}

/// Arguments with `--data-dir` taken out.
struct Args {
    data_dir: PathBuf,
    rest: Vec<String>,
}

impl Args {
    fn parse(args: Vec<String>) -> anyhow::Result<Self> {
        let mut data_dir = None;
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--data-dir" {
                data_dir = Some(PathBuf::from(
                    args.next()
                        .ok_or_else(|| usage("--data-dir needs a folder"))?,
                ));
            } else if let Some(dir) = arg.strip_prefix("--data-dir=") {
                data_dir = Some(PathBuf::from(dir));
            } else {
                rest.push(arg);
            }
        }
        Ok(Self {
            data_dir: match data_dir {
                Some(dir) => dir,
                None => hearth_instance::DataFolder::Hearth
                    .path()
                    .map_err(anyhow::Error::msg)?,
            },
            rest,
        })
    }

    /// The value after `flag`, if the flag is there.
    fn take(&mut self, flag: &str) -> anyhow::Result<Option<String>> {
        match self.rest.iter().position(|a| a == flag) {
            Some(i) => {
                let value = self
                    .rest
                    .get(i + 1)
                    .cloned()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))?;
                self.rest.drain(i..=i + 1);
                Ok(Some(value))
            }
            None => Ok(None),
        }
    }

    fn flag(&mut self, flag: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != flag);
        self.rest.len() != before
    }
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    let mut args = Args::parse(args)?;
    let command: Vec<&str> = args.rest.iter().map(String::as_str).collect();
    match command.as_slice() {
        ["run", ..] => {
            let pool = args.take("--pool")?;
            let port = args.take("--port")?;
            let backend = args.take("--backend")?;
            let no_demo = args.flag("--no-demo");
            if args.rest.len() > 1 {
                return Err(usage(format!("run: unexpected {:?}", &args.rest[1..])));
            }
            let mut config = NodeConfig::load(&args.data_dir)?;
            if let Some(pool) = pool {
                config.set("pool", &pool)?;
            }
            if let Some(port) = port {
                config.set("api_port", &port)?;
            }
            if let Some(backend) = backend {
                config.set("backend", &backend)?;
            }
            if no_demo {
                config.demo_interval_ms = 0;
            }
            runtime()?.block_on(serve(args.data_dir, config))
        }
        ["status"] => {
            let overview: Overview =
                runtime()?.block_on(call(&args.data_dir, "GET", "/api/overview"))?;
            print_overview(&overview);
            Ok(())
        }
        ["help"] | ["--help"] | ["-h"] => {
            outln!("{USAGE}");
            Ok(())
        }
        ["pause", "--for", length] => {
            let seconds = parse_length(length)?;
            let path = format!("/api/pause?seconds={seconds}");
            let status: NodeStatus = runtime()?.block_on(call(&args.data_dir, "POST", &path))?;
            outln!("{}", describe(&status));
            Ok(())
        }
        ["resume", "--anyway", rest @ ..] if matches!(rest, [] | ["--for", _]) => {
            let path = match rest {
                ["--for", length] => {
                    format!("/api/resume-anyway?seconds={}", parse_length(length)?)
                }
                _ => "/api/resume-anyway".to_owned(),
            };
            let status: NodeStatus = runtime()?.block_on(call(&args.data_dir, "POST", &path))?;
            outln!("{}", describe(&status));
            Ok(())
        }
        ["resume", "--no-anyway"] => {
            let status: NodeStatus =
                runtime()?.block_on(call(&args.data_dir, "DELETE", "/api/resume-anyway"))?;
            outln!("{}", describe(&status));
            Ok(())
        }
        ["pause"] | ["resume"] => {
            let path = format!("/api/{}", command[0]);
            let status: NodeStatus = runtime()?.block_on(call(&args.data_dir, "POST", &path))?;
            outln!("{}", describe(&status));
            Ok(())
        }
        ["hardware"] => {
            let report = hearth_hardware::detect_local();
            out!("{}", hearth_hardware::render_table(&report));
            Ok(())
        }
        ["bench", rest @ ..] => {
            let force = rest.contains(&"--force");
            let store = hearth_inference::ModelStore::for_data_dir(&args.data_dir);
            let path = args.data_dir.join(hearth_node::running::CAPABILITY_FILE);
            let (report, measured) =
                hearth_inference::capability::load_or_run_here(&path, &store, force, &mut |p| {
                    eprintln!("[{:>3.0}%] {}", p.fraction * 100.0, p.message)
                })?;
            if !measured {
                eprintln!("(stored result for this hardware; --force measures again)");
            }
            out!("{}", hearth_inference::capability::render(&report));
            Ok(())
        }
        ["ledger", "verify"] => {
            let report: VerifyReport = match hearth_instance::running_node(&args.data_dir) {
                Some(_) => {
                    runtime()?.block_on(call(&args.data_dir, "GET", "/api/ledger/verify"))?
                }
                None => {
                    let ledger = open_ledger(&args.data_dir)?;
                    server::verify_ledger(&ledger)?
                }
            };
            outln!(
                "ledger verified: {} receipts, every signature and link checks, {} credits",
                report.receipts,
                credits(report.micro_credits)
            );
            Ok(())
        }
        ["ledger", "export", rest @ ..] => {
            let csv: Vec<u8> = match hearth_instance::running_node(&args.data_dir) {
                Some(_) => {
                    runtime()?.block_on(call_raw(&args.data_dir, "GET", "/api/ledger/export"))?
                }
                None => {
                    let mut out = Vec::new();
                    open_ledger(&args.data_dir)?.export_csv(&mut out)?;
                    out
                }
            };
            match rest {
                [] => {
                    use std::io::Write;
                    if let Err(error) = std::io::stdout().write_all(&csv) {
                        exit_on_output_error(error);
                    }
                }
                [file] => {
                    hearth_instance::write_atomic(std::path::Path::new(file), &csv)
                        .with_context(|| format!("writing {file}"))?;
                    eprintln!(
                        "wrote {} lines to {file}",
                        csv.iter().filter(|b| **b == b'\n').count()
                    );
                }
                _ => return Err(misused(&command)),
            }
            Ok(())
        }
        ["config"] => {
            let config = NodeConfig::load(&args.data_dir)?;
            outln!("# {}", NodeConfig::path(&args.data_dir).display());
            out!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        ["config", "set", key, value] => {
            let mut config = NodeConfig::load(&args.data_dir)?;
            config.set(key, value)?;
            config.save(&args.data_dir)?;
            outln!("{key} = {value} (takes effect when the node next starts)");
            Ok(())
        }
        _ => Err(misused(&command)),
    }
}

/// "90s", "30m", "2h", "45" (minutes) as seconds, from 1 second to 24 hours.
fn parse_length(text: &str) -> anyhow::Result<u32> {
    let (number, unit) = if let Some(hours) = text.strip_suffix('h') {
        (hours, 3600)
    } else if let Some(seconds) = text.strip_suffix('s') {
        (seconds, 1)
    } else {
        (text.strip_suffix('m').unwrap_or(text), 60)
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|s| (1..=86_400).contains(s))
        .ok_or_else(|| {
            usage(format!(
                "pause --for {text:?}: give 1s to 24h, e.g. 90s, 30m or 2h"
            ))
        })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn open_ledger(data_dir: &Path) -> anyhow::Result<hearth_ledger::Ledger> {
    hearth_ledger::Ledger::open(&data_dir.join("ledger"))
        .with_context(|| format!("opening the ledger in {}", data_dir.display()))
}

/// The UI's built files: `$HEARTH_UI_DIR`, else `ui/dist` of this source tree.
fn ui_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("HEARTH_UI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/dist"));
    dir.join("index.html").is_file().then_some(dir)
}

async fn serve(data_dir: PathBuf, config: NodeConfig) -> anyhow::Result<()> {
    let port = config.api_port;
    let options = StartOptions {
        config,
        ..StartOptions::from_data_dir(&data_dir)?
    };
    let running = Arc::new(RunningNode::start(options).await?);
    let token = server::load_or_create_token(&data_dir).map_err(|e| {
        anyhow::anyhow!(
            "the API token in {}: {}",
            data_dir.display(),
            hearth_instance::explain_io(&e)
        )
    })?;
    let ui = ui_dir();
    if ui.is_none() {
        tracing::warn!("the web UI is not built (cd ui && npm run build); serving the API only");
    }
    let server = server::serve(Arc::clone(&running), port, token.clone(), ui)
        .await
        .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    let url = format!("http://{}", server.addr);
    hearth_instance::publish(&data_dir, &url).map_err(|e| {
        anyhow::anyhow!(
            "publishing the API's address in {}: {}",
            data_dir.display(),
            hearth_instance::explain_io(&e)
        )
    })?;
    outln!("Hearth node {} on {}", running.node_id(), running.device());
    outln!("web UI: {url}/?token={token}");
    outln!("ready");
    wait_for_signal().await;
    eprintln!("stopping: giving running jobs back to the pool");
    hearth_instance::withdraw(&data_dir);
    server.task.abort();
    running.shutdown(Duration::from_secs(15)).await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                eprintln!("warning: cannot listen for SIGTERM ({error}); Ctrl-C stops the node");
                ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c().await;
}

/// Until Ctrl-C; forever when it cannot be listened for (the node is stopped some other way,
/// rather than quitting the moment it started).
async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("warning: cannot listen for Ctrl-C ({error})");
        std::future::pending::<()>().await;
    }
}

async fn call_raw(data_dir: &Path, method: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let info = hearth_instance::running_node(data_dir).with_context(|| {
        format!(
            "Hearth is not running with the data folder {} (open the Hearth app, or start a node with `hearth-node run`)",
            data_dir.display()
        )
    })?;
    let client = reqwest::Client::new();
    let request = match method {
        "POST" => client.post(format!("{}{path}", info.url)),
        "DELETE" => client.delete(format!("{}{path}", info.url)),
        _ => client.get(format!("{}{path}", info.url)),
    };
    let response = request
        .bearer_auth(&info.token)
        .send()
        .await
        .with_context(|| format!("asking the node at {}", info.url))?;
    let status = response.status();
    let body = response.bytes().await?.to_vec();
    if status == reqwest::StatusCode::CONFLICT {
        // The node refused in words meant for the owner ("not paused: nothing to resume").
        bail!("{}", String::from_utf8_lossy(&body));
    }
    if !status.is_success() {
        bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

async fn call<T: serde::de::DeserializeOwned>(
    data_dir: &Path,
    method: &str,
    path: &str,
) -> anyhow::Result<T> {
    let body = call_raw(data_dir, method, path).await?;
    serde_json::from_slice(&body).with_context(|| format!("{path}: unreadable answer"))
}

fn credits(micro: u64) -> String {
    format!("{:.6}", micro as f64 / 1e6)
}

fn describe(status: &NodeStatus) -> String {
    match &status.overriding {
        Some(_) => format!("{} (resume --no-anyway ends it)", status.describe()),
        None => status.describe(),
    }
}

fn print_overview(o: &Overview) {
    outln!("node      {}", o.node_id);
    outln!("device    {}", o.device);
    outln!("state     {}", describe(&o.status));
    let pool = match (&o.pool.name, o.pool.connected) {
        (Some(name), true) => format!(
            "{name} ({}){}",
            o.pool.url,
            if o.pool.demo { ", demo credits" } else { "" }
        ),
        _ => format!(
            "{} — not connected{}",
            o.pool.url,
            o.pool
                .error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    };
    outln!("pool      {pool}");
    for notice in &o.pool.notices {
        outln!("notice    {notice}");
    }
    for download in &o.pool.downloads {
        outln!("download  {}", describe_download(download));
    }
    if let Some(new) = &o.pool.new_version {
        outln!(
            "update    Hearth {} is available{}: {}",
            new.version,
            if new.headline.is_empty() {
                String::new()
            } else {
                format!(" ({})", new.headline)
            },
            new.url
        );
    }
    outln!(
        "today     {} credits from {} jobs ({} failed); last hour {}",
        credits(o.earnings.today_micro_credits),
        o.earnings.today_jobs,
        o.earnings.today_failed,
        credits(o.earnings.last_hour_micro_credits)
    );
    outln!(
        "energy    {:.2} Wh today{}; lifetime {} credits",
        o.earnings.today_energy_wh,
        if o.earnings.today_energy_estimated {
            " (estimated: no power sensor)"
        } else {
            " (measured)"
        },
        credits(o.earnings.lifetime_micro_credits)
    );
    for job in o.jobs.iter().take(10) {
        outln!(
            "  {:<28} {:<22} {:<12} {:>10}",
            job.job_id,
            job.model,
            format!("{:?}", job.state).to_lowercase(),
            credits(job.micro_credits)
        );
    }
}

/// "all-minilm-l6-v2: 45% (41.0 of 91.3 MB, 12.3 MB/s)", with why it waits where it does.
fn describe_download(download: &hearth_node::ModelDownload) -> String {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let percent = if download.total_bytes == 0 {
        100.0
    } else {
        download.done_bytes as f64 * 100.0 / download.total_bytes as f64
    };
    let mut line = format!(
        "{}: {percent:.0}% ({:.1} of {:.1} MB",
        download.model,
        mb(download.done_bytes),
        mb(download.total_bytes)
    );
    if download.bytes_per_second > 0.0 {
        line.push_str(&format!(", {:.1} MB/s", download.bytes_per_second / 1e6));
    }
    line.push(')');
    if let Some(error) = &download.error {
        line.push_str(&format!(": {error}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_reads_as_how_far_how_fast_and_why_it_waits() {
        let mut download = hearth_node::ModelDownload {
            model: "all-minilm-l6-v2".into(),
            done_bytes: 41_000_000,
            total_bytes: 91_334_623,
            bytes_per_second: 12_300_000.0,
            error: None,
        };
        assert_eq!(
            describe_download(&download),
            "all-minilm-l6-v2: 45% (41.0 of 91.3 MB, 12.3 MB/s)"
        );
        download.bytes_per_second = 0.0;
        download.error = Some("the pool refused (trying again in 10 s)".into());
        assert_eq!(
            describe_download(&download),
            "all-minilm-l6-v2: 45% (41.0 of 91.3 MB): the pool refused (trying again in 10 s)"
        );
    }
}
