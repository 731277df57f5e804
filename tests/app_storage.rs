//! A disk that fills while the app works, as the owner sees it: the real app (window and tray)
//! runs with the fault library preloaded (`hearth-faults`);
//! when the test "fills the disk" every write to the ledger fails with ENOSPC. The window and
//! the tray say the disk is full and that Hearth resumes by itself, no Resume button is offered,
//! and once space is "freed" the app works again by itself.

#![cfg(target_os = "linux")]

use std::time::Duration;

use hearth_e2e::{App, Desktop, TrayMenu, wait_for};
use hearth_faults::{Injection, Mode};

fn number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_pauses_the_app_visibly_and_it_resumes_by_itself() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let full = desktop.app_data_dir().with_file_name("disk-full");
    let freed = desktop.app_data_dir().with_file_name("disk-freed");
    let injection = Injection::watching(&desktop.app_data_dir().join("ledger"))
        .failing_while(&full, Mode::DiskFull)
        .healed_by(&freed);
    for (name, value) in injection.env() {
        desktop.set_env(name, value);
    }
    let app = App::launch(&desktop).await?;

    let working = wait_for("a completed job", Duration::from_secs(60), || async {
        number(&app.text("[data-testid=jobs-today]").await?).filter(|jobs| *jobs >= 1.0)
    })
    .await?;

    std::fs::write(&full, b"")?;
    let detail = app
        .wait_for_text("[data-testid=state-detail]", |t| {
            t.contains("the disk is full")
        })
        .await?;
    assert_eq!(
        detail,
        "Paused: the disk is full; Hearth resumes by itself once it can save again. No new work will start."
    );
    let explains = app
        .text("[data-testid=override-explains]")
        .await
        .unwrap_or_default();
    assert!(
        explains.contains("resumes as soon as it can save"),
        "{explains}"
    );
    assert!(
        app.text("[data-testid=toggle-button]").await.is_none(),
        "no Resume button: the owner cannot lift it"
    );
    let tray = wait_for("the tray menu", Duration::from_secs(10), || async {
        TrayMenu::find(&desktop).ok().flatten()
    })
    .await?;
    let title = wait_for("the tray to say so", Duration::from_secs(10), || async {
        let items = tray.items(&desktop).ok()?;
        let first = items.first()?.label.clone();
        first.contains("the disk is full").then_some(first)
    })
    .await?;
    assert_eq!(
        title,
        "Hearth: Paused (the disk is full; Hearth resumes by itself once it can save again)"
    );
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output/screenshots");
    std::fs::create_dir_all(&dir)?;
    desktop.screenshot(&dir.join("window-disk-full.png"))?;

    // Space freed: it works again by itself.
    std::fs::write(&freed, b"")?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Running")
        .await?;
    wait_for("more completed jobs", Duration::from_secs(60), || async {
        number(&app.text("[data-testid=jobs-today]").await?).filter(|jobs| *jobs > working)
    })
    .await?;
    desktop.screenshot(&dir.join("window-disk-freed.png"))?;
    app.close().await
}
