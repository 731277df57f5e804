//! The window tells the whole story (issue 19): a first run that says what Hearth is and
//! takes a checked payout address, with Back and Next; live resource cards whose figures are
//! the node's own telemetry; money first; the owner overriding a game's pause ("Resume
//! anyway", in the window and the tray) and the wait after it ("Skip wait"); the game list in
//! Settings with a switch per entry and the game that paused Hearth; and a screenshot of every
//! page in light and dark under `test-output/screenshots/`.

use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::Duration;

use hearth_e2e::{App, Desktop, TrayMenu, wait_for};

const STATE: &str = "[data-testid=state-label]";
const DETAIL: &str = "[data-testid=state-detail]";

fn screenshot_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output/screenshots")
}

/// A game: a copy of `sleep` named like a Windows game run through Proton.
struct Game(Child);

impl Game {
    fn start(dir: &std::path::Path) -> anyhow::Result<Self> {
        let program = dir.join("Cyberpunk2077.exe");
        if !program.exists() {
            std::fs::copy("/bin/sleep", &program)?;
        }
        Ok(Self(Command::new(program).arg("600").spawn()?))
    }
}

impl Drop for Game {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` from the app's node with its token, as JSON (plain HTTP on loopback).
fn node_api(desktop: &Desktop, path: &str) -> anyhow::Result<serde_json::Value> {
    let node = hearth_instance::running_node(&desktop.app_data_dir())
        .ok_or_else(|| anyhow::anyhow!("the app's node has not published its address"))?;
    let host = node.url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        node.token
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer: {answer}"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    Ok(serde_json::from_str(body)?)
}

/// The first number in `text` after `label`.
fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let digits: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().ok()
}

async fn active_testid(app: &App) -> anyhow::Result<String> {
    let focused = app.client().active_element().await?;
    Ok(focused.attr("data-testid").await?.unwrap_or_default())
}

async fn first_run_step(app: &App) -> anyhow::Result<String> {
    let page = app
        .client()
        .find(fantoccini::Locator::Css("[data-testid=first-run-page]"))
        .await?;
    Ok(page.attr("data-step").await?.unwrap_or_default())
}

async fn set_theme(app: &App, theme: &str) -> anyhow::Result<()> {
    let label = format!("{theme} theme");
    for _ in 0..3 {
        if app.text("[data-testid=theme-button]").await.as_deref() == Some(label.as_str()) {
            return Ok(());
        }
        app.click("[data-testid=theme-button]").await?;
    }
    app.wait_for_text("[data-testid=theme-button]", |t| t == label)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_tells_the_whole_story_and_the_owner_is_in_charge() -> anyhow::Result<()> {
    let desktop = Desktop::start_first_run().await?;
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots)?;
    let app = App::launch_showing(&desktop, "[data-testid=first-run]").await?;

    // First run: what Hearth is, what runs, what it never touches; Back and Next; keyboard
    // focus on each step's main button; a payout address checked before it is taken.
    let what = app
        .wait_for_text("[data-testid=first-run-what]", |t| !t.is_empty())
        .await?;
    for words in ["fingerprint", "never touches", "no one's code runs"] {
        assert!(what.contains(words), "{words:?} in {what}");
    }
    assert_eq!(active_testid(&app).await?, "first-run-next");
    desktop.screenshot(&shots.join("first-run-0-welcome.png"))?;
    app.click("[data-testid=first-run-next]").await?;
    let summary = app
        .wait_for_text("[data-testid=first-run-summary]", |t| !t.is_empty())
        .await?;
    assert_eq!(
        summary,
        "No supported GPU found: Hearth uses your processor (slower, earns less)"
    );
    app.click("[data-testid=first-run-back]").await?;
    assert_eq!(first_run_step(&app).await?, "0");
    app.click("[data-testid=first-run-next]").await?;
    app.wait_for_text("[data-testid=first-run-summary]", |t| !t.is_empty())
        .await?;
    app.click("[data-testid=first-run-next]").await?;
    app.click("[data-testid=first-run-skip-benchmark]").await?;
    assert_eq!(first_run_step(&app).await?, "3");
    app.click("[data-testid=first-run-next]").await?;
    app.fill("[data-testid=first-run-payout]", "my wallet")
        .await?;
    app.click("[data-testid=first-run-next]").await?;
    let refused = app
        .wait_for_text("[data-testid=first-run-payout-error]", |t| !t.is_empty())
        .await?;
    assert!(refused.contains("spaces"), "{refused}");
    assert_eq!(
        first_run_step(&app).await?,
        "4",
        "a bad address is not taken"
    );
    desktop.screenshot(&shots.join("first-run-4-payout.png"))?;
    app.fill("[data-testid=first-run-payout]", "wallet-story-7")
        .await?;
    app.click("[data-testid=first-run-next]").await?;
    assert_eq!(first_run_step(&app).await?, "5");
    app.click("[data-testid=first-run-start]").await?;
    app.wait_for_text(STATE, |t| t == "Running").await?;
    let config = std::fs::read_to_string(desktop.app_data_dir().join("config.toml"))?;
    assert!(
        config.contains("payout_address = \"wallet-story-7\""),
        "{config}"
    );
    assert!(config.contains("first_run_done = true"), "{config}");

    // Resource cards: the figures are the node's telemetry. No GPU here reports figures, so
    // the processor card carries the story and an estimated power.
    app.wait_for_text("[data-testid=jobs-today]", |t| {
        t.parse::<u32>().is_ok_and(|n| n >= 2)
    })
    .await?;
    let card = app
        .wait_for_text("[data-testid=resource-cpu]", |t| {
            t.contains("Processor load")
        })
        .await?;
    let telemetry = node_api(&desktop, "/api/overview")?["telemetry"].clone();
    let gib = |bytes: &serde_json::Value| {
        format!(
            "{:.1} GiB",
            bytes.as_f64().unwrap_or(0.0) / f64::from(1u32 << 30)
        )
    };
    assert!(
        card.contains(&format!("of {} used", gib(&telemetry["ram_total_bytes"]))),
        "memory total in {card:?} vs {telemetry}"
    );
    assert!(
        card.contains(&format!("{} threads", telemetry["logical_cores"])),
        "threads in {card:?}"
    );
    assert_eq!(telemetry["cpu_power_estimated"], true, "no RAPL here");
    assert!(card.contains("estimated"), "{card}");
    let load = number_after(&card, "Processor load").expect("a load figure");
    let power = number_after(&card, "Power").expect("a power figure");
    assert!(
        (power - 65.0 * load / 100.0).abs() <= 1.2,
        "power {power} W is 65 W × {load} % (the estimate), in {card:?}"
    );
    let recent = node_api(&desktop, "/api/telemetry?minutes=1")?;
    let loads: Vec<f64> = recent
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["cpu_percent"].as_f64())
        .map(f64::round)
        .collect();
    assert!(
        loads.contains(&load),
        "the card's {load} % among the node's readings {loads:?}"
    );
    assert_eq!(telemetry["gpus"].as_array().map(Vec::len), Some(0));
    app.wait_for_text("[data-testid=resource-no-gpu]", |t| {
        t.contains("Hearth works on your processor")
    })
    .await?;
    // Money first, and the energy of CPU work is counted (estimated), never silently zero.
    let money = app
        .wait_for_text("[data-testid=earnings-money]", |t| !t.starts_with('—'))
        .await?;
    assert!(money.contains('€'), "{money}");
    let electricity = app
        .wait_for_text("[data-testid=earnings-electricity]", |t| {
            number_after(t, "").is_some_and(|wh| wh > 0.0)
        })
        .await?;
    assert!(electricity.contains("estimated"), "{electricity}");
    let rate = app
        .text("[data-testid=earnings-rate]")
        .await
        .unwrap_or_default();
    assert!(
        rate.contains("at the pool's rate") && rate.contains("demo credits are not paid out"),
        "{rate}"
    );
    let payable = app
        .text("[data-testid=earnings-payable]")
        .await
        .unwrap_or_default();
    assert!(
        payable.contains("pending, payable 24 h after each job"),
        "{payable}"
    );
    let net = app
        .text("[data-testid=earnings-net]")
        .await
        .unwrap_or_default();
    assert!(
        net.starts_with('+') || net.starts_with('−'),
        "net with its sign: {net}"
    );

    // A game pauses Hearth; "Resume anyway" works through it, until it ends.
    let games = tempfile::tempdir()?;
    let game = Game::start(games.path())?;
    app.wait_for_text(DETAIL, |t| t.contains("Cyberpunk2077.exe is running"))
        .await?;
    let explains = app
        .wait_for_text("[data-testid=override-explains]", |t| !t.is_empty())
        .await?;
    assert!(explains.contains("until it closes"), "{explains}");
    desktop.screenshot(&shots.join("overview-game-paused.png"))?;
    app.click("[data-testid=resume-anyway]").await?;
    app.wait_for_text(STATE, |t| t == "Running").await?;
    let detail = app.text(DETAIL).await.unwrap_or_default();
    assert_eq!(
        detail,
        "Working while Cyberpunk2077.exe runs, until it ends — you chose Resume anyway."
    );
    let tray = wait_for("the tray menu", Duration::from_secs(10), || async {
        TrayMenu::find(&desktop).ok().flatten()
    })
    .await?;
    let line = wait_for(
        "the tray to show the override",
        Duration::from_secs(10),
        || async {
            let items = tray.items(&desktop).ok()?;
            items
                .first()
                .map(|i| i.label.clone())
                .filter(|l| l.contains("working while Cyberpunk2077.exe runs"))
        },
    )
    .await?;
    assert_eq!(
        line,
        "Hearth: Running (working while Cyberpunk2077.exe runs, until it ends)"
    );
    desktop.screenshot(&shots.join("overview-resume-anyway.png"))?;
    // Let the game pause Hearth again; then resume anyway from the tray.
    app.click("[data-testid=end-override]").await?;
    app.wait_for_text(STATE, |t| t == "Paused").await?;
    wait_for(
        "the tray to offer Resume anyway",
        Duration::from_secs(10),
        || async {
            let items = tray.items(&desktop).ok()?;
            items
                .iter()
                .any(|i| i.label == "Resume anyway" && i.enabled)
                .then_some(())
        },
    )
    .await?;
    // The tray menu as a panel draws it: a tray bar shows the icon at the screen's top left;
    // clicking it opens the menu (a new window on the screen).
    {
        let visible_windows = || {
            desktop
                .output_of(std::process::Command::new("xdotool").args([
                    "search",
                    "--onlyvisible",
                    "--name",
                    "",
                ]))
                .map(|windows| windows.lines().count())
                .unwrap_or(0)
        };
        let before = visible_windows();
        let _bar = desktop.show_tray_bar()?;
        wait_for("the tray bar", Duration::from_secs(10), || async {
            (visible_windows() > before).then_some(())
        })
        .await?;
        let with_bar = visible_windows();
        let clicks = std::sync::atomic::AtomicU8::new(0);
        wait_for("the tray menu to open", Duration::from_secs(10), || async {
            // Left click, then right click: hosts differ in which one opens the menu.
            let n = clicks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            desktop
                .click_at(24, 24, if n.is_multiple_of(2) { 1 } else { 3 })
                .ok()?;
            (visible_windows() > with_bar).then_some(())
        })
        .await?;
        desktop.screenshot(&shots.join("tray-menu-game-paused.png"))?;
        desktop.press_key("Escape")?;
    }
    tray.click(&desktop, "Resume anyway")?;
    app.wait_for_text(STATE, |t| t == "Running").await?;
    app.click("[data-testid=end-override]").await?;
    app.wait_for_text(STATE, |t| t == "Paused").await?;

    // The game ends: the wait after it can be skipped.
    drop(game);
    app.wait_for_text(DETAIL, |t| t.contains("resuming in"))
        .await?;
    app.wait_for_text("[data-testid=resume-anyway]", |t| t == "Skip wait")
        .await?;
    desktop.screenshot(&shots.join("overview-cooldown.png"))?;
    app.click("[data-testid=resume-anyway]").await?;
    app.wait_for_text(STATE, |t| t == "Running").await?;
    assert_eq!(
        app.text(DETAIL).await.as_deref(),
        Some("You skipped the wait after your game.")
    );

    // Settings: the built-in list with a switch per entry, and the game that paused Hearth.
    app.open_page("settings", "Settings").await?;
    let list = app
        .wait_for_text("[data-testid=games-list]", |t| {
            t.contains("Cyberpunk2077.exe")
        })
        .await?;
    for launcher in [
        "Steam games (native and Proton)",
        "GOG games",
        "Epic Games Store",
    ] {
        assert!(list.contains(launcher), "{launcher} in {list}");
    }
    app.click("[data-testid=\"game-entry-/Epic Games/\"]")
        .await?;
    app.click("[data-testid=settings-save]").await?;
    app.wait_for_text("[data-testid=settings-message]", |t| t.starts_with("Saved"))
        .await?;
    let config = std::fs::read_to_string(desktop.app_data_dir().join("config.toml"))?;
    assert!(
        config.contains("games_off = [\"/Epic Games/\"]"),
        "{config}"
    );

    // Every page, light and dark.
    for theme in ["Light", "Dark"] {
        set_theme(&app, theme).await?;
        // Each page with what shows it has loaded, and its chart where it draws one.
        for (id, title, ready, chart) in [
            ("overview", "Overview", "[data-testid=resource-cpu]", None),
            (
                "earnings",
                "Earnings",
                "[data-testid=period-1]",
                Some("[data-testid=earnings-chart] canvas"),
            ),
            ("history", "History", "[data-testid=history-count]", None),
            (
                "hardware",
                "Hardware",
                "[data-testid=hardware-summary]",
                Some("[data-testid=resource-history-chart] canvas"),
            ),
            ("settings", "Settings", "[data-testid=games-list]", None),
            (
                "diagnostics",
                "Diagnostics",
                "[data-testid=log-lines]",
                None,
            ),
        ] {
            app.open_page(id, title).await?;
            app.wait_for_text(ready, |t| !t.is_empty()).await?;
            if id == "hardware" {
                let summary = app
                    .text("[data-testid=hardware-summary]")
                    .await
                    .unwrap_or_default();
                assert!(summary.starts_with("No supported GPU found"), "{summary}");
            }
            if let Some(chart) = chart {
                wait_for("the page's chart", Duration::from_secs(10), || async {
                    app.client()
                        .find(fantoccini::Locator::Css(chart))
                        .await
                        .ok()
                })
                .await?;
            }
            desktop.screenshot(&shots.join(format!("{}-{id}.png", theme.to_lowercase())))?;
        }
    }
    app.close().await
}
