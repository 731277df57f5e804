//! Storage faults at every write, the way SQLite and FoundationDB test theirs: a real
//! `hearth-node` process works for a pool's customers with a small library preloaded
//! (`faults/faultinject.c`) that numbers every storage write it makes in its data folder
//! (data writes, syncs, file creations, renames, links) and fails one of them, and every one
//! after it until the "disk" is healed, with ENOSPC or EIO, or kills the process at it.
//!
//! A counting run learns how many writes a fresh node makes while it starts and is paid for
//! its first jobs; then each write in turn is failed in each mode. After every fault: the
//! node said what was wrong (a paused state naming the disk, or a start refused with the
//! reason), it works again by itself once the fault is gone (or when started again after a
//! kill), and then its ledger opens, verifies, and holds every receipt the pool issued to it,
//! each job once.

#![cfg(target_os = "linux")] // the library is preloaded the way glibc's loader does it
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hearth_ledger::Ledger;
use hearth_pool::embedded::EmbeddedPool;
use serde_json::{Value, json};
use support::{NodeProcess, api_get, ask};

/// Jobs paid in a counting run: its writes are the ones each fault run fails in turn.
const JOBS_COUNTED: usize = 2;

/// The fault-injection library, compiled once per test binary run.
fn fault_library() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/faultinject.c");
    let library = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libhearthfault.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) builds the fault library");
    assert!(built.success(), "the fault library did not build");
    library
}

/// How a run fails its chosen write.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// That write and every one after fail with ENOSPC until healed.
    DiskFull,
    /// Likewise with EIO: a failing disk.
    IoError,
    /// The process is killed (SIGKILL) at that write.
    Kill,
}

impl Fault {
    fn mode(self) -> &'static str {
        match self {
            Fault::DiskFull => "enospc",
            Fault::IoError => "eio",
            Fault::Kill => "kill",
        }
    }
}

/// The pool in this process and customers keeping it busy with short embedding requests.
struct Busy {
    pool: EmbeddedPool,
    stop: Arc<AtomicBool>,
    customers: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Busy {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pool = hearth_pool::embedded::start(
            dir.path(),
            &hearth_inference::ModelStore::from_env(),
            None,
        )
        .await
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let customers = (0..2)
            .map(|c| {
                let (url, key, stop) = (pool.url(), pool.api_key().to_owned(), stop.clone());
                tokio::spawn(async move {
                    let mut n = c;
                    while !stop.load(Ordering::Relaxed) {
                        n += 2;
                        let body = json!({"model": "all-minilm-l6-v2",
                            "input": [format!("fault test request {n}")]});
                        if let Err(error) = ask(&url, &key, "/v1/embeddings", body).await {
                            // The node is paused or gone a while in most runs; the request
                            // ends by its deadline and the customer asks again.
                            eprintln!("customer: {error}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            pool,
            stop,
            customers,
            _dir: dir,
        }
    }

    fn args(&self) -> Vec<String> {
        [
            "--pool",
            &self.pool.url(),
            "--port",
            "0",
            "--backend",
            "cpu",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Receipts the pool issued to `node_id`.
    async fn issued(&self, node_id: &str) -> Vec<hearth_protocol::SignedReceipt> {
        self.pool
            .pool()
            .state()
            .store
            .receipts_after(node_id, None, 100_000)
            .await
            .unwrap()
    }

    /// Wait until the pool has issued `node_id` more than `count` receipts.
    async fn paid_beyond(&self, node_id: &str, count: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.issued(node_id).await.len() > count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for customer in self.customers {
            customer.abort();
        }
    }
}

/// The node's id, once its key exists.
fn node_id(data: &Path) -> Option<String> {
    let key = data.join("node.key");
    key.exists().then(|| {
        let key = hearth_node::worker::load_or_create_identity(&key).unwrap();
        hearth_protocol::node_id(&key.public_key())
    })
}

/// Numbered writes the injection library logged so far.
fn writes_logged(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Save the settings through the API, as the window does (one more storage write: the
/// settings file, written to a temporary file, synced and renamed). The status it answered.
async fn save_settings(http: &reqwest::Client, api: &(String, String)) -> Option<u16> {
    let mut settings: Value = http
        .get(format!("{}/api/settings", api.0))
        .bearer_auth(&api.1)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    settings["game_cooldown_s"] = json!(45);
    let saved = http
        .put(format!("{}/api/settings", api.0))
        .bearer_auth(&api.1)
        .json(&settings)
        .send()
        .await
        .ok()?;
    Some(saved.status().as_u16())
}

async fn status(http: &reqwest::Client, api: &(String, String)) -> Option<Value> {
    let response = http
        .get(format!("{}/api/status", api.0))
        .bearer_auth(&api.1)
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// What one fault run saw.
#[derive(Debug, Default)]
struct Seen {
    /// The start was refused, with this message.
    refused: Option<String>,
    /// The node paused for the fault, with these words.
    paused: Option<String>,
    killed: bool,
}

/// One run: a fresh node whose write number `at` fails by `fault`, healed (or restarted)
/// after, and checked.
async fn run_once(busy: &Busy, library: &Path, fault: Fault, at: usize) -> Seen {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let heal = root.path().join("healed");
    let log = root.path().join("writes.log");
    let args = busy.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let at_text = at.to_string();
    let env = [
        ("LD_PRELOAD", library.to_str().unwrap()),
        ("HEARTH_FAULT_DIR", data.to_str().unwrap()),
        ("HEARTH_FAULT_AT", at_text.as_str()),
        ("HEARTH_FAULT_MODE", fault.mode()),
        ("HEARTH_FAULT_HEAL", heal.to_str().unwrap()),
        ("HEARTH_FAULT_LOG", log.to_str().unwrap()),
        // A refused start's reason in words, not a backtrace (the test command sets one).
        ("RUST_BACKTRACE", "0"),
    ];
    let http = reqwest::Client::new();
    let mut seen = Seen::default();
    let started = NodeProcess::try_start(&data, &args, &env);
    match started {
        Err(why) => {
            // The fault hit the start: it was refused, saying why (or killed).
            if fault == Fault::Kill {
                seen.killed = true;
            } else {
                let said = match fault {
                    Fault::DiskFull => "the disk is full: free some space, then start Hearth again",
                    _ => {
                        "the disk reports errors and may be failing: check it, then start Hearth again"
                    }
                };
                assert!(
                    why.contains(said),
                    "write {at} ({fault:?}): a refused start says why: {why}"
                );
            }
            seen.refused = Some(why);
        }
        Ok(mut node) if fault == Fault::Kill => {
            let _ = save_settings(&http, &node.api()).await;
            // Killed at the write, or the run ended before it (a write that came late).
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if node.child.try_wait().unwrap().is_some() {
                    seen.killed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !seen.killed {
                node.kill_hard();
            }
        }
        Ok(node) => {
            let api = node.api();
            // The settings file is one of the writes: saved, or refused as a storage error
            // (507) with the old file intact.
            let saved = save_settings(&http, &api).await;
            assert!(
                matches!(saved, Some(200 | 507)),
                "write {at} ({fault:?}): saving the settings answered {saved:?}"
            );
            // The fault surfaces as a paused state naming the disk.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && seen.paused.is_none() {
                if let Some(status) = status(&http, &api).await {
                    let kind = status["activity"]["reason"]["kind"].as_str().unwrap_or("");
                    if kind == "disk_full" || kind == "storage_failing" {
                        seen.paused = Some(status["activity"]["reason"].to_string());
                    }
                }
                if seen.paused.is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let numbered = writes_logged(&log).len();
            assert!(
                seen.paused.is_some() || numbered < at,
                "write {at} ({fault:?}) failed but the node did not pause for it"
            );
            // Space is freed: it works again by itself, and is paid for new work.
            std::fs::write(&heal, b"").unwrap();
            let id = node_id(&data).expect("a started node has its key");
            let before = busy.issued(&id).await.len();
            assert!(
                busy.paid_beyond(&id, before, Duration::from_secs(60)).await,
                "write {at} ({fault:?}): the node did not work again after the fault was gone"
            );
            let resumed = status(&http, &api).await.unwrap();
            assert_eq!(
                resumed["activity"]["kind"], "running",
                "write {at}: {resumed}"
            );
            assert!(
                node.stop().success(),
                "write {at}: a clean stop after healing"
            );
        }
    }
    // Started again with the fault gone (after a refused start or a kill), it works.
    if seen.refused.is_some() || seen.killed {
        let node = NodeProcess::try_start(&data, &args, &[("RUST_BACKTRACE", "0")])
            .unwrap_or_else(|why| panic!("write {at} ({fault:?}): the next start failed: {why}"));
        let id = node_id(&data).unwrap();
        let before = busy.issued(&id).await.len();
        assert!(
            busy.paid_beyond(&id, before, Duration::from_secs(60)).await,
            "write {at} ({fault:?}): the restarted node was not paid"
        );
        assert!(node.stop().success());
    }
    // The settings file is whole (the old one or the new one), and the ledger opens,
    // verifies and holds every receipt the pool issued, each job once.
    hearth_node::config::NodeConfig::load(&data)
        .unwrap_or_else(|e| panic!("write {at} ({fault:?}): the settings do not read: {e}"));
    let id = node_id(&data).unwrap();
    let ledger = Ledger::open(&data.join("ledger"))
        .unwrap_or_else(|e| panic!("write {at} ({fault:?}): the ledger did not open: {e}"));
    let pool_key = busy.pool.pool().state().pool_key.public_key();
    let report = ledger
        .verify_chain(&pool_key)
        .unwrap_or_else(|e| panic!("write {at} ({fault:?}): the ledger does not verify: {e}"));
    let issued = busy.issued(&id).await;
    assert_eq!(
        report.receipts,
        issued.len() as u64,
        "write {at} ({fault:?}): every receipt issued is in the ledger"
    );
    let jobs = ledger.jobs_between(0, u64::MAX, usize::MAX).unwrap();
    let mut ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    ids.sort_unstable();
    let rows = ids.len();
    ids.dedup();
    assert_eq!(rows, ids.len(), "write {at} ({fault:?}): one row per job");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_storage_write_fails_in_turn_and_the_node_recovers_losing_nothing() {
    let library = fault_library();
    let busy = Busy::start().await;

    // Counting run: the writes a fresh node makes until it is paid for its first jobs.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let log = root.path().join("writes.log");
    let args = busy.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [
        ("LD_PRELOAD", library.to_str().unwrap()),
        ("HEARTH_FAULT_DIR", data.to_str().unwrap()),
        ("HEARTH_FAULT_LOG", log.to_str().unwrap()),
    ];
    let node = NodeProcess::try_start(&data, &args, &env).unwrap();
    assert_eq!(
        save_settings(&reqwest::Client::new(), &node.api()).await,
        Some(200)
    );
    let id = node_id(&data).unwrap();
    assert!(
        busy.paid_beyond(&id, JOBS_COUNTED - 1, Duration::from_secs(60))
            .await
    );
    let writes = writes_logged(&log);
    assert!(node.stop().success());
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for line in &writes {
        let mut fields = line.split(' ');
        let (_, op, path) = (
            fields.next(),
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
        );
        let file = path.strip_prefix(data.to_str().unwrap()).unwrap_or(path);
        let place = file.trim_start_matches('/').split('/').next().unwrap_or("");
        *kinds.entry(format!("{op} {place}")).or_default() += 1;
    }
    eprintln!(
        "a fresh node made {} storage writes up to its first {JOBS_COUNTED} paid jobs: {kinds:?}",
        writes.len()
    );
    assert!(
        writes.len() >= 10,
        "the library numbers the node's writes: {writes:?}"
    );

    // To look into one write: HEARTH_FAULT_FROM=n HEARTH_FAULT_POINTS=n (and
    // HEARTH_FAULT_MODES=enospc,eio,kill to choose the faults).
    let setting = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let limit = setting("HEARTH_FAULT_POINTS").unwrap_or(usize::MAX);
    let first = setting("HEARTH_FAULT_FROM").unwrap_or(1);
    let modes = std::env::var("HEARTH_FAULT_MODES").unwrap_or_else(|_| "enospc,eio,kill".into());
    let started = Instant::now();
    let mut table = Vec::new();
    for fault in [Fault::DiskFull, Fault::IoError, Fault::Kill] {
        if !modes.split(',').any(|m| m == fault.mode()) {
            continue;
        }
        let (mut refused, mut paused, mut killed) = (0, 0, 0);
        for at in first..=writes.len().min(limit) {
            let seen = run_once(&busy, &library, fault, at).await;
            refused += usize::from(seen.refused.is_some() && !seen.killed);
            paused += usize::from(seen.paused.is_some());
            killed += usize::from(seen.killed);
        }
        table.push(format!(
            "{fault:?}: {} writes failed in turn: start refused {refused}, paused and resumed {paused}, killed {killed}",
            writes.len().min(limit)
        ));
    }
    for line in &table {
        eprintln!("{line}");
    }
    eprintln!("fault runs took {:.0?}", started.elapsed());
    busy.stop().await;
}

/// The real thing: the data folder is a small tmpfs (mounted in a user and mount namespace of
/// its own), and a file fills it while the node works. The node pauses saying the disk is
/// full and how much room it wants, takes no work meanwhile, and once the file is removed it
/// works again by itself; its ledger, copied out after a clean stop, verifies and holds every
/// receipt the pool issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_pauses_the_node_until_space_is_freed() {
    let busy = Busy::start().await;
    let root = tempfile::tempdir().unwrap();
    let (data, control) = (root.path().join("data"), root.path().join("control"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&control).unwrap();
    let orders = control.join("orders");
    assert!(
        Command::new("mkfifo")
            .arg(&orders)
            .status()
            .unwrap()
            .success()
    );
    // The namespace's shell: mount, run the node, then follow the test's orders (one line
    // each through the fifo): fill the disk, free it, stop the node and copy its ledger out.
    let script = r#"
        set -e
        mount -t tmpfs -o size=16m hearth-test "$DATA"
        "$NODE" --data-dir "$DATA" run "$@" &
        node=$!
        exec 3<"$ORDERS"
        while read -r order <&3; do
            case "$order" in
                fill) head -c 64M /dev/zero > "$DATA/filler" 2>/dev/null || true
                      df -k "$DATA" | tail -1 > "$CONTROL/filled" ;;
                free) rm -f "$DATA/filler" ;;
                stop) kill -TERM "$node"; status=0; wait "$node" || status=$?
                      cp -a "$DATA/ledger" "$DATA/node.key" "$CONTROL/"
                      echo "$status" > "$CONTROL/exit"; exit 0 ;;
            esac
        done
    "#;
    let args = busy.args();
    let mut child = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .args(&args)
        .env("DATA", &data)
        .env("CONTROL", &control)
        .env("ORDERS", &orders)
        .env("NODE", env!("CARGO_BIN_EXE_hearth-node"))
        .env(
            "RUST_LOG",
            std::env::var("HEARTH_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) starts the namespace");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut api = None;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        if let Some(rest) = line.strip_prefix("web UI: ") {
            let (url, token) = rest.split_once("/?token=").unwrap();
            api = Some((url.to_owned(), token.to_owned()));
        }
        if line == "ready" {
            break;
        }
    }
    let api =
        api.expect("the node in the namespace started (mounting a tmpfs needs user namespaces)");
    let mut orders = std::fs::OpenOptions::new()
        .write(true)
        .open(&orders)
        .unwrap();
    let mut order = |text: &str| {
        use std::io::Write;
        writeln!(orders, "{text}").unwrap();
        orders.flush().unwrap();
    };
    let http = reqwest::Client::new();
    let id = {
        let overview = api_get(&http, &api, "/api/overview").await;
        overview["node_id"].as_str().unwrap().to_owned()
    };
    assert!(
        busy.paid_beyond(&id, 0, Duration::from_secs(60)).await,
        "the node works"
    );

    order("fill");
    let deadline = Instant::now() + Duration::from_secs(60);
    let paused = loop {
        let now = status(&http, &api).await.unwrap();
        if now["activity"]["reason"]["kind"] == "disk_full" {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the full disk did not pause the node: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let needed = paused["activity"]["reason"]["needed_bytes"]
        .as_u64()
        .unwrap();
    eprintln!(
        "filled ({}): paused, {needed} bytes wanted",
        std::fs::read_to_string(control.join("filled"))
            .unwrap_or_default()
            .trim()
    );
    assert!(
        needed > 40 << 20,
        "a 16 MB disk is short of the 64 MiB headroom: {needed}"
    );
    // Paused, it takes no work: nothing is paid while the disk stays full.
    let paid_while_full = busy.issued(&id).await.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        busy.issued(&id).await.len() <= paid_while_full + 1,
        "a job in flight at the fault may be paid, no new one"
    );

    order("free");
    let paid_before = busy.issued(&id).await.len();
    assert!(
        busy.paid_beyond(&id, paid_before, Duration::from_secs(60))
            .await,
        "space freed, the node works again by itself"
    );
    assert_eq!(
        status(&http, &api).await.unwrap()["activity"]["kind"],
        "running"
    );

    order("stop");
    let ended = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(ended.success());
    assert_eq!(
        std::fs::read_to_string(control.join("exit"))
            .unwrap()
            .trim(),
        "0"
    );
    let ledger = Ledger::open(&control.join("ledger")).unwrap();
    let pool_key = busy.pool.pool().state().pool_key.public_key();
    let report = ledger.verify_chain(&pool_key).unwrap();
    let issued = busy.issued(&id).await;
    assert_eq!(
        report.receipts,
        issued.len() as u64,
        "every receipt is in the ledger"
    );
    busy.stop().await;
}

/// A ledger damaged beyond opening (a snapshot full of garbage: sled refuses it) does not
/// strand the owner: the node moves it aside (nothing deleted), starts a new one, says so in
/// its status, and collects every receipt the pool issued to it back into the new ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_ledger_is_moved_aside_and_the_receipts_come_back_from_the_pool() {
    let busy = Busy::start().await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let args = busy.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = NodeProcess::start(&data, &args);
    let id = node_id(&data).unwrap();
    assert!(busy.paid_beyond(&id, 2, Duration::from_secs(60)).await);
    assert!(node.stop().success());
    let paid_before = busy.issued(&id).await.len();
    std::fs::write(
        data.join("ledger")
            .join(format!("snap.{:016X}", u64::MAX >> 8)),
        vec![0x5a; 4096],
    )
    .unwrap();

    let node = NodeProcess::start(&data, &args);
    let api = node.api();
    let overview = api_get(&reqwest::Client::new(), &api, "/api/overview").await;
    let notice = overview["pool"]["notices"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        notice
            .starts_with("The earnings ledger was damaged and could not be read. It was moved to "),
        "{overview}"
    );
    assert!(
        busy.paid_beyond(&id, paid_before, Duration::from_secs(60))
            .await
    );
    assert!(node.stop().success());

    let moved: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ledger.damaged-")
        })
        .collect();
    assert_eq!(moved.len(), 1);
    assert!(notice.contains(&*moved[0].to_string_lossy()));
    assert!(moved[0].join("db").exists(), "the damaged ledger is kept");
    let ledger = Ledger::open(&data.join("ledger")).unwrap();
    let report = ledger
        .verify_chain(&busy.pool.pool().state().pool_key.public_key())
        .unwrap();
    let issued = busy.issued(&id).await;
    assert_eq!(
        report.receipts,
        issued.len() as u64,
        "every receipt came back"
    );
    assert_eq!(
        report.micro_credits,
        issued
            .iter()
            .map(|r| r.receipt.payment.micro_credits)
            .sum::<u64>()
    );
    busy.stop().await;
}
