//! Living in the tray: the window is its own program, so closing it ends that program and
//! every WebKit process (tray-only costs only the background process); the tray opens a new
//! one; a second launch hands over to the open window; at login Hearth starts in the tray.

use std::time::{Duration, Instant};

use hearth_e2e::{App, Desktop, TrayMenu, X11, wait_for};

const TITLE: &str = "Hearth";
const WAIT: Duration = Duration::from_secs(10);
/// The background process's name as the kernel shows it (`comm` is cut to 15 bytes).
const CORE: &str = "hearth-tray";

/// The app on a fresh desktop, with its window on screen.
async fn app_with_window() -> anyhow::Result<(Desktop, App, X11, u32)> {
    let desktop = Desktop::start().await?;
    let app = App::launch(&desktop).await?;
    let x11 = X11::connect(desktop.display())?;
    let window = wait_for("the window", WAIT, || async {
        x11.find_viewable_window(TITLE).ok().flatten()
    })
    .await?;
    Ok((desktop, app, x11, window))
}

/// Close the window as a window manager would and wait until it is gone.
async fn close_window(x11: &X11, window: u32) -> anyhow::Result<()> {
    x11.request_close(window)?;
    wait_for("no Hearth window on screen", WAIT, || async {
        // A destroyed window is an error to ask about: gone either way.
        let gone = !x11.is_viewable(window).unwrap_or(false);
        let none_left = x11.find_viewable_window(TITLE).ok().flatten().is_none();
        (gone && none_left).then_some(())
    })
    .await
}

/// Whether `name` is the window's program or one of WebKit's (`comm` is cut to 15 bytes).
fn is_window_side(name: &str) -> bool {
    name == "hearth-app" || name.starts_with("WebKit")
}

/// Wait until no window program or WebKit process is left, while the background process
/// runs on (a GPU probe it starts may come and go beside it).
async fn only_the_core_runs(desktop: &Desktop) -> anyhow::Result<()> {
    let outcome = wait_for("only the background process to run", WAIT, || async {
        let window_side = desktop
            .programs_running()
            .iter()
            .any(|name| is_window_side(name));
        (!window_side && desktop.hearth_pid().is_some()).then_some(())
    })
    .await;
    outcome.map_err(|e| anyhow::anyhow!("{e}; running: {:?}", desktop.programs_running()))
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_ends_the_window_program_and_the_tray_opens_a_new_one() -> anyhow::Result<()> {
    let (desktop, app, x11, window) = app_with_window().await?;
    let running = desktop.programs_running();
    for program in ["hearth-app", CORE, "WebKitWebProces", "WebKitNetworkPr"] {
        assert!(
            running.iter().any(|name| name == program),
            "{program} is not running: {running:?}"
        );
    }

    // Pause first, to show the state outlives the window.
    app.click("[data-testid=toggle-button]").await?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Paused")
        .await?;

    close_window(&x11, window).await?;
    // The window's program and WebKit's processes are gone; the node works on in the tray.
    only_the_core_runs(&desktop).await?;
    drop(app);
    let tray = wait_for("the tray menu", WAIT, || async {
        TrayMenu::find(&desktop).ok().flatten()
    })
    .await?;
    assert_eq!(
        tray.items(&desktop)?[0].label,
        "Hearth: Paused (paused from the window)"
    );

    tray.click(&desktop, "Open Hearth")?;
    let reopened = wait_for("a new window", WAIT, || async {
        x11.find_viewable_window(TITLE).ok().flatten()
    })
    .await?;
    // The old window's program is gone (checked above), so this is a new one.
    assert!(
        desktop
            .programs_running()
            .iter()
            .any(|name| name == "hearth-app"),
        "the tray started a window program"
    );
    close_window(&x11, reopened).await?;
    only_the_core_runs(&desktop).await?;

    // Any window shows the node's state: it lives in the background process.
    let app = App::launch(&desktop).await?;
    assert_eq!(
        app.wait_for_text("[data-testid=state-label]", |t| !t.is_empty())
            .await?,
        "Paused",
        "the new window shows the node's state"
    );

    // Quit in the tray ends everything, window included.
    desktop.quit_hearth().await?;
    wait_for("the window to close with Hearth", WAIT, || async {
        let window_side = desktop
            .programs_running()
            .iter()
            .any(|name| is_window_side(name));
        (!window_side).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_launch_focuses_the_open_window_and_exits() -> anyhow::Result<()> {
    let (desktop, app, x11, window) = app_with_window().await?;

    let mut second = desktop.spawn_app(&[])?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            second.kill()?;
            anyhow::bail!("the second launch did not exit");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "second launch exited with {status}");
    wait_for(
        "the first window to note the second launch",
        WAIT,
        || async {
            desktop
                .app_logs()
                .ok()
                .filter(|log| log.contains("second launch: focusing the running instance"))
        },
    )
    .await?;
    assert!(x11.is_viewable(window)?, "the first window is still shown");
    let windows = desktop
        .programs_running()
        .into_iter()
        .filter(|name| name == "hearth-app")
        .count();
    assert_eq!(windows, 1, "one window program");
    app.close().await
}

/// Started at login (`--in-tray`, as the autostart entry says), Hearth works in the tray with
/// no window and no WebKit process; the tray's Open builds the window.
#[tokio::test(flavor = "multi_thread")]
async fn started_at_login_it_stays_in_the_tray_until_opened() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let mut launcher = desktop.spawn_app(&["--in-tray"])?;
    let x11 = X11::connect(desktop.display())?;
    let tray = wait_for("the tray menu", Duration::from_secs(30), || async {
        TrayMenu::find(&desktop).ok().flatten()
    })
    .await?;
    wait_for("the node to start", WAIT, || async {
        desktop
            .app_logs()
            .ok()
            .filter(|log| log.contains("Hearth started") && log.contains("in_tray=true"))
    })
    .await?;
    let started = Instant::now();
    let launched = loop {
        if let Some(status) = launcher.try_wait()? {
            break status;
        }
        anyhow::ensure!(started.elapsed() < WAIT, "the launcher did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        launched.success(),
        "`hearth-app --in-tray` exited with {launched}"
    );
    only_the_core_runs(&desktop).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    anyhow::ensure!(
        x11.find_viewable_window(TITLE)?.is_none(),
        "a window opened at login"
    );

    tray.click(&desktop, "Open Hearth")?;
    wait_for("the window, from the tray", WAIT, || async {
        x11.find_viewable_window(TITLE).ok().flatten()
    })
    .await?;
    Ok(())
}
