//! A pool for operators. `hearth-pool --help` lists the commands; each has its own `--help`.
//!
//! The config file is TOML with the fields of `PoolConfig` (all optional), e.g.
//!
//!     bind = "0.0.0.0:8040"
//!     name = "Example pool"
//!     api_keys = ["sk-..."]
//!     lease_ms = 30000
//!     verification_share = 0.05
//!     [[models]]
//!     id = "all-minilm-l6-v2"
//!     task = "embeddings"
//!     micro_credits_per_unit = 20

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use hearth_inference::ModelStore;
use hearth_pool::{Meter, Pool, PoolConfig, SledStore, payout_csv};

const USAGE: &str = "\
hearth-pool: run a Hearth inference pool

usage:
  hearth-pool serve [--config FILE] [--data DIR] [--models DIR]
  hearth-pool payouts [--config FILE] [--data DIR]
  hearth-pool help | --help | COMMAND --help

commands:
  serve     serve customers (OpenAI-compatible /v1) and nodes (/node/v1) until SIGTERM or
            Ctrl-C, then drain: stop leasing, let held jobs finish and be paid, answer
            every waiting customer, exit 0
  payouts   every node's earnings as CSV (payable, pending, held micro-credits)

options:
  --config FILE   the pool's TOML config (fields of PoolConfig; all optional)
  --data DIR      where the pool's database lives (default: $XDG_DATA_HOME/hearth-pool)
  --models DIR    model manifests and files, for the pool's own tokenizers
                  (default: $HEARTH_MODELS, else the repository's models/)
";

const SERVE_HELP: &str = "\
hearth-pool serve [--config FILE] [--data DIR] [--models DIR]

Serves plain HTTP on `bind` (put a TLS-terminating proxy in front of a public pool). The pool
counts every unit it bills with its own copy of each model's tokenizer, so the tokenizer files
of every model sold must be in the models folder (`hearth-models fetch`). SIGTERM or Ctrl-C
drains the pool (up to lease_ms for held jobs) and exits 0.
";

const PAYOUTS_HELP: &str = "\
hearth-pool payouts [--config FILE] [--data DIR]

Prints node_id,payable_micro_credits,pending_micro_credits,held_micro_credits for every node
that earned anything. Earnings younger than settlement_ms are pending; a quarantined node's
are held. The database is opened read-write, so stop the pool first.
";

fn take_option(args: &mut Vec<String>, name: &str) -> anyhow::Result<Option<String>> {
    let Some(at) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    if at + 1 >= args.len() {
        bail!("{name} needs a value");
    }
    let value = args.remove(at + 1);
    args.remove(at);
    Ok(Some(value))
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("hearth-pool")
}

fn read_config(path: Option<&str>) -> anyhow::Result<PoolConfig> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            PoolConfig::from_toml(&text).map_err(anyhow::Error::msg)
        }
        None => Ok(PoolConfig::default()),
    }
}

fn open_store(data: &std::path::Path) -> anyhow::Result<Arc<SledStore>> {
    Ok(Arc::new(
        SledStore::open(&data.join("pool.sled"))
            .with_context(|| format!("opening the pool database in {}", data.display()))?,
    ))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            interrupted = tokio::signal::ctrl_c() => interrupted?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn run(mut args: Vec<String>) -> anyhow::Result<()> {
    let command = if args.is_empty() {
        "help".to_owned()
    } else {
        args.remove(0)
    };
    let wants_help = args.iter().any(|a| a == "--help" || a == "-h");
    match command.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            return Ok(());
        }
        "serve" if wants_help => {
            print!("{SERVE_HELP}");
            return Ok(());
        }
        "payouts" if wants_help => {
            print!("{PAYOUTS_HELP}");
            return Ok(());
        }
        "serve" | "payouts" => {}
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
    let config_path = take_option(&mut args, "--config")?;
    let data = take_option(&mut args, "--data")?
        .map(PathBuf::from)
        .unwrap_or_else(default_data_dir);
    let models = take_option(&mut args, "--models")?
        .map(ModelStore::new)
        .unwrap_or_else(ModelStore::from_env);
    if let Some(extra) = args.first() {
        bail!("unexpected argument {extra:?}\n\n{USAGE}");
    }
    let config = read_config(config_path.as_deref())?;
    match command.as_str() {
        "serve" => {
            if config.api_keys.is_empty() {
                eprintln!("warning: no api_keys in the config: customers cannot use this pool");
            }
            let (meter, unmetered) = Meter::load(&models, &config.models);
            for (model, reason) in &unmetered {
                eprintln!("cannot meter {model}: {reason}");
            }
            let grace = config.lease();
            let pool = Pool::start(config, open_store(&data)?, Arc::new(meter)).await?;
            println!("hearth pool listening on {}", pool.url());
            stop_signal().await?;
            eprintln!("draining");
            let out = pool.drain(grace).await;
            pool.stop(std::time::Duration::from_secs(5)).await;
            eprintln!("stopped ({out} leased jobs had not come back)");
        }
        _ => print!(
            "{}",
            payout_csv(open_store(&data)?.as_ref(), config.settlement_ms)?
        ),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hearth-pool: {error:#}");
            ExitCode::from(2)
        }
    }
}
