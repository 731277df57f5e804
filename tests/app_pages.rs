//! Every page of the real window, driven through tauri-driver: the earnings chart and totals
//! fill in from the ledger, the history lists, searches and exports the jobs, the hardware
//! page runs the benchmark with its progress, and a setting saved in the window is refused
//! when invalid and survives a restart. A screenshot of each
//! page is saved under `test-output/screenshots/` for people to look at.

use std::time::Duration;

use hearth_e2e::{App, Desktop, wait_for};

fn screenshot_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output/screenshots")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_shows_the_ledger_and_settings_persist() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let app = App::launch(&desktop).await?;
    let shots = screenshot_dir();

    // The embedded demo pool sends work at once; wait for two finished jobs.
    app.wait_for_text("[data-testid=jobs-today]", |t| {
        t.parse::<u32>().is_ok_and(|n| n >= 2)
    })
    .await?;
    desktop.screenshot(&shots.join("page-overview.png"))?;

    // Earnings: the 24-hour total is the ledger's, and the chart is drawn.
    app.open_page("earnings", "Earnings").await?;
    let day = app
        .wait_for_text("[data-testid=period-1]", |t| {
            t.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(|n| n > 0.0)
        })
        .await?;
    assert!(day.contains("demo credits"), "{day}");
    wait_for("the chart's canvas", Duration::from_secs(10), || async {
        app.client()
            .find(fantoccini::Locator::Css(
                "[data-testid=earnings-chart] canvas",
            ))
            .await
            .ok()
    })
    .await?;
    desktop.screenshot(&shots.join("page-earnings.png"))?;

    // History: jobs listed newest first; a search by id finds one; export writes a CSV.
    app.open_page("history", "History").await?;
    let count = app
        .wait_for_text("[data-testid=history-count]", |t| {
            t.split_whitespace()
                .next()
                .and_then(|n| n.replace(',', "").parse::<u32>().ok())
                .is_some_and(|n| n >= 2)
        })
        .await?;
    let first_id = wait_for("a listed job", Duration::from_secs(10), || async {
        let cell = app
            .client()
            .find(fantoccini::Locator::Css("[data-testid=history-rows] .id"))
            .await
            .ok()?;
        cell.attr("title").await.ok().flatten()
    })
    .await?;
    app.fill("[data-testid=history-search]", &first_id[..10])
        .await?;
    app.wait_for_text("[data-testid=history-count]", |t| t == "1 job")
        .await?;
    app.fill("[data-testid=history-search]", "").await?;
    app.wait_for_text("[data-testid=history-count]", |t| t != "1 job")
        .await?;
    desktop.screenshot(&shots.join("page-history.png"))?;
    app.click("[data-testid=history-export]").await?;
    let saved = app
        .wait_for_text("[data-testid=history-exported]", |t| {
            t.starts_with("Saved to")
        })
        .await?;
    let path = saved.trim_start_matches("Saved to ").trim();
    assert!(
        path.starts_with(&*desktop.downloads_dir().to_string_lossy()),
        "{path}"
    );
    let csv = std::fs::read_to_string(path)?;
    let rows = csv.lines().count();
    assert!(csv.starts_with("job_id,"), "{}", &csv[..csv.len().min(200)]);
    assert!(rows >= 3, "{count}: {rows} lines in the export");
    assert!(csv.contains(&first_id), "the export holds the listed job");

    // Hardware: what the machine has; the benchmark runs with a progress bar and its figures
    // appear; earnings per hour of work come from the jobs run so far.
    app.open_page("hardware", "Hardware").await?;
    let summary = app
        .wait_for_text("[data-testid=hardware-summary]", |t| !t.is_empty())
        .await?;
    assert_eq!(
        summary, "No supported GPU found: Hearth uses your processor (slower, earns less)",
        "no real GPU here: models run on the processor"
    );
    // The driver's words stay behind "Technical details".
    app.click("[data-testid=hardware-details] summary").await?;
    let device = app
        .wait_for_text("[data-testid=compute-device]", |t| !t.is_empty())
        .await?;
    assert_eq!(device, "cpu");
    app.wait_for_text("[data-testid=expected-per-hour]", |t| {
        t.split_whitespace()
            .next()
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|n| n > 0.0)
    })
    .await?;
    app.click("[data-testid=run-benchmark]").await?;
    app.wait_for_text("[data-testid=benchmark-step]", |t| {
        t.starts_with("measuring")
    })
    .await?;
    let table = wait_for(
        "the benchmark's figures",
        Duration::from_secs(120),
        || async {
            app.text("[data-testid=benchmark-table]")
                .await
                .filter(|t| t.contains("GFLOP/s"))
        },
    )
    .await?;
    assert!(table.contains("Processor"), "{table}");
    desktop.screenshot(&shots.join("page-hardware.png"))?;
    assert!(desktop.app_data_dir().join("capability.json").exists());

    // Settings: a bad schedule is refused with its reason; a good change is saved.
    app.open_page("settings", "Settings").await?;
    app.wait_for_text("[data-testid=settings-save]", |t| t == "Save")
        .await?;
    app.fill("[data-testid=setting-payout]", "wallet-e2e-42")
        .await?;
    app.fill("[data-testid=setting-schedule]", "mon-fri 18:00-25:00")
        .await?;
    app.click("[data-testid=settings-save]").await?;
    let refused = app
        .wait_for_text("[data-testid=schedule-error]", |t| !t.is_empty())
        .await?;
    assert!(refused.contains("25:00"), "{refused}");
    app.fill("[data-testid=setting-schedule]", "").await?;
    app.fill("[data-testid=setting-price]", "0.42").await?;
    app.fill("[data-testid=setting-currency]", "USD").await?;
    app.click("[data-testid=setting-start-at-login]").await?;
    app.click("[data-testid=settings-save]").await?;
    app.wait_for_text("[data-testid=settings-message]", |t| t.starts_with("Saved"))
        .await?;
    desktop.screenshot(&shots.join("page-settings.png"))?;
    let file = std::fs::read_to_string(desktop.app_data_dir().join("config.toml"))?;
    assert!(file.contains("electricity_price_per_kwh = 0.42"), "{file}");
    assert!(file.contains("currency = \"USD\""), "{file}");
    // Start at login: the desktop's autostart entry names the app, which starts in the tray.
    let autostart = std::fs::read_dir(desktop.autostart_dir())?
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .find(|entry| entry.contains("hearth-app"));
    let entry = autostart.expect("no autostart entry for the app");
    assert!(entry.contains("hearth-app --in-tray"), "{entry}");

    // Diagnostics: the log is shown, and the bundle holds what helps and no secrets.
    app.open_page("diagnostics", "Diagnostics").await?;
    app.wait_for_text("[data-testid=log-lines]", |t| t.contains("Hearth started"))
        .await?;
    desktop.screenshot(&shots.join("page-diagnostics.png"))?;
    app.click("[data-testid=save-diagnostics]").await?;
    let saved = app
        .wait_for_text("[data-testid=diagnostics-saved]", |t| {
            t.starts_with("Saved to")
        })
        .await?;
    let bundle = std::fs::read_to_string(saved.trim_start_matches("Saved to ").trim())?;
    for section in [
        "== Node ==",
        "== Hardware ==",
        "== Settings ==",
        "== Recent log lines ==",
    ] {
        assert!(bundle.contains(section), "{section} missing");
    }
    assert!(bundle.contains("currency = \"USD\""));
    assert!(
        !bundle.contains("wallet-e2e-42"),
        "the payout address stays out"
    );
    let key = std::fs::read(desktop.app_data_dir().join("node.key"))?;
    let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !bundle.contains(&key_hex) && !bundle.as_bytes().windows(key.len()).any(|w| w == key),
        "the node's key stays out"
    );
    app.close().await?;
    desktop.quit_hearth().await?;

    // After a restart the window shows what was saved.
    let app = App::launch(&desktop).await?;
    app.open_page("settings", "Settings").await?;
    let price = wait_for("the saved price", Duration::from_secs(15), || async {
        app.value("[data-testid=setting-price]")
            .await
            .ok()
            .filter(|v| !v.is_empty())
    })
    .await?;
    assert_eq!(price, "0.42");
    assert_eq!(app.value("[data-testid=setting-currency]").await?, "USD");
    app.close().await
}
