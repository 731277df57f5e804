//! The Windows build of the node, `hearth-node.exe`, run headless as a Windows program under
//! Wine against a pool on loopback: it joins, does real CPU work, is paid, and its sentence
//! embeddings equal the Linux node's for the same sentences within 1e-5. Then a real Windows
//! program starts in a Steam library's folder (a stand-in game, `windows/stand_in_game.c`):
//! the node pauses naming it, and works again once it ends.
//!
//! It needs the Windows build and Wine, which `scripts/dev.sh test` provides: it names the
//! program in `HEARTH_WINDOWS_NODE`. Without it the test says so and checks nothing.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{NodeProcess, api_get, ask};

const SENTENCES: [&str; 3] = [
    "Hearth lends a spare GPU to AI inference.",
    "The owner starts a game and the node steps aside.",
    "Receipts are signed by the pool and chained.",
];

/// Ends every program in the Wine prefix `wine-run` uses when dropped, a failed test's too:
/// Wine's own programs (services.exe, explorer.exe) outlive ours a while, and to the Linux nodes
/// tested after this one a running .exe is a game.
struct EndsWine;

impl Drop for EndsWine {
    fn drop(&mut self) {
        let prefix = std::env::var_os("WINEPREFIX")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/hearth/wine")
            });
        let _ = Command::new("wineserver")
            .arg("-k")
            .env("WINEPREFIX", prefix)
            .status();
    }
}

/// The embeddings the pool's customers get back for [`SENTENCES`].
async fn embeddings(pool: &hearth_pool::embedded::EmbeddedPool) -> Vec<Vec<f64>> {
    let url = pool.url();
    let asked = ask(
        &url,
        pool.api_key(),
        "/v1/embeddings",
        json!({"model": "all-minilm-l6-v2", "input": SENTENCES}),
    );
    // Two minutes, not the pool's ten: a node that stopped under Wine fails the test soon.
    let reply = tokio::time::timeout(Duration::from_secs(120), asked)
        .await
        .expect("the embeddings within two minutes")
        .unwrap();
    reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_windows_node_works_under_wine_and_its_embeddings_match_linux() {
    let Some(exe) = std::env::var_os("HEARTH_WINDOWS_NODE") else {
        eprintln!(
            "skipped: HEARTH_WINDOWS_NODE names no hearth-node.exe (scripts/dev.sh test builds one)"
        );
        return;
    };
    let _ends_wine = EndsWine;
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/windows/wine-run");
    let store = hearth_inference::ModelStore::from_env();
    let pool_dir = tempfile::tempdir().unwrap();
    let pool = hearth_pool::embedded::start(pool_dir.path(), &store, None)
        .await
        .unwrap();
    let args = ["--pool", &pool.url(), "--port", "0", "--backend", "cpu"];

    // The Linux node's answer first.
    let linux_data = tempfile::tempdir().unwrap();
    let linux = NodeProcess::start(linux_data.path(), &args);
    let on_linux = embeddings(&pool).await;
    assert!(linux.stop().success());

    // Then the Windows program's: the same pool, the same model store (Wine sees the Linux
    // folders on its Z: drive).
    let windows_data = tempfile::tempdir().unwrap();
    // A short wait after a game, for the second half.
    std::fs::write(
        windows_data.path().join("config.toml"),
        "game_cooldown_s = 1\n",
    )
    .unwrap();
    let mut command = Command::new(&runner);
    command.arg(&exe);
    let root = store.root().display().to_string();
    let windows = NodeProcess::try_start_with(
        command,
        windows_data.path(),
        &args,
        &[("HEARTH_MODELS", root.as_str())],
    )
    .unwrap_or_else(|why| panic!("hearth-node.exe did not start under Wine: {why}"));
    let http = reqwest::Client::new();
    let overview: Value = api_get(&http, &windows.api(), "/api/overview").await;
    let node_id = overview["node_id"].as_str().unwrap().to_owned();
    let on_windows = embeddings(&pool).await;

    assert_eq!(on_windows.len(), SENTENCES.len());
    let mut largest = 0.0f64;
    for (w, l) in on_windows.iter().zip(&on_linux) {
        assert_eq!(w.len(), l.len());
        for (a, b) in w.iter().zip(l) {
            largest = largest.max((a - b).abs());
        }
    }
    eprintln!("largest difference between the Windows and the Linux embeddings: {largest:e}");
    assert!(largest <= 1e-5, "{largest}");
    // The Windows node did the work and was paid for it.
    let paid = pool
        .pool()
        .state()
        .store
        .receipts_after(&node_id, None, 100)
        .await
        .unwrap();
    assert!(!paid.is_empty(), "the Windows node was paid");
    assert!(
        paid.iter()
            .all(|r| r.receipt.payment.model == "all-minilm-l6-v2"),
        "{paid:?}"
    );

    // A game starts: a real Windows process in a Steam library's folder.
    let games = tempfile::tempdir().unwrap();
    let folder = games.path().join("steamapps/common/Stand In");
    std::fs::create_dir_all(&folder).unwrap();
    let game = folder.join("StandIn.exe");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/windows/stand_in_game.c");
    let built = Command::new("x86_64-w64-mingw32-gcc")
        .arg("-o")
        .arg(&game)
        .arg(&source)
        .status()
        .expect("MinGW-w64 builds the stand-in game");
    assert!(built.success());
    let mut playing = Command::new(&runner).arg(&game).spawn().unwrap();
    let activity = |status: Value| status["activity"].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let paused = loop {
        let now = activity(api_get(&http, &windows.api(), "/api/status").await);
        if now["kind"] == "paused" {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the game did not pause the node: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(paused["reason"]["kind"], "game", "{paused}");
    assert_eq!(paused["reason"]["name"], "StandIn.exe", "{paused}");
    // The game ends: after the cooldown the node works again.
    playing.kill().unwrap();
    playing.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = activity(api_get(&http, &windows.api(), "/api/status").await);
        if now["kind"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not resume after the game: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(windows);
}
