//! X11: what the desktop tells about its user.
//!
//! - Is a fullscreen window in front? The window manager names the focused window in the root
//!   window's `_NET_ACTIVE_WINDOW` and marks fullscreen windows with `_NET_WM_STATE_FULLSCREEN`
//!   in their `_NET_WM_STATE` (EWMH). Hearth's own windows do not count (`_NET_WM_PID`).
//! - How long since the last keyboard or mouse input? The MIT-SCREEN-SAVER extension says.

use x11rb::connection::Connection;
use x11rb::protocol::screensaver::ConnectionExt as _;
use x11rb::protocol::xproto::{Atom, AtomEnum, ConnectionExt, Window};
use x11rb::rust_connection::RustConnection;

use crate::DesktopError;

/// A failed question to the X server, named.
fn asking(question: &'static str) -> impl Fn(String) -> DesktopError {
    move |reason| DesktopError::Query { question, reason }
}

/// A connection to the X display, with the atoms it asks about.
#[derive(Debug)]
pub struct X11Desktop {
    conn: RustConnection,
    root: Window,
    active_window: Atom,
    wm_state: Atom,
    fullscreen: Atom,
    wm_pid: Atom,
    own_pid: u32,
}

impl X11Desktop {
    /// Connect to `display` (`None`: `$DISPLAY`).
    pub fn connect(display: Option<&str>) -> Result<Self, DesktopError> {
        let (conn, screen) =
            x11rb::connect(display).map_err(|e| DesktopError::Connect(e.to_string()))?;
        let root = conn.setup().roots[screen].root;
        let atom = |name: &str| -> Result<Atom, DesktopError> {
            let failed = asking("interning an atom");
            Ok(conn
                .intern_atom(false, name.as_bytes())
                .map_err(|e| failed(e.to_string()))?
                .reply()
                .map_err(|e| failed(e.to_string()))?
                .atom)
        };
        Ok(Self {
            active_window: atom("_NET_ACTIVE_WINDOW")?,
            wm_state: atom("_NET_WM_STATE")?,
            fullscreen: atom("_NET_WM_STATE_FULLSCREEN")?,
            wm_pid: atom("_NET_WM_PID")?,
            own_pid: std::process::id(),
            conn,
            root,
        })
    }

    fn property32(
        &self,
        window: Window,
        property: Atom,
        kind: AtomEnum,
    ) -> Result<Vec<u32>, DesktopError> {
        let failed = asking("reading a window property");
        let reply = self
            .conn
            .get_property(false, window, property, kind, 0, 64)
            .map_err(|e| failed(e.to_string()))?
            .reply()
            .map_err(|e| failed(e.to_string()))?;
        Ok(reply.value32().map(Iterator::collect).unwrap_or_default())
    }

    /// True when the focused window is fullscreen and not one of Hearth's.
    pub fn is_fullscreen(&self) -> Result<bool, DesktopError> {
        let active = self.property32(self.root, self.active_window, AtomEnum::WINDOW)?;
        let Some(&window) = active.first().filter(|&&w| w != 0) else {
            return Ok(false);
        };
        // A window that went away between the two questions is not in front any more.
        let Ok(states) = self.property32(window, self.wm_state, AtomEnum::ATOM) else {
            return Ok(false);
        };
        if !states.contains(&self.fullscreen) {
            return Ok(false);
        }
        let pid = self
            .property32(window, self.wm_pid, AtomEnum::CARDINAL)
            .unwrap_or_default();
        Ok(pid.first() != Some(&self.own_pid))
    }

    /// Time since the user last touched keyboard or mouse.
    pub fn idle(&self) -> Result<std::time::Duration, DesktopError> {
        let failed = asking("asking the screen saver extension for idle time");
        let info = self
            .conn
            .screensaver_query_info(self.root)
            .map_err(|e| failed(e.to_string()))?
            .reply()
            .map_err(|e| failed(e.to_string()))?;
        Ok(std::time::Duration::from_millis(u64::from(
            info.ms_since_user_input,
        )))
    }
}
