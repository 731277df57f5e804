//! The app does real work out of the box: it starts the embedded pool and its demo customer,
//! runs their jobs on the real models, and the window shows jobs completing and credits rising
//! within a minute; the tray shows today's earnings.

use std::time::Duration;

use hearth_e2e::{App, Desktop, TrayMenu, wait_for};

fn number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_shows_real_jobs_completing_and_credits_rising() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let app = App::launch(&desktop).await?;
    let started = std::time::Instant::now();

    let first = wait_for(
        "a completed job and credits in the window",
        Duration::from_secs(60),
        || async {
            let jobs = number(&app.text("[data-testid=jobs-today]").await?)?;
            let credits = number(&app.text("[data-testid=earnings-today]").await?)?;
            (jobs >= 1.0 && credits > 0.0).then_some((jobs, credits))
        },
    )
    .await?;
    eprintln!(
        "first credits after {:.1?}: {} jobs, {} credits",
        started.elapsed(),
        first.0,
        first.1
    );
    let rows = app
        .text("[data-testid=jobs-table]")
        .await
        .unwrap_or_default();
    assert!(rows.contains("completed"), "jobs table: {rows}");
    let pool = app
        .text("[data-testid=pool-line]")
        .await
        .unwrap_or_default();
    assert!(pool.contains("Local demo pool"), "pool line: {pool}");

    // Credits keep rising as the demo customer's requests arrive.
    let later = wait_for("credits to rise", Duration::from_secs(60), || async {
        let credits = number(&app.text("[data-testid=earnings-today]").await?)?;
        (credits > first.1).then_some(credits)
    })
    .await?;
    assert!(later > first.1);

    // The tray tells the same story.
    let tray = wait_for("the tray menu", Duration::from_secs(10), || async {
        TrayMenu::find(&desktop).ok().flatten()
    })
    .await?;
    let labels: Vec<String> = tray.items(&desktop)?.into_iter().map(|i| i.label).collect();
    assert!(
        labels
            .iter()
            .any(|l| l.starts_with("Today: ") && l.contains("demo credits")),
        "tray labels: {labels:?}"
    );

    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output/screenshots");
    std::fs::create_dir_all(&dir)?;
    desktop.screenshot(&dir.join("window-working.png"))?;
    app.close().await
}
