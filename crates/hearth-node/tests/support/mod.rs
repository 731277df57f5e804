//! The real `hearth-node` binary as a child process, a customer for the pool, and a worker
//! whose first word from a pool is a refusal.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test binaries

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `hearth-node run` process; killed (SIGKILL) when dropped.
pub struct NodeProcess {
    pub child: Child,
    /// What it printed on standard output up to "ready".
    pub banner: Vec<String>,
}

impl NodeProcess {
    /// Start `hearth-node run` with `args` and wait for its "ready" line.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::try_start(data_dir, args, &[]).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Start `hearth-node run` with `args` and environment `env`, and wait for its "ready"
    /// line; `Err` with what it printed and how it ended when it exits (or stalls) before.
    pub fn try_start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        Self::try_start_with(
            Command::new(env!("CARGO_BIN_EXE_hearth-node")),
            data_dir,
            args,
            env,
        )
    }

    /// [`NodeProcess::try_start`] for the node program `program` names (another build of it,
    /// or a runner and the program: Wine and `hearth-node.exe`).
    pub fn try_start_with(
        mut program: Command,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut child = program
            .arg("--data-dir")
            .arg(data_dir)
            .arg("run")
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("HEARTH_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hearth-node");
        // Its standard error passes through to the test's, and the last lines are kept to
        // say why a start failed.
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let stderr = child.stderr.take().unwrap();
        {
            let said = std::sync::Arc::clone(&said);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("{line}");
                    let mut said = said.lock().unwrap();
                    if said.len() == 50 {
                        said.remove(0);
                    }
                    said.push(line);
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == "ready" => break,
                Ok(line) => banner.push(line),
                Err(e) => {
                    let _ = child.kill();
                    let ended = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    // The pipe's reader may still be passing on the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    let said = said.lock().unwrap().join("\n");
                    return Err(format!(
                        "hearth-node did not become ready ({e}; {ended}); printed {banner:?}; said:\n{said}"
                    ));
                }
            }
        }
        Ok(Self { child, banner })
    }

    /// The node's API address and token, from its banner ("web UI: URL/?token=T").
    pub fn api(&self) -> (String, String) {
        let line = self
            .banner
            .iter()
            .find_map(|l| l.strip_prefix("web UI: "))
            .expect("the banner names the web UI");
        let (url, token) = line.split_once("/?token=").expect("a token in the URL");
        (url.to_owned(), token.to_owned())
    }

    /// SIGKILL, as a crash or power cut would.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from a node's API (`(url, token)` as [`NodeProcess::api`] gives it) as JSON.
pub async fn api_get(http: &reqwest::Client, api: &(String, String), path: &str) -> Value {
    http.get(format!("{}{path}", api.0))
        .bearer_auth(&api.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Run the CLI (`hearth-node --data-dir DIR args…`) and return its standard output.
pub fn cli(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth-node"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hearth-node {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// POST a customer request to the pool.
pub async fn ask(url: &str, key: &str, path: &str, body: Value) -> Result<Value, String> {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{path}: {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// Run a worker with `config` until its first event, which must be a refusal
/// (`PoolUnreachable`); stop it and return what it said.
pub async fn first_refusal(
    config: hearth_node::worker::WorkerConfig,
    key: hearth_protocol::KeyPair,
    executor: std::sync::Arc<hearth_node::executor::Executor>,
    ledger: std::sync::Arc<hearth_ledger::Ledger>,
) -> String {
    let (_pause, paused) = tokio::sync::watch::channel(false);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let worker = tokio::spawn(hearth_node::worker::run(
        config,
        key,
        executor,
        ledger,
        paused,
        stop,
        None,
        move |event| {
            let _ = events_tx.send(event);
        },
    ));
    let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("the worker says why it does not work")
        .unwrap();
    let hearth_node::worker::WorkerEvent::PoolUnreachable { error } = event else {
        panic!("expected a refusal, got {event:?}");
    };
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    error
}

/// The receipts `pool` issued to `node_id`, after checking that `ledger` verifies against the
/// pool's key and holds every one of them and all their credits: nothing the pool paid is
/// missing from the owner's books. `context` names the run in a failure.
pub async fn assert_ledger_holds_every_receipt(
    pool: &hearth_pool::embedded::EmbeddedPool,
    ledger: &hearth_ledger::Ledger,
    node_id: &str,
    context: &str,
) -> Vec<hearth_protocol::SignedReceipt> {
    let state = pool.pool().state();
    let report = ledger
        .verify_chain(&state.pool_key.public_key())
        .unwrap_or_else(|e| panic!("{context}: the ledger does not verify: {e}"));
    let issued = state
        .store
        .receipts_after(node_id, None, 100_000)
        .await
        .unwrap_or_else(|e| panic!("{context}: the pool's receipts do not read: {e}"));
    assert_eq!(
        report.receipts,
        issued.len() as u64,
        "{context}: every receipt the pool issued is in the ledger"
    );
    assert_eq!(
        report.micro_credits,
        issued
            .iter()
            .map(|r| r.receipt.payment.micro_credits)
            .sum::<u64>(),
        "{context}: every credit the pool issued is in the ledger"
    );
    issued
}
