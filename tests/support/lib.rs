//! Harness for Hearth's end-to-end tests.
//!
//! [`Desktop`] starts a private X server (Xvfb), a private D-Bus session bus and a tray host
//! (`status-notifier-watcher`); [`App`] launches the real app binary in it through
//! `tauri-driver` and WebKitWebDriver; [`TrayMenu`] reads and clicks the app's tray menu over
//! D-Bus the way a desktop panel does; [`X11`] looks at and closes windows as a window manager
//! would. Nothing is shared between tests: each gets its own
//! display, bus and data directories.

// This crate is test code through and through: a failed expectation should stop the test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod app;
mod desktop;
mod process;
mod tray;
mod x11;

pub use app::{App, app_binary};
pub use desktop::Desktop;
pub use tray::{TrayItem, TrayMenu};
pub use x11::X11;

use std::time::{Duration, Instant};

/// Poll `probe` until it returns `Some`, or fail after `timeout` with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
