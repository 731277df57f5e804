//! A pool for operators. `hearth-pool --help` lists the commands; each has its own `--help`.
//!
//! The config file is TOML with the fields of `PoolConfig` (all optional), e.g.
//!
//!     bind = "0.0.0.0:8040"
//!     name = "Example pool"
//!     api_keys = ["sk-..."]
//!     lease_ms = 30000
//!     verification_share = 0.05
//!
//! Without `[[models]]` the pool sells every model of its store (`--models`, else
//! `$HEARTH_MODELS`) whose manifest states a price, at that price. With them, it sells those:
//!
//!     [[models]]
//!     id = "all-minilm-l6-v2"
//!     task = "embeddings"
//!     micro_credits_per_unit = 20
//!
//! With `[release]` it tells joining nodes of the newest Hearth release; their owners see
//! "a new version is available" and the notes' first line:
//!
//!     [release]
//!     version = "0.2.0"
//!     url = "https://example.org/hearth/releases/0.2.0"
//!     notes = "Faster chat on CPUs.\nMore in the notes."

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use hearth_cli::{take_option, usage};
use hearth_inference::ModelStore;
use hearth_pool::accounts::{self, NewKey};
use hearth_pool::admin::AdminEndpoint;
use hearth_pool::{Meter, PgStore, Pool, PoolConfig, PoolStore, payout_csv};

/// mimalloc, not glibc's malloc: under load the pool's requests are allocated on one thread
/// and freed on another, and glibc's arenas then contend (a third of the dispatch bench's
/// futex calls were malloc's). The dispatch bench runs with the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
hearth-pool: run a Hearth inference pool

usage:
  hearth-pool serve [--config FILE] [--data DIR] [--models DIR]
  hearth-pool migrate --config FILE
  hearth-pool payouts [--config FILE] [--data DIR]
  hearth-pool keys add --name NAME [--rpm N] [--concurrency N] [--quota MICRO_CREDITS] [--data DIR]
  hearth-pool keys list [--data DIR]
  hearth-pool keys revoke KEY_ID [--data DIR]
  hearth-pool usage [--data DIR]
  hearth-pool help | --help | COMMAND --help

commands:
  serve     serve customers (OpenAI-compatible /v1) and nodes (/node/v1) until SIGTERM or
            Ctrl-C, then drain: stop leasing, let held jobs finish and be paid, answer
            every waiting customer, exit 0
  migrate   bring the PostgreSQL database named by the config's `database` up to date (serve
            also does this at start); safe while other pool processes run
  payouts   every node's earnings as CSV (payable, pending, held micro-credits)
  keys      customers' API keys: stored hashed; the secret is printed once, by `add`
  usage     what each key used and was charged, per model, as CSV

payouts, keys and usage work while the pool serves (through its admin API on loopback, found
in DIR/admin.json) and when it does not (on the database directly).

options:
  --config FILE   the pool's TOML config (fields of PoolConfig; all optional)
  --data DIR      where the pool's sled database lives, when the config names no PostgreSQL
                  `database` (default: $HEARTH_POOL_DATA_DIR, else
                  ~/.local/share/hearth-pool)
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

const KEYS_HELP: &str = "\
hearth-pool keys add --name NAME [--rpm N] [--concurrency N] [--quota MICRO_CREDITS] [--data DIR]
hearth-pool keys list [--data DIR]
hearth-pool keys revoke KEY_ID [--data DIR]

A key is stored as its sha256 only; `add` prints the secret once (keep it). --rpm limits
requests a minute (default 600), --concurrency requests at once (default 16), --quota the
micro-credits the key may be charged in all (default: no limit). Over a limit a customer gets
429 with Retry-After, in OpenAI's error shape.
";

const PAYOUTS_HELP: &str = "\
hearth-pool payouts [--config FILE] [--data DIR]

Prints node_id,payable_micro_credits,pending_micro_credits,held_micro_credits for every node
that earned anything. Earnings younger than settlement_ms are pending; a quarantined node's
are held.
";

/// The commands, for naming the nearest one to a typo.
const COMMANDS: &[&str] = &["serve", "migrate", "payouts", "keys", "usage", "help"];

fn read_config(path: Option<&str>) -> anyhow::Result<PoolConfig> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            PoolConfig::from_toml(&text).map_err(anyhow::Error::from)
        }
        None => Ok(PoolConfig::default()),
    }
}

/// The config's PostgreSQL database (migrated), else the sled database in `data`.
async fn open_store(
    data: &std::path::Path,
    config: &PoolConfig,
) -> anyhow::Result<Arc<dyn PoolStore>> {
    hearth_pool::store::open(
        config.database.as_deref(),
        config.database_connections,
        data,
    )
    .await
    .with_context(|| match &config.database {
        Some(_) => "opening the pool's PostgreSQL database".to_owned(),
        None => format!("opening the pool database in {}", data.display()),
    })
}

/// `migrate`: bring a PostgreSQL database's schema up to date.
async fn migrate(config: &PoolConfig) -> anyhow::Result<()> {
    let Some(url) = &config.database else {
        bail!(
            "migrate is for PostgreSQL: set database = \"postgres://...\" in the config (sled needs no migrations)"
        );
    };
    let store = PgStore::connect(url, 1).await?;
    let applied = store.migrate().await?;
    let version = store.schema_version().await?;
    if applied.is_empty() {
        println!("the database is up to date (schema version {version})");
    } else {
        println!("applied migrations {applied:?}; schema version {version}");
    }
    Ok(())
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
        "keys" | "usage" if wants_help => {
            print!("{KEYS_HELP}");
            return Ok(());
        }
        "serve" | "payouts" | "keys" | "usage" | "migrate" => {}
        other => return Err(hearth_cli::unknown_command(other, COMMANDS)),
    }
    let config_path = take_option(&mut args, "--config")?;
    let data = match take_option(&mut args, "--data")? {
        Some(dir) => PathBuf::from(dir),
        None => hearth_instance::DataFolder::Pool
            .path()
            .map_err(anyhow::Error::msg)?,
    };
    let models = take_option(&mut args, "--models")?
        .map(ModelStore::new)
        .unwrap_or_else(ModelStore::from_env);
    let config = read_config(config_path.as_deref())?;
    if command == "migrate" {
        return migrate(&config).await;
    }
    if command != "serve" {
        return administer(&command, args, &data, &config).await;
    }
    if let Some(extra) = args.first() {
        return Err(usage(format!("{command}: unexpected argument {extra:?}")));
    }
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
            let config = PoolConfig {
                admin_bind: config
                    .admin_bind
                    .or_else(|| Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))),
                ..config
            };
            let open_files = hearth_pool::raise_open_files_limit();
            if open_files < config.max_connections as u64 {
                eprintln!(
                    "warning: this process may open {open_files} files, fewer than max_connections ({}) needs",
                    config.max_connections
                );
            }
            let store = open_store(&data, &config).await?;
            let pool = Pool::start(config, store, Arc::new(meter)).await?;
            let admin_file = data.join(ADMIN_FILE);
            if let Some(admin) = pool.admin() {
                // With PostgreSQL nothing else made the folder.
                std::fs::create_dir_all(&data)
                    .with_context(|| format!("creating {}", data.display()))?;
                // A previous run's file names an address that is gone.
                match std::fs::remove_file(&admin_file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e)
                            .with_context(|| format!("replacing {}", admin_file.display()));
                    }
                    _ => {}
                }
                hearth_instance::write_private(&admin_file, &serde_json::to_vec(admin)?)
                    .with_context(|| format!("writing {}", admin_file.display()))?;
            }
            println!("hearth pool listening on {}", pool.url());
            stop_signal().await?;
            eprintln!("draining");
            let out = pool.drain(grace).await;
            pool.stop(std::time::Duration::from_secs(5)).await;
            if let Err(error) = std::fs::remove_file(&admin_file) {
                eprintln!("could not remove {}: {error}", admin_file.display());
            }
            eprintln!("stopped ({out} leased jobs had not come back)");
        }
        _ => unreachable!("administer handles the other commands"),
    }
    Ok(())
}

/// Where a serving pool says how to reach its admin API.
const ADMIN_FILE: &str = "admin.json";

/// What an admin command asks for.
enum AdminCall {
    Get(&'static str),
    Post(String, serde_json::Value),
}

/// `payouts`, `usage` and `keys …`: through a serving pool's admin API, else on the database.
async fn administer(
    command: &str,
    mut args: Vec<String>,
    data: &std::path::Path,
    config: &PoolConfig,
) -> anyhow::Result<()> {
    let number = |args: &mut Vec<String>, name: &str| -> anyhow::Result<Option<u64>> {
        take_option(args, name)?
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| usage(format!("{name} takes a whole number, not {v:?}")))
            })
            .transpose()
    };
    let call = match (command, args.first().map(String::as_str)) {
        ("payouts", None) => AdminCall::Get("/admin/v1/payouts"),
        ("usage", None) => AdminCall::Get("/admin/v1/usage"),
        ("keys", Some("list")) if args.len() == 1 => AdminCall::Get("/admin/v1/keys"),
        ("keys", Some("revoke")) if args.len() == 2 => AdminCall::Post(
            format!("/admin/v1/keys/{}/revoke", args[1]),
            serde_json::Value::Null,
        ),
        ("keys", Some("add")) => {
            args.remove(0);
            let name = take_option(&mut args, "--name")?
                .ok_or_else(|| usage("keys add needs --name NAME"))?;
            let rpm = number(&mut args, "--rpm")?.unwrap_or(600);
            let concurrency = number(&mut args, "--concurrency")?.unwrap_or(16);
            let quota = number(&mut args, "--quota")?;
            if let Some(extra) = args.first() {
                return Err(usage(format!("keys add: unexpected argument {extra:?}")));
            }
            let new = NewKey {
                name,
                requests_per_minute: u32::try_from(rpm).context("--rpm is too large")?,
                max_concurrent: u32::try_from(concurrency).context("--concurrency is too large")?,
                quota_micro_credits: quota,
            };
            AdminCall::Post("/admin/v1/keys".into(), serde_json::to_value(new)?)
        }
        ("keys", None) => return Err(usage("keys needs add, list or revoke")),
        ("keys", Some("revoke")) => return Err(usage("keys revoke needs one KEY_ID")),
        (command, _) => return Err(usage(format!("{command}: unexpected arguments {args:?}"))),
    };
    if let Some(text) = through_admin_api(data, &call).await? {
        print!("{text}");
        return Ok(());
    }
    // No pool serves from this folder: work on the database directly.
    let store = open_store(data, config).await?;
    let text = match call {
        AdminCall::Get("/admin/v1/payouts") => {
            payout_csv(store.as_ref(), config.settlement_ms).await?
        }
        AdminCall::Get("/admin/v1/usage") => accounts::usage_csv(store.as_ref()).await?,
        AdminCall::Get(_) => serde_json::to_string_pretty(&store.customer_keys().await?)? + "\n",
        AdminCall::Post(path, _) if path.ends_with("/revoke") => {
            let id = path
                .trim_end_matches("/revoke")
                .rsplit('/')
                .next()
                .unwrap_or("");
            serde_json::to_string_pretty(&accounts::revoke_key(store.as_ref(), id).await?)? + "\n"
        }
        AdminCall::Post(_, body) => {
            let new: NewKey = serde_json::from_value(body)?;
            serde_json::to_string_pretty(&accounts::add_key(store.as_ref(), &new).await?)? + "\n"
        }
    };
    print!("{text}");
    Ok(())
}

/// The answer of a serving pool's admin API, or `None` when no pool serves from `data`.
async fn through_admin_api(
    data: &std::path::Path,
    call: &AdminCall,
) -> anyhow::Result<Option<String>> {
    let Ok(bytes) = std::fs::read(data.join(ADMIN_FILE)) else {
        return Ok(None);
    };
    let admin: AdminEndpoint = serde_json::from_slice(&bytes)
        .with_context(|| format!("reading {}", data.join(ADMIN_FILE).display()))?;
    let http = reqwest::Client::new();
    let request = match call {
        AdminCall::Get(path) => http.get(format!("{}{path}", admin.url)),
        AdminCall::Post(path, body) => http.post(format!("{}{path}", admin.url)).json(body),
    };
    let response = match request.bearer_auth(&admin.token).send().await {
        Ok(response) => response,
        // Left behind by a pool that was killed: nobody serves.
        Err(error) if error.is_connect() => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("the pool refused: {status}: {text}");
    }
    // JSON answers are shown pretty, CSV as it is.
    Ok(Some(
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(value) => serde_json::to_string_pretty(&value)? + "\n",
            Err(_) => text,
        },
    ))
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
        Err(error) => hearth_cli::report("hearth-pool", &error),
    }
}
