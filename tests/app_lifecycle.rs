//! Living in the tray: closing the window destroys it and its webview (tray-only costs little),
//! the tray builds it anew, and a second launch hands over to the running instance.

use std::time::{Duration, Instant};

use hearth_e2e::{App, Desktop, TrayMenu, X11, wait_for};

const TITLE: &str = "Hearth";
const WAIT: Duration = Duration::from_secs(10);

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
    wait_for("the window to close", WAIT, || async {
        // A destroyed window is an error to ask about: gone either way.
        (!x11.is_viewable(window).unwrap_or(false)).then_some(())
    })
    .await?;
    wait_for("no Hearth window on screen", WAIT, || async {
        x11.find_viewable_window(TITLE)
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_leaves_the_tray_and_open_builds_the_window_again() -> anyhow::Result<()> {
    let (desktop, app, x11, window) = app_with_window().await?;

    // Pause first, to show the state survives the window being hidden.
    app.click("[data-testid=toggle-button]").await?;
    app.wait_for_text("[data-testid=state-label]", |t| t == "Paused")
        .await?;

    close_window(&x11, window).await?;

    // Still running: the tray answers and shows the state.
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
    assert_ne!(
        reopened, window,
        "a new window, not the old one shown again"
    );
    app.follow_window().await?;
    assert_eq!(
        app.wait_for_text("[data-testid=state-label]", |t| !t.is_empty())
            .await?,
        "Paused",
        "the new window shows the node's state"
    );
    app.close().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_launch_focuses_the_first_and_exits() -> anyhow::Result<()> {
    let (desktop, app, x11, window) = app_with_window().await?;
    close_window(&x11, window).await?;

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

    // The first instance opened its window again and noted why.
    let shown = wait_for("the first instance's window", WAIT, || async {
        x11.find_viewable_window(TITLE).ok().flatten()
    })
    .await;
    assert!(
        shown.is_ok(),
        "window not shown; app log:\n{}",
        desktop.app_logs()?
    );
    assert!(
        desktop
            .app_logs()?
            .contains("second launch: focusing the running instance")
    );
    app.close().await
}

/// Started at login (`--in-tray`, as the autostart entry says), Hearth works in the tray and
/// opens no window until asked; the tray's Open builds it.
#[tokio::test(flavor = "multi_thread")]
async fn started_at_login_it_stays_in_the_tray_until_opened() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let mut app = desktop.spawn_app(&["--in-tray"])?;
    let x11 = X11::connect(desktop.display())?;
    let checked = async {
        let tray = wait_for("the tray menu", WAIT, || async {
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
        anyhow::Ok(())
    }
    .await;
    let _ = app.kill();
    let _ = app.wait();
    checked
}
