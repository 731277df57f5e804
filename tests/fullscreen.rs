//! A fullscreen window in front pauses the node, on a real X server (Xvfb). There is no window
//! manager on this desktop, so the test does the window manager's part of EWMH: it marks its
//! window fullscreen (`_NET_WM_STATE_FULLSCREEN`) and names it the active window
//! (`_NET_ACTIVE_WINDOW` on the root). Hearth's watcher reads those as it would under any
//! EWMH window manager.

use std::time::Duration;

use hearth_e2e::{Desktop, wait_for};
use hearth_node::pause::policy::PolicyConfig;
use hearth_node::pause::watcher::{Watcher, WatcherConfig};
use hearth_node::{ActivityState, Node, PauseReason};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt, CreateWindowAux, PropMode, WindowClass};
use x11rb::wrapper::ConnectionExt as _;

#[tokio::test(flavor = "multi_thread")]
async fn a_fullscreen_window_in_front_pauses_the_node_until_it_leaves() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let (conn, screen) = x11rb::connect(Some(desktop.display()))?;
    let root = conn.setup().roots[screen].clone();
    let atom = |name: &str| -> anyhow::Result<u32> {
        Ok(conn.intern_atom(false, name.as_bytes())?.reply()?.atom)
    };
    let (active, state, fullscreen) = (
        atom("_NET_ACTIVE_WINDOW")?,
        atom("_NET_WM_STATE")?,
        atom("_NET_WM_STATE_FULLSCREEN")?,
    );
    let window = conn.generate_id()?;
    conn.create_window(
        root.root_depth,
        window,
        root.root,
        0,
        0,
        root.width_in_pixels,
        root.height_in_pixels,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new().background_pixel(root.black_pixel),
    )?;
    conn.change_property8(
        PropMode::REPLACE,
        window,
        AtomEnum::WM_NAME,
        AtomEnum::STRING,
        b"A fullscreen game",
    )?;
    conn.map_window(window)?;
    conn.flush()?;

    let node = Node::new();
    let _watcher = Watcher::start(
        node.clone(),
        WatcherConfig {
            games: None,
            display: Some(desktop.display().to_owned()),
            policy: PolicyConfig {
                cooldown: Duration::from_secs(1),
                ..PolicyConfig::default()
            },
            ..WatcherConfig::default()
        },
    )?;
    // A window that is merely in front does not pause anything.
    conn.change_property32(
        PropMode::REPLACE,
        root.root,
        active,
        AtomEnum::WINDOW,
        &[window],
    )?;
    conn.flush()?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(node.status().activity, ActivityState::Running);

    // Fullscreen and in front: paused.
    conn.change_property32(
        PropMode::REPLACE,
        window,
        state,
        AtomEnum::ATOM,
        &[fullscreen],
    )?;
    conn.flush()?;
    wait_for("the fullscreen pause", Duration::from_secs(2), || async {
        (node.status().activity
            == ActivityState::Paused {
                reason: PauseReason::Fullscreen,
            })
        .then_some(())
    })
    .await?;

    // Another window comes to the front: after the cooldown, work resumes.
    conn.change_property32(PropMode::REPLACE, root.root, active, AtomEnum::WINDOW, &[0])?;
    conn.flush()?;
    wait_for("the cooldown", Duration::from_secs(2), || async {
        matches!(
            node.status().activity,
            ActivityState::Paused {
                reason: PauseReason::CoolingDown { .. }
            }
        )
        .then_some(())
    })
    .await?;
    wait_for("work to resume", Duration::from_secs(4), || async {
        (node.status().activity == ActivityState::Running).then_some(())
    })
    .await?;
    Ok(())
}

/// A node and a watcher that looks only at the owner's input on `desktop` (active for 1.5 s
/// after the last input), with `policy`.
fn input_watcher(desktop: &Desktop, policy: PolicyConfig) -> anyhow::Result<(Node, Watcher)> {
    let node = Node::new();
    let watcher = Watcher::start(
        node.clone(),
        WatcherConfig {
            games: None,
            fullscreen: false,
            gpu_use: None,
            display: Some(desktop.display().to_owned()),
            active_for: Some(Duration::from_millis(1500)),
            policy,
            ..WatcherConfig::default()
        },
    )?;
    Ok((node, watcher))
}

/// "Only when I'm away": keyboard or mouse input (sent through XTest, as real devices are)
/// pauses the node; quiet for `active_for` resumes it.
#[tokio::test(flavor = "multi_thread")]
async fn in_idle_only_mode_input_pauses_and_quiet_resumes() -> anyhow::Result<()> {
    use x11rb::protocol::xtest::ConnectionExt as _;
    let desktop = Desktop::start().await?;
    let (conn, screen) = x11rb::connect(Some(desktop.display()))?;
    let root = conn.setup().roots[screen].root;
    let (node, _watcher) = input_watcher(
        &desktop,
        PolicyConfig {
            idle_only: true,
            ..PolicyConfig::default()
        },
    )?;
    // The mouse moves: the owner is here.
    const MOTION_NOTIFY: u8 = 6;
    conn.xtest_fake_input(MOTION_NOTIFY, 0, 0, root, 200, 150, 0)?;
    conn.flush()?;
    wait_for(
        "the pause for an active user",
        Duration::from_secs(2),
        || async {
            (node.status().activity
                == ActivityState::Paused {
                    reason: PauseReason::UserActive,
                })
            .then_some(())
        },
    )
    .await?;
    // Nothing more: after 1.5 s the owner counts as away and work resumes.
    wait_for(
        "work while the owner is away",
        Duration::from_secs(4),
        || async { (node.status().activity == ActivityState::Running).then_some(()) },
    )
    .await?;
    // And input again pauses again.
    conn.xtest_fake_input(MOTION_NOTIFY, 0, 0, root, 20, 15, 0)?;
    conn.flush()?;
    wait_for("the pause again", Duration::from_secs(2), || async {
        node.status().activity.is_paused().then_some(())
    })
    .await?;
    Ok(())
}

/// Throttle mode: while the owner uses the computer the node works at half duty instead of
/// pausing; once they are away it runs flat out again.
#[tokio::test(flavor = "multi_thread")]
async fn in_throttle_mode_input_throttles_and_quiet_runs_flat_out() -> anyhow::Result<()> {
    use x11rb::protocol::xtest::ConnectionExt as _;
    let desktop = Desktop::start().await?;
    let (conn, screen) = x11rb::connect(Some(desktop.display()))?;
    let root = conn.setup().roots[screen].root;
    let (node, _watcher) = input_watcher(
        &desktop,
        PolicyConfig {
            throttle_when_active: Some(50),
            ..PolicyConfig::default()
        },
    )?;
    const KEY_PRESS: u8 = 2;
    const KEY_RELEASE: u8 = 3;
    // A key press and release (keycode 38 is "a" on a standard layout).
    conn.xtest_fake_input(KEY_PRESS, 38, 0, root, 0, 0, 0)?;
    conn.xtest_fake_input(KEY_RELEASE, 38, 0, root, 0, 0, 0)?;
    conn.flush()?;
    wait_for(
        "the throttle for an active user",
        Duration::from_secs(2),
        || async {
            (node.status().activity == ActivityState::Throttled { duty_percent: 50 }).then_some(())
        },
    )
    .await?;
    wait_for(
        "full speed while the owner is away",
        Duration::from_secs(4),
        || async { (node.status().activity == ActivityState::Running).then_some(()) },
    )
    .await?;
    Ok(())
}
