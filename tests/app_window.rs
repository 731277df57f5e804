//! The real app in a real window: pause and resume from the window, and see the tray follow.

use std::time::Duration;

use hearth_e2e::{App, Desktop, TrayMenu, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume_from_the_window_reach_the_tray() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let app = App::launch(&desktop).await?;

    assert_eq!(
        app.wait_for_text("[data-testid=state-label]", |t| t == "Running")
            .await?,
        "Running"
    );
    let button = app
        .wait_for_text("[data-testid=toggle-button]", |t| !t.is_empty())
        .await?;
    assert_eq!(button, "Pause");

    app.click("[data-testid=toggle-button]").await?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Paused")
        .await?;
    let detail = app
        .wait_for_text("[data-testid=state-detail]", |t| !t.is_empty())
        .await?;
    assert_eq!(detail, "Paused from the window. No new work will start.");
    assert_eq!(
        app.text("[data-testid=toggle-button]").await.as_deref(),
        Some("Resume")
    );
    assert_eq!(
        app.text("[data-testid=sidebar-state]").await.as_deref(),
        Some("Paused")
    );

    // The tray, owned by the same Rust state, follows the window.
    let tray = wait_for("the tray menu", Duration::from_secs(10), || async {
        TrayMenu::find(&desktop).ok().flatten()
    })
    .await?;
    let labels = wait_for(
        "the tray to show the pause",
        Duration::from_secs(10),
        || async {
            let labels: Vec<String> = tray
                .items(&desktop)
                .ok()?
                .into_iter()
                .map(|i| i.label)
                .collect();
            labels.contains(&"Resume".to_owned()).then_some(labels)
        },
    )
    .await?;
    assert!(
        labels.contains(&"Hearth: Paused (paused from the window)".to_owned()),
        "tray labels: {labels:?}"
    );

    app.click("[data-testid=toggle-button]").await?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Running")
        .await?;
    // The change log lists both changes, newest first.
    let log = app
        .wait_for_text("[data-testid=change-log]", |t| {
            t.contains("Running") && t.contains("Paused")
        })
        .await?;
    assert!(
        log.find("Running") < log.find("Paused"),
        "change log: {log}"
    );

    std::fs::create_dir_all(screenshot_dir())?;
    desktop.screenshot(&screenshot_dir().join("window-running.png"))?;

    // Logs reach the rolling file in the app's data directory.
    let logs = desktop.app_logs()?;
    assert!(logs.contains("Hearth started"), "log file: {logs}");
    assert!(logs.contains("node state changed"), "log file: {logs}");

    app.close().await
}

fn screenshot_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output/screenshots")
}
