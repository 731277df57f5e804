//! The tray menu, clicked over D-Bus as a desktop panel would, drives the window.

use std::time::Duration;

use hearth_e2e::{App, Desktop, TrayMenu, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn tray_menu_pauses_and_resumes_and_the_window_follows() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let app = App::launch(&desktop).await?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Running")
        .await?;

    let tray = wait_for("the tray menu", Duration::from_secs(10), || async {
        TrayMenu::find(&desktop).ok().flatten()
    })
    .await?;
    let items = tray.items(&desktop)?;
    let labels: Vec<&str> = items.iter().map(|i| i.label.as_str()).collect();
    assert_eq!(labels.len(), 8, "menu: {items:?}");
    assert_eq!(labels[0], "Hearth: Running");
    assert!(labels[1].starts_with("Today: "), "menu: {items:?}");
    assert_eq!(
        labels[2..],
        [
            "",
            "Pause",
            "Pause for 30 minutes",
            "Pause for 1 hour",
            "Open Hearth",
            "Quit"
        ],
        "menu: {items:?}"
    );
    assert!(!items[0].enabled, "the status line is not clickable");
    assert!(!items[1].enabled, "the earnings line is not clickable");

    tray.click(&desktop, "Pause")?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Paused")
        .await?;
    assert_eq!(
        app.text("[data-testid=state-detail]").await.as_deref(),
        Some("Paused from the tray. No new work will start.")
    );
    let labels: Vec<String> = tray.items(&desktop)?.into_iter().map(|i| i.label).collect();
    assert_eq!(labels[0], "Hearth: Paused (paused from the tray)");
    assert_eq!(labels[3], "Resume");

    tray.click(&desktop, "Resume")?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Running")
        .await?;
    assert_eq!(tray.items(&desktop)?[3].label, "Pause");

    // A timed pause from the tray: the window says until when.
    tray.click(&desktop, "Pause for 30 minutes")?;
    let detail = app
        .wait_for_text("[data-testid=state-detail]", |t| {
            t.starts_with("Paused from the tray until ")
        })
        .await?;
    assert!(detail.ends_with(". No new work will start."), "{detail}");
    tray.click(&desktop, "Resume")?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Running")
        .await?;

    app.close().await
}
