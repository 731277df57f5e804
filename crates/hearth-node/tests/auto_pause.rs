//! Gaming comes first, with real processes: a running node (embedded pool, demo customer, real
//! models) sees a program on the game list start, stops new work within a second and gives its
//! job back or finishes it; when the game ends it waits out the cooldown and works again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_inference::ModelStore;
use hearth_node::{
    ActivityState, JobState, NodeConfig, NodeEvent, PauseReason, RunningNode, StartOptions,
};
use tokio::sync::broadcast::error::RecvError;

/// A copy of `sleep` named like a Windows game run through Proton.
fn fake_game(dir: &std::path::Path) -> std::path::PathBuf {
    let game = dir.join("Cyberpunk2077.exe");
    std::fs::copy("/bin/sleep", &game).unwrap();
    game
}

async fn next_status(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    deadline: Instant,
    accept: impl Fn(&ActivityState) -> bool,
) -> ActivityState {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(NodeEvent::StatusChanged { status })) if accept(&status.activity) => {
                return status.activity;
            }
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) | Err(_) => panic!("no such state change in time"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_pauses_the_node_within_a_second_and_work_resumes_after_the_cooldown() {
    let data = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        backend: "cpu".into(),
        demo_interval_ms: 100,
        game_cooldown_s: 2,
        ..NodeConfig::default()
    };
    let running = RunningNode::start(StartOptions {
        data_dir: data.path().to_owned(),
        config,
        models: ModelStore::from_env(),
        telemetry: false,
    })
    .await
    .unwrap();
    let mut events = running.node().subscribe();
    // Work first: a job ends, so the models are warm and the demo customer is busy.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(NodeEvent::JobEnded { .. })) = tokio::time::timeout(left, events.recv()).await
        {
            break;
        }
        assert!(Instant::now() < deadline, "no job ran");
    }

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut game = Command::new(fake_game(dir.path()))
        .arg("60")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let paused = next_status(&mut events, started + Duration::from_secs(5), |a| {
        a.is_paused()
    })
    .await;
    let noticed = started.elapsed();
    assert_eq!(
        paused,
        ActivityState::Paused {
            reason: PauseReason::Game {
                name: "Cyberpunk2077.exe".into()
            }
        }
    );
    assert!(
        noticed < Duration::from_secs(1),
        "noticed after {noticed:?}"
    );
    eprintln!("game noticed after {noticed:?}");

    // While the game runs: the job in flight ends (given back or finished) and none starts.
    let quiet_until = Instant::now() + Duration::from_secs(2);
    while let Ok(event) = tokio::time::timeout(
        quiet_until.saturating_duration_since(Instant::now()),
        events.recv(),
    )
    .await
    {
        match event {
            Ok(NodeEvent::JobStarted { job }) => panic!("job {} started during a game", job.job_id),
            Ok(NodeEvent::JobEnded { job }) => assert!(
                matches!(job.state, JobState::Returned | JobState::Completed),
                "{job:?}"
            ),
            _ => {}
        }
    }
    assert!(running.node().status().activity.is_paused());

    // The game ends: cooling down, then running, then work again.
    game.kill().unwrap();
    game.wait().unwrap();
    let ended = Instant::now();
    let cooling = next_status(&mut events, ended + Duration::from_secs(5), |a| {
        matches!(
            a,
            ActivityState::Paused {
                reason: PauseReason::CoolingDown { .. }
            }
        )
    })
    .await;
    eprintln!("after the game: {cooling:?}");
    next_status(&mut events, ended + Duration::from_secs(10), |a| {
        *a == ActivityState::Running
    })
    .await;
    let resumed = ended.elapsed();
    assert!(
        resumed >= Duration::from_millis(1900) && resumed < Duration::from_secs(4),
        "resumed {resumed:?} after the game ended (cooldown 2 s)"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(NodeEvent::JobStarted { .. })) => break,
            Ok(_) => {}
            Err(_) => panic!("no work after the cooldown"),
        }
    }
    running.shutdown(Duration::from_secs(10)).await;
}
