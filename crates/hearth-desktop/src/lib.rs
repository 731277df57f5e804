//! What the desktop tells Hearth about its user, on each platform behind one shape:
//! [`Desktop::connect`], [`Desktop::is_fullscreen`] (a fullscreen window of another program is
//! in front) and [`Desktop::idle`] (time since the last keyboard or mouse input).
//!
//! - Linux: X11 (EWMH `_NET_ACTIVE_WINDOW` + `_NET_WM_STATE_FULLSCREEN`, MIT-SCREEN-SAVER).
//! - Windows: the shell's notification state (a Direct3D game in exclusive fullscreen, a
//!   presentation) or a foreground window covering its monitor; `GetLastInputInfo`.
//! - macOS: idle time from Quartz event sources; fullscreen is not detected yet (an error
//!   says so, and the watcher turns that rule off).
//!
//! And what Hearth asks of the desktop: [`set_start_at_login`], and [`open_in_browser`].

mod login;
pub use login::{LOGIN_ENTRY, set_start_at_login};

/// Open an https address in the owner's web browser (`xdg-open`, Windows' shell, `open`),
/// without waiting for it. Anything but an https address is refused: the address may come
/// from a pool.
pub fn open_in_browser(url: &str) -> std::io::Result<()> {
    let plain = url.starts_with("https://")
        && url.len() > "https://".len()
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"');
    if !plain {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{url:?} is not an https address"),
        ));
    }
    let mut command = if cfg!(windows) {
        // The URL protocol handler, as the Run box would: no shell parses the address.
        let mut command = std::process::Command::new("rundll32");
        command.args(["url.dll,FileProtocolHandler", url]);
        command
    } else if cfg!(target_os = "macos") {
        let mut command = std::process::Command::new("open");
        command.arg(url);
        command
    } else {
        let mut command = std::process::Command::new("xdg-open");
        command.arg(url);
        command
    };
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn()?;
    // Reaped in the background: xdg-open returns once the browser has the address.
    std::thread::spawn(move || child.wait());
    Ok(())
}

#[cfg(target_os = "linux")]
mod x11;
#[cfg(target_os = "linux")]
pub use x11::X11Desktop as Desktop;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::WindowsDesktop as Desktop;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::MacDesktop as Desktop;

/// Why the desktop could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    /// No display to connect to, or it refused the connection.
    #[error("cannot reach the display: {0}")]
    Connect(String),
    /// The display or the system would not answer `question`.
    #[error("{question}: {reason}")]
    Query {
        question: &'static str,
        reason: String,
    },
    /// This platform cannot tell (yet).
    #[error("{0} is not available on this platform yet")]
    Unsupported(&'static str),
}
