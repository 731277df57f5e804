//! The first-run guide on a computer Hearth has never run on: it says what Hearth is, shows
//! the hardware, runs the benchmark with its progress, shows expected earnings from the demo
//! jobs running meanwhile, explains payment, saves the chosen pause rules, and is not shown
//! again.

use std::time::Duration;

use hearth_e2e::{App, Desktop, wait_for};

fn screenshot_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output/screenshots")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_run_guide_measures_shows_earnings_and_saves_the_rules() -> anyhow::Result<()> {
    let desktop = Desktop::start_first_run().await?;
    let shots = screenshot_dir();
    let app = App::launch_showing(&desktop, "[data-testid=first-run]").await?;

    // The first step says what Hearth is; the second shows the computer.
    app.wait_for_text("[data-testid=first-run-what]", |t| {
        t.contains("What runs here")
    })
    .await?;
    app.click("[data-testid=first-run-next]").await?;
    let gpus = app
        .wait_for_text("[data-testid=first-run-gpus]", |t| t.contains("threads"))
        .await?;
    assert!(gpus.contains("llvmpipe") || gpus.contains("GPU"), "{gpus}");
    desktop.screenshot(&shots.join("first-run-1-hardware.png"))?;
    app.click("[data-testid=first-run-next]").await?;

    app.click("[data-testid=first-run-measure]").await?;
    app.wait_for_text("[data-testid=first-run-step]", |t| {
        t.starts_with("measuring")
    })
    .await?;
    desktop.screenshot(&shots.join("first-run-2-benchmark.png"))?;
    let expected = wait_for(
        "expected earnings after the benchmark",
        Duration::from_secs(120),
        || async {
            app.text("[data-testid=first-run-expected]")
                .await
                .filter(|t| {
                    t.split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<f64>().ok())
                        .is_some_and(|n| n > 0.0)
                })
        },
    )
    .await?;
    assert!(expected.contains("credits per hour of work"), "{expected}");
    desktop.screenshot(&shots.join("first-run-3-earnings.png"))?;
    app.click("[data-testid=first-run-next]").await?;
    // Getting paid: no address yet is fine (it can be added in Settings).
    app.wait_for_text("[data-testid=first-run-page]", |t| {
        t.contains("Getting paid")
    })
    .await?;
    app.click("[data-testid=first-run-next]").await?;

    app.click("[data-testid=first-run-idle-only]").await?;
    desktop.screenshot(&shots.join("first-run-4-rules.png"))?;
    app.click("[data-testid=first-run-start]").await?;
    app.wait_for_text("[data-testid=state-label]", |t| !t.is_empty())
        .await?;
    let config = std::fs::read_to_string(desktop.app_data_dir().join("config.toml"))?;
    assert!(config.contains("first_run_done = true"), "{config}");
    assert!(config.contains("idle_only = true"), "{config}");
    assert!(desktop.app_data_dir().join("capability.json").exists());
    app.close().await?;
    desktop.quit_hearth().await?;

    // Done once: the next start goes straight to the overview.
    let app = App::launch(&desktop).await?;
    assert!(
        app.text("[data-testid=first-run]").await.is_none(),
        "the guide shows only once"
    );
    app.close().await
}
