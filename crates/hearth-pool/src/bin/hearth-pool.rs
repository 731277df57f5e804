//! A pool for operators.
//!
//!     hearth-pool serve [--config pool.toml] [--data DIR]   run until Ctrl-C
//!     hearth-pool payouts [--data DIR]                      balances owed, as CSV
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
use std::sync::Arc;

use anyhow::{Context, bail};
use hearth_pool::{Pool, PoolConfig, SledStore, payout_csv};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let config_path = take_option(&mut args, "--config")?;
    let data = take_option(&mut args, "--data")?
        .map(PathBuf::from)
        .unwrap_or_else(default_data_dir);
    let store = Arc::new(
        SledStore::open(&data.join("pool.sled"))
            .with_context(|| format!("opening the pool database in {}", data.display()))?,
    );
    match args.first().map(String::as_str) {
        Some("serve") => {
            let config = match config_path {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {path}"))?;
                    PoolConfig::from_toml(&text).map_err(anyhow::Error::msg)?
                }
                None => PoolConfig::default(),
            };
            if config.api_keys.is_empty() {
                eprintln!("warning: no api_keys in the config: customers cannot use this pool");
            }
            let pool = Pool::start(config, store).await?;
            println!("hearth pool listening on {}", pool.url());
            tokio::signal::ctrl_c().await?;
            eprintln!("stopping");
        }
        Some("payouts") => print!("{}", payout_csv(store.as_ref())?),
        _ => bail!("usage: hearth-pool serve [--config FILE] [--data DIR] | payouts [--data DIR]"),
    }
    Ok(())
}
