//! The headless node as a real process: `hearth-node run` against a pool on loopback, its JSON
//! API, server-sent events and token, and the CLI commands that talk to it or to its ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{NodeProcess, ask, cli};

/// `GET base+path` with the token, as JSON.
/// POST `body` (none when `Value::Null`) to `path` with the token; the response.
async fn post(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    let request = http.post(format!("{base}{path}")).bearer_auth(token);
    let request = if body.is_null() {
        request
    } else {
        request.json(body)
    };
    request.send().await.unwrap()
}

async fn get_json(http: &reqwest::Client, base: &str, token: &str, path: &str) -> Value {
    http.get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_node_serves_api_events_and_cli_and_stops_cleanly() {
    let pool_dir = tempfile::tempdir().unwrap();
    let pool = hearth_pool::embedded::start(
        pool_dir.path(),
        &hearth_inference::ModelStore::from_env(),
        None,
    )
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        data.path(),
        &["--pool", &pool.url(), "--port", "0", "--backend", "cpu"],
    );
    assert!(
        node.banner.iter().any(|l| l.contains("/?token=")),
        "{:?}",
        node.banner
    );
    let info: Value =
        serde_json::from_slice(&std::fs::read(data.path().join("server.json")).unwrap()).unwrap();
    let base = info["url"].as_str().unwrap().to_owned();
    let token = std::fs::read_to_string(data.path().join("api-token")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["api-token", "node.key"] {
            let mode = std::fs::metadata(data.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    let http = reqwest::Client::new();

    // Without the token: refused. Anyone else on the machine sees nothing.
    let refused = http
        .get(format!("{base}/api/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = http
        .get(format!("{base}/api/overview"))
        .bearer_auth("0".repeat(48))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // The hardware is listed, but the graphics drivers were asked in a child process: none of
    // them (Mesa's lavapipe brings LLVM) is loaded into the node.
    let hardware = get_json(&http, &base, &token, "/api/hardware").await;
    let probed = std::process::Command::new(env!("CARGO_BIN_EXE_hearth-node"))
        .arg(hearth_hardware::probe::PROBE_ARG)
        .output()
        .unwrap();
    let adapters: Vec<hearth_hardware::AdapterRecord> =
        serde_json::from_slice(&probed.stdout).unwrap();
    assert_eq!(
        hardware["gpus"].as_array().unwrap().is_empty(),
        adapters.is_empty(),
        "{hardware}"
    );
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", node.child.id())).unwrap();
    for driver in ["libvulkan", "libLLVM", "_dri.so", "libnvidia"] {
        assert!(!maps.contains(driver), "{driver} is loaded in the node");
    }

    // Events: the current state first, then a job's start and end.
    let mut events = http
        .get(format!("{base}/api/events?token={token}"))
        .send()
        .await
        .unwrap();
    let answer = ask(
        &pool.url(),
        pool.api_key(),
        "/v1/embeddings",
        json!({"model": "all-minilm-l6-v2", "input": ["headless rigs lend GPUs too"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        answer["data"][0]["embedding"].as_array().unwrap().len(),
        384
    );
    let mut seen = String::new();
    let collected = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = events.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            // (earnings are also announced when the node joins: wait for the job's)
            if seen
                .find("\"job_ended\"")
                .is_some_and(|at| seen[at..].contains("\"earnings_changed\""))
            {
                break;
            }
        }
    })
    .await;
    assert!(collected.is_ok(), "events so far: {seen}");
    for kind in [
        "status_changed",
        "job_started",
        "job_ended",
        "earnings_changed",
    ] {
        assert!(
            seen.contains(&format!("\"type\":\"{kind}\"")),
            "{kind} missing in {seen}"
        );
    }

    // The overview has the job, paid, and today's earnings.
    let overview: Value = get_json(&http, &base, &token, "/api/overview").await;
    let job = &overview["jobs"][0];
    assert_eq!(job["state"], "completed", "{overview}");
    assert_eq!(job["model"], "all-minilm-l6-v2");
    assert!(job["micro_credits"].as_u64().unwrap() > 0);
    assert_eq!(job["receipt_sequence"], 0);
    assert_eq!(
        overview["earnings"]["today_micro_credits"],
        job["micro_credits"]
    );
    assert_eq!(overview["pool"]["connected"], true);
    assert_eq!(overview["pool"]["name"], "Local demo pool");

    // The pages' queries: the job in the history and the earnings report.
    let page: Value = post(
        &http,
        &base,
        &token,
        "/api/jobs/page",
        &json!({"offset": 0, "limit": 10, "state": "completed"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["jobs"][0]["job_id"], job["job_id"]);
    let report: Value = get_json(&http, &base, &token, "/api/earnings/report").await;
    assert_eq!(report["periods"][0]["days"], 1);
    assert_eq!(report["periods"][0]["micro_credits"], job["micro_credits"]);
    assert_eq!(report["by_model"][0]["model"], "all-minilm-l6-v2");

    // Settings: a bad value is refused with its reason and nothing is written.
    let mut settings: Value = get_json(&http, &base, &token, "/api/settings").await;
    let put_settings = |settings: Value| {
        http.put(format!("{base}/api/settings"))
            .bearer_auth(&token)
            .json(&settings)
            .send()
    };
    settings["currency"] = json!("euro");
    let refused = put_settings(settings.clone()).await.unwrap();
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().starts_with("currency: "));
    assert!(!data.path().join("config.toml").exists());
    settings["currency"] = json!("CHF");
    let saved = put_settings(settings.clone()).await.unwrap();
    assert_eq!(saved.status(), 200);
    let file = std::fs::read_to_string(data.path().join("config.toml")).unwrap();
    assert!(file.contains("currency = \"CHF\""), "{file}");
    // Pause rules apply at once: a schedule that leaves out the next hours pauses the node.
    let later = (chrono::Local::now() + chrono::Duration::hours(2)).format("%H:00");
    let later_end = (chrono::Local::now() + chrono::Duration::hours(3)).format("%H:00");
    settings["currency"] = json!("CHF");
    settings["schedule"] = json!([format!("daily {later}-{later_end}")]);
    assert_eq!(put_settings(settings.clone()).await.unwrap().status(), 200);
    let scheduled = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let status: Value = get_json(&http, &base, &token, "/api/status").await;
            if status["activity"]["reason"]["kind"] == "schedule" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        scheduled.is_ok(),
        "the new schedule did not pause the node: {} (settings {})",
        get_json(&http, &base, &token, "/api/status").await,
        std::fs::read_to_string(data.path().join("config.toml")).unwrap()
    );
    settings["schedule"] = json!([]);
    assert_eq!(put_settings(settings).await.unwrap().status(), 200);
    let running = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let status: Value = get_json(&http, &base, &token, "/api/status").await;
            if status["activity"]["kind"] == "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        running.is_ok(),
        "work did not resume with the schedule gone"
    );

    // The CLI talks to the running node.
    let status = cli(data.path(), &["status"]);
    assert!(status.contains("state     running"), "{status}");
    // Its reader gone (`hearth-node status | head -1` once head has its line): it stops
    // quietly, as command-line tools do, instead of panicking on the closed pipe.
    let mut reader_gone = std::process::Command::new(env!("CARGO_BIN_EXE_hearth-node"))
        .arg("--data-dir")
        .arg(data.path())
        .arg("status")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(reader_gone.stdout.take());
    let ended = reader_gone.wait_with_output().unwrap();
    let complaints = String::from_utf8_lossy(&ended.stderr);
    assert!(
        ended.status.success() && !complaints.contains("panicked"),
        "{:?}: {complaints}",
        ended.status
    );
    assert!(status.contains("all-minilm-l6-v2"), "{status}");
    assert_eq!(
        cli(data.path(), &["pause"]).trim(),
        "paused from the command line"
    );
    let paused: Value = get_json(&http, &base, &token, "/api/status").await;
    assert_eq!(paused["activity"]["kind"], "paused");
    assert_eq!(cli(data.path(), &["resume"]).trim(), "running");
    let timed = cli(data.path(), &["pause", "--for", "30m"]);
    assert!(
        timed.starts_with("paused from the command line until "),
        "{timed}"
    );
    assert_eq!(cli(data.path(), &["resume"]).trim(), "running");
    // A pause for seconds ends that many seconds on; a length out of range, or given twice,
    // is refused and changes nothing.
    for query in ["seconds=0", "seconds=86401", "minutes=1&seconds=5"] {
        let refused = post(
            &http,
            &base,
            &token,
            &format!("/api/pause?{query}"),
            &Value::Null,
        )
        .await;
        assert_eq!(refused.status(), 400, "{query}");
    }
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let brief: Value = post(&http, &base, &token, "/api/pause?seconds=90", &Value::Null)
        .await
        .json()
        .await
        .unwrap();
    let until_ms = brief["activity"]["reason"]["until_ms"].as_u64().unwrap();
    assert!(
        (before_ms + 89_000..before_ms + 92_000).contains(&until_ms),
        "{brief}"
    );
    assert_eq!(cli(data.path(), &["resume"]).trim(), "running");
    // "Resume anyway" needs an automatic pause to work through; the refusal is in words.
    let nothing = post(&http, &base, &token, "/api/resume-anyway", &Value::Null).await;
    assert_eq!(nothing.status(), 409);
    assert_eq!(
        nothing.text().await.unwrap(),
        "not paused: nothing to resume"
    );
    let too_long = post(
        &http,
        &base,
        &token,
        "/api/resume-anyway?seconds=0",
        &Value::Null,
    )
    .await;
    assert_eq!(too_long.status(), 400);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_hearth-node"))
        .args(["--data-dir"])
        .arg(data.path())
        .args(["resume", "--anyway"])
        // As an owner's terminal: no backtrace asked for (the test harness may set one).
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "hearth-node: not paused: nothing to resume"
    );
    // Resource use over time and the game list.
    // The sampler reads once a second: ask until the first reading is there.
    let mut history = Value::Null;
    for _ in 0..50 {
        history = get_json(&http, &base, &token, "/api/telemetry?minutes=60").await;
        if history.as_array().is_some_and(|points| !points.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let points = history.as_array().unwrap();
    assert!(
        !points.is_empty(),
        "the minutes not stored yet come from memory"
    );
    assert!(points.len() <= 240);
    assert!(
        points
            .iter()
            .all(|p| p["ram_total_bytes"].as_u64() > Some(0))
    );
    let bad_span = http
        .get(format!("{base}/api/telemetry?minutes=0"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_span.status(), 400);
    let games: Value = get_json(&http, &base, &token, "/api/games").await;
    assert!(
        games["launchers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["label"] == "Steam games (native and Proton)" && l["enabled"] == true),
        "{games}"
    );
    // Each pause and resume is in the ledger with its reason, newest first.
    let mut kinds = Vec::new();
    for _ in 0..40 {
        let overview: Value = get_json(&http, &base, &token, "/api/overview").await;
        kinds = overview["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["activity"]["kind"].as_str().unwrap().to_owned())
            .collect();
        if kinds.len() >= 6 {
            assert!(overview["changes"][1]["activity"]["reason"]["until_ms"].is_u64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        kinds[..6],
        [
            "running", "paused", "running", "paused", "running", "paused"
        ]
    );
    let verified = cli(data.path(), &["ledger", "verify"]);
    assert!(verified.contains("1 receipts"), "{verified}");
    let csv = cli(data.path(), &["ledger", "export"]);
    assert!(csv.contains(job["job_id"].as_str().unwrap()), "{csv}");

    // The web UI is served from the same address (when it was built).
    let page = http.get(format!("{base}/")).send().await.unwrap();
    if page.status() == 200 {
        assert!(page.text().await.unwrap().contains("<div id=\"app\""));
    }
    let climbing = http
        .get(format!("{base}/..%2f..%2fCargo.toml"))
        .send()
        .await
        .unwrap();
    assert_ne!(climbing.status(), 200);

    // SIGTERM: a clean exit; the ledger is then readable offline.
    let exit = node.stop();
    assert!(exit.success(), "{exit:?}");
    assert!(!data.path().join("server.json").exists());
    let offline = cli(data.path(), &["ledger", "verify"]);
    assert!(offline.contains("1 receipts"), "{offline}");
    let config = cli(data.path(), &["config"]);
    assert!(config.contains("pool = \"embedded\""), "{config}");
}
