//! Just enough of X11 to do what a window manager does to a window: find it, ask it to close,
//! and tell whether it is on screen.

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt, EventMask, MapState, Window,
};
use x11rb::rust_connection::RustConnection;
use x11rb::{CURRENT_TIME, NONE};

/// A connection to one X display.
#[derive(Debug)]
pub struct X11 {
    conn: RustConnection,
    root: Window,
}

impl X11 {
    /// Connect to `display` (e.g. ":91").
    pub fn connect(display: &str) -> anyhow::Result<Self> {
        let (conn, screen) = x11rb::connect(Some(display))?;
        let root = conn.setup().roots[screen].root;
        Ok(Self { conn, root })
    }

    /// The top-level windows titled `title`, mapped or not, oldest first.
    pub fn windows_titled(&self, title: &str) -> anyhow::Result<Vec<Window>> {
        let children = self.conn.query_tree(self.root)?.reply()?.children;
        let mut found = Vec::new();
        for window in children {
            if self.title(window)?.as_deref() == Some(title) {
                found.push(window);
            }
        }
        Ok(found)
    }

    /// The top-level window titled `title` that is on screen, if any.
    pub fn find_viewable_window(&self, title: &str) -> anyhow::Result<Option<Window>> {
        for window in self.windows_titled(title)? {
            if self.is_viewable(window)? {
                return Ok(Some(window));
            }
        }
        Ok(None)
    }

    /// True while `window` is mapped and visible.
    pub fn is_viewable(&self, window: Window) -> anyhow::Result<bool> {
        let attributes = self.conn.get_window_attributes(window)?.reply()?;
        Ok(attributes.map_state == MapState::VIEWABLE)
    }

    /// Ask `window` to close, as a window manager's close button does (`WM_DELETE_WINDOW`).
    pub fn request_close(&self, window: Window) -> anyhow::Result<()> {
        let protocols = self.atom("WM_PROTOCOLS")?;
        let delete = self.atom("WM_DELETE_WINDOW")?;
        let event = ClientMessageEvent::new(32, window, protocols, [delete, CURRENT_TIME, 0, 0, 0]);
        self.conn
            .send_event(false, window, EventMask::NO_EVENT, event)?
            .check()?;
        self.conn.flush()?;
        Ok(())
    }

    fn title(&self, window: Window) -> anyhow::Result<Option<String>> {
        let utf8 = self.atom("UTF8_STRING")?;
        let net_name = self.atom("_NET_WM_NAME")?;
        for (property, kind) in [
            (net_name, utf8),
            (AtomEnum::WM_NAME.into(), AtomEnum::STRING.into()),
        ] {
            let reply = self
                .conn
                .get_property(false, window, property, kind, 0, 1024)?
                .reply()?;
            if reply.type_ != NONE && !reply.value.is_empty() {
                return Ok(Some(String::from_utf8_lossy(&reply.value).into_owned()));
            }
        }
        Ok(None)
    }

    fn atom(&self, name: &str) -> anyhow::Result<u32> {
        Ok(self.conn.intern_atom(false, name.as_bytes())?.reply()?.atom)
    }
}
