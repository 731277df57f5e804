//! Storage faults at every write, the way SQLite and FoundationDB test theirs: a real
//! `hearth-node` process works for a pool's customers with a small library preloaded
//! (`faults/faultinject.c`) that numbers every storage write it makes in its data folder
//! (data writes, syncs, file creations, renames, links) and fails one of them, and every one
//! after it until the "disk" is healed, with ENOSPC, EIO or EROFS, or kills the process at it
//! (the `hearth-faults` crate).
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

use hearth_faults::{Injection, Mode as Fault, writes_logged};
use hearth_ledger::Ledger;
use hearth_pool::embedded::EmbeddedPool;
use serde_json::{Value, json};
use support::{NodeProcess, api_get, ask, assert_ledger_holds_every_receipt};

/// Jobs paid in a counting run: its writes are the ones each fault run fails in turn.
const JOBS_COUNTED: usize = 2;

/// What a start refused on a read-only disk says.
const READ_ONLY_SAID: &str =
    "the disk is read-only: make it writable again, or start Hearth with another data folder";

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
async fn run_once(busy: &Busy, fault: Fault, at: usize) -> Seen {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let heal = root.path().join("healed");
    let log = root.path().join("writes.log");
    let args = busy.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let injection = Injection::watching(&data)
        .failing_from(at, fault)
        .healed_by(&heal)
        .logging_to(&log);
    let mut env = injection.env();
    // A refused start's reason in words, not a backtrace (the test command sets one).
    env.push(("RUST_BACKTRACE", "0"));
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
                    Fault::ReadOnly => READ_ONLY_SAID,
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
            if fault == Fault::ReadOnly
                && let Some(reason) = &seen.paused
            {
                assert!(
                    reason.contains(r#""storage_failing""#)
                        && reason.contains("the disk is read-only"),
                    "write {at}: {reason}"
                );
            }
            // Space is freed: it resumes by itself, and is paid for new work. (A job whose
            // result reached the pool as the fault hit may be paid while still paused: the
            // new work counted is what comes after the resume.)
            std::fs::write(&heal, b"").unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = status(&http, &api).await;
                if now
                    .as_ref()
                    .is_some_and(|s| s["activity"]["kind"] == "running")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "write {at} ({fault:?}): the node did not resume after the fault was gone: {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let id = node_id(&data).expect("a started node has its key");
            let before = busy.issued(&id).await.len();
            assert!(
                busy.paid_beyond(&id, before, Duration::from_secs(60)).await,
                "write {at} ({fault:?}): the node did not work again after the fault was gone"
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
    assert_ledger_holds_every_receipt(&busy.pool, &ledger, &id, &format!("write {at} ({fault:?})"))
        .await;
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
    let busy = Busy::start().await;

    // Counting run: the writes a fresh node makes until it is paid for its first jobs.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let log = root.path().join("writes.log");
    let args = busy.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let counting = Injection::watching(&data).logging_to(&log);
    let node = NodeProcess::try_start(&data, &args, &counting.env()).unwrap();
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
    let modes =
        std::env::var("HEARTH_FAULT_MODES").unwrap_or_else(|_| "enospc,eio,kill,erofs".into());
    let started = Instant::now();
    let mut table = Vec::new();
    for fault in [Fault::DiskFull, Fault::IoError, Fault::Kill] {
        if !modes.split(',').any(|m| m == fault.name()) {
            continue;
        }
        let (mut refused, mut paused, mut killed) = (0, 0, 0);
        for at in first..=writes.len().min(limit) {
            let seen = run_once(&busy, fault, at).await;
            refused += usize::from(seen.refused.is_some() && !seen.killed);
            paused += usize::from(seen.paused.is_some());
            killed += usize::from(seen.killed);
        }
        table.push(format!(
            "{fault:?}: {} writes failed in turn: start refused {refused}, paused and resumed {paused}, killed {killed}",
            writes.len().min(limit)
        ));
    }
    // A disk turned read-only: at the first write (the start is refused, saying so) and at the
    // last (the node pauses saying so, and works again once it can write).
    if modes.split(',').any(|m| m == Fault::ReadOnly.name()) {
        let at_start = run_once(&busy, Fault::ReadOnly, 1).await;
        assert!(at_start.refused.is_some(), "{at_start:?}");
        let at_work = run_once(&busy, Fault::ReadOnly, writes.len()).await;
        assert!(at_work.paused.is_some(), "{at_work:?}");
        table.push(format!(
            "ReadOnly: the start refused at write 1; paused and resumed at write {}",
            writes.len()
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
/// A user and mount namespace (util-linux `unshare`, no privileges needed) whose shell mounts
/// a small tmpfs as the data folder, starts the node on it and then follows the test's orders,
/// one line each through a fifo (`order [argument]`), answering `done <order>` on its standard
/// output when each is carried out. The node's own output comes through the same stream.
struct Namespace {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Lines read while waiting for an order to be done, not yet looked at.
    unread: std::collections::VecDeque<String>,
    orders: std::fs::File,
    /// Files the namespace's shell hands back (outside the tmpfs).
    control: PathBuf,
    _root: tempfile::TempDir,
}

impl Namespace {
    /// Mount a tmpfs of `size` at the data folder, start the node with `args`, then follow
    /// orders by `orders`: the body of a shell `case "$order" in … esac` (with `$arg`, `$DATA`,
    /// `$CONTROL`, `$NODE`, `$node` the node's process id, and the node's arguments as `"$@"`).
    fn start(args: &[String], size: &str, orders: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let (data, control) = (root.path().join("data"), root.path().join("control"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&control).unwrap();
        let fifo = control.join("orders");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let script = format!(
            r#"
            set -e
            mount -t tmpfs -o size={size} hearth-test "$DATA"
            "$NODE" --data-dir "$DATA" run "$@" &
            node=$!
            exec 3<"$ORDERS"
            while read -r order arg <&3; do
                case "$order" in
                    {orders}
                esac
                echo "done $order"
            done
            "#
        );
        let mut child = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(args)
            .env("DATA", &data)
            .env("CONTROL", &control)
            .env("ORDERS", &fifo)
            .env("NODE", env!("CARGO_BIN_EXE_hearth-node"))
            .env("RUST_BACKTRACE", "0")
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
        // Opening the fifo waits for the shell to open its end.
        let orders = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        Self {
            child,
            lines,
            unread: Default::default(),
            orders,
            control,
            _root: root,
        }
    }

    /// The node's API, once the node in the namespace says it is ready.
    fn wait_for_node(&mut self) -> (String, String) {
        let mut api = None;
        while let Some(line) = self
            .unread
            .pop_front()
            .or_else(|| self.lines.recv_timeout(Duration::from_secs(60)).ok())
        {
            if let Some(rest) = line.strip_prefix("web UI: ") {
                let (url, token) = rest.split_once("/?token=").unwrap();
                api = Some((url.to_owned(), token.to_owned()));
            }
            if line == "ready" {
                break;
            }
        }
        api.expect("the node in the namespace started (mounting a tmpfs needs user namespaces)")
    }

    /// Give an order and wait until it is carried out.
    fn order(&mut self, text: &str) {
        use std::io::Write;
        writeln!(self.orders, "{text}").unwrap();
        self.orders.flush().unwrap();
        let order = text.split(' ').next().unwrap();
        let done = format!("done {order}");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(120)) {
            if line == done {
                return;
            }
            self.unread.push_back(line);
        }
        panic!("the namespace did not carry out {text:?}");
    }

    /// A file the namespace's shell wrote into the control folder.
    fn control_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.control.join(name)).unwrap_or_default()
    }

    /// Wait for the namespace's shell to end (its files stay until the namespace is dropped).
    fn ended(&mut self) -> std::process::ExitStatus {
        tokio::task::block_in_place(|| self.child.wait()).unwrap()
    }
}

/// The node's clean stop, and its ledger copied out of the tmpfs; the shell then ends.
const STOP_AND_COPY_OUT: &str = r#"
    stop) kill -TERM "$node"; status=0; wait "$node" || status=$?
          cp -a "$DATA/ledger" "$DATA/node.key" "$CONTROL/"
          echo "$status" > "$CONTROL/exit"; echo "done stop"; exit 0 ;;"#;

/// The real thing: the data folder is a small tmpfs (mounted in a user and mount namespace of
/// its own), and a file fills it while the node works. The node pauses saying the disk is
/// full and how much room it wants, takes no work meanwhile, and once the file is removed it
/// works again by itself; its ledger, copied out after a clean stop, verifies and holds every
/// receipt the pool issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_pauses_the_node_until_space_is_freed() {
    let busy = Busy::start().await;
    let orders = format!(
        r#"
        fill) head -c 64M /dev/zero > "$DATA/filler" 2>/dev/null || true
              df -k "$DATA" | tail -1 > "$CONTROL/filled" ;;
        free) rm -f "$DATA/filler" ;;{STOP_AND_COPY_OUT}"#
    );
    let mut namespace = Namespace::start(&busy.args(), "16m", &orders);
    let api = namespace.wait_for_node();
    let http = reqwest::Client::new();
    let id = {
        let overview = api_get(&http, &api, "/api/overview").await;
        overview["node_id"].as_str().unwrap().to_owned()
    };
    assert!(
        busy.paid_beyond(&id, 0, Duration::from_secs(60)).await,
        "the node works"
    );

    namespace.order("fill");
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
        namespace.control_file("filled").trim()
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

    namespace.order("free");
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

    namespace.order("stop");
    assert_eq!(namespace.control_file("exit").trim(), "0", "a clean stop");
    assert!(namespace.ended().success());
    let ledger = Ledger::open(&namespace.control.join("ledger")).unwrap();
    assert_ledger_holds_every_receipt(&busy.pool, &ledger, &id, "after the disk filled").await;
    busy.stop().await;
}

/// A real read-only mount: the node stopped, its tmpfs remounted read-only, a start is refused
/// saying the disk is read-only and what to do, and leaves every file as it was. (A running
/// node's disk cannot be remounted read-only here: Linux refuses while files are open for
/// writing, so the read-only disk under a running node is the fault library's EROFS, in
/// `every_storage_write_fails_in_turn_and_the_node_recovers_losing_nothing`.) Writable again,
/// the node starts and works, and its ledger holds every receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_disk_refuses_the_start_saying_so_and_leaves_the_folder_as_it_was() {
    let busy = Busy::start().await;
    let orders = format!(
        r#"
        halt) kill -TERM "$node"; wait "$node" ;;
        readonly) mount -o remount,ro "$DATA" ;;
        writable) mount -o remount,rw "$DATA" ;;
        files) (cd "$DATA" && find . -type f -exec sha256sum {{}} + | sort && find . | sort) > "$CONTROL/$arg" ;;
        try) status=0
             timeout 60 "$NODE" --data-dir "$DATA" run "$@" > "$CONTROL/try.out" 2> "$CONTROL/try.err" || status=$?
             echo "$status" > "$CONTROL/try.status" ;;
        start) "$NODE" --data-dir "$DATA" run "$@" & node=$! ;;{STOP_AND_COPY_OUT}"#
    );
    let mut namespace = Namespace::start(&busy.args(), "64m", &orders);
    let http = reqwest::Client::new();
    let api = namespace.wait_for_node();
    let id = api_get(&http, &api, "/api/overview").await["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(busy.paid_beyond(&id, 0, Duration::from_secs(60)).await);
    namespace.order("halt");
    namespace.order("files before");
    namespace.order("readonly");

    namespace.order("try");
    assert_ne!(namespace.control_file("try.status").trim(), "0");
    let said = namespace.control_file("try.err");
    eprintln!("a start on the read-only disk said: {}", said.trim());
    assert!(
        said.contains(READ_ONLY_SAID),
        "the refusal says why: {said}"
    );
    assert!(!said.contains("another Hearth"), "{said}");
    namespace.order("files after");
    let (before, after) = (
        namespace.control_file("before"),
        namespace.control_file("after"),
    );
    assert!(before.contains("./ledger/db"), "{before}");
    assert_eq!(before, after, "the folder is as it was");

    namespace.order("writable");
    namespace.order("start");
    namespace.wait_for_node();
    let paid = busy.issued(&id).await.len();
    assert!(busy.paid_beyond(&id, paid, Duration::from_secs(60)).await);
    namespace.order("stop");
    assert_eq!(namespace.control_file("exit").trim(), "0");
    assert!(namespace.ended().success());
    let ledger = Ledger::open(&namespace.control.join("ledger")).unwrap();
    assert_ledger_holds_every_receipt(&busy.pool, &ledger, &id, "writable again").await;
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
    assert_ledger_holds_every_receipt(&busy.pool, &ledger, &id, "the new ledger").await;
    busy.stop().await;
}

/// A log tail the disk damaged: sled opens the ledger without an error but drops everything
/// from the damage on, the newest receipt with it. The node finds it by the chain mark, says
/// so, and collects the receipt back from the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_missing_its_newest_receipts_says_so_and_they_come_back() {
    let busy = Busy::start().await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let args = busy.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = NodeProcess::start(&data, &args);
    let id = node_id(&data).unwrap();
    assert!(busy.paid_beyond(&id, 2, Duration::from_secs(60)).await);
    assert!(node.stop().success());
    let issued = busy.issued(&id).await;
    let newest = &issued.last().unwrap().receipt.payment.job_id;
    // One bit flipped in the newest receipt's record, as a failing disk does.
    let db = data.join("ledger").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes
        .windows(newest.len())
        .rposition(|w| w == newest.as_bytes())
        .expect("the newest receipt is in the log");
    bytes[at] ^= 0x01;
    std::fs::write(&db, &bytes).unwrap();
    {
        let ledger = Ledger::open(&data.join("ledger")).unwrap();
        assert!(
            ledger.lost_receipts().unwrap().is_some(),
            "sled opened it shorter, without an error"
        );
    }

    let node = NodeProcess::start(&data, &args);
    let api = node.api();
    let overview = api_get(&reqwest::Client::new(), &api, "/api/overview").await;
    assert!(
        overview["pool"]["notices"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("The disk damaged the end of the earnings ledger: its newest"),
        "{overview}"
    );
    let paid_before = busy.issued(&id).await.len();
    assert!(
        busy.paid_beyond(&id, paid_before, Duration::from_secs(60))
            .await
    );
    assert!(node.stop().success());
    let ledger = Ledger::open(&data.join("ledger")).unwrap();
    assert_eq!(ledger.lost_receipts().unwrap(), None, "nothing missing now");
    assert_ledger_holds_every_receipt(&busy.pool, &ledger, &id, "the mended tail").await;
    busy.stop().await;
}
