//! The tray icon: a status line, today's earnings, Pause/Resume (Resume anyway or Skip wait
//! during an automatic pause), timed pauses, Open Hearth and Quit, kept current from the
//! node's events. Runs on the main loop's thread: GTK's on Linux, the Win32 message loop on
//! Windows.

use std::sync::Arc;
use std::time::Duration;

use hearth_node::{
    ActivityState, ControlSource, Earnings, Node, NodeEvent, NodeStatus, PauseReason, RunningNode,
};
use tokio::sync::broadcast::error::RecvError;
use tray_icon::menu::{Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

const ITEM_TOGGLE: &str = "toggle";
const ITEM_PAUSE_30: &str = "pause-30m";
const ITEM_PAUSE_60: &str = "pause-1h";
const ITEM_OPEN: &str = "open";
const ITEM_QUIT: &str = "quit";

const ICON_RUNNING: &[u8] = include_bytes!("../../../icons/tray-running.png");
const ICON_PAUSED: &[u8] = include_bytes!("../../../icons/tray-paused.png");
const ICON_THROTTLED: &[u8] = include_bytes!("../../../icons/tray-throttled.png");
const ICON_ERROR: &[u8] = include_bytes!("../../../icons/tray-error.png");

/// The tray icon and the menu items that change with the node's state.
pub struct Tray {
    icon: TrayIcon,
    status_line: MenuItem,
    earnings_line: MenuItem,
    toggle: MenuItem,
    /// The icon now shown, so an unchanged state does not resend it.
    shown_icon: std::cell::Cell<&'static [u8]>,
}

impl Tray {
    /// Build the tray icon and its menu, and route menu clicks to `running`'s node.
    pub fn create(running: Arc<RunningNode>) -> anyhow::Result<Self> {
        let status_line = MenuItem::new("Hearth", false, None);
        let earnings_line = MenuItem::new("Today: starting…", false, None);
        let toggle = MenuItem::with_id(ITEM_TOGGLE, "Pause", true, None);
        let menu = Menu::with_items(&[
            &status_line,
            &earnings_line,
            &PredefinedMenuItem::separator(),
            &toggle,
            &MenuItem::with_id(ITEM_PAUSE_30, "Pause for 30 minutes", true, None),
            &MenuItem::with_id(ITEM_PAUSE_60, "Pause for 1 hour", true, None),
            &MenuItem::with_id(ITEM_OPEN, "Open Hearth", true, None),
            &MenuItem::with_id(ITEM_QUIT, "Quit", true, None),
        ])?;
        let icon = TrayIconBuilder::new()
            .with_id("hearth")
            .with_icon(decode_icon(ICON_RUNNING)?)
            .with_tooltip("Hearth")
            .with_menu(Box::new(menu.clone()))
            .build()?;
        #[cfg(windows)]
        crate::windows_menu::open_menu_on_click(&icon, menu)?;
        let node = running.node().clone();
        MenuEvent::set_event_handler(Some(move |event: MenuEvent| on_click(&node, &event)));
        let tray = Self {
            icon,
            status_line,
            earnings_line,
            toggle,
            shown_icon: std::cell::Cell::new(ICON_RUNNING),
        };
        tray.show_status(&running.node().status(), None);
        tray.show_earnings(&running.earnings(), &running.credit_rate());
        Ok(tray)
    }

    /// Keep the tray current from the node's events, on GTK's main loop.
    #[cfg(target_os = "linux")]
    pub fn follow(self, running: &Arc<RunningNode>) {
        let mut events = running.node().subscribe();
        let mut follower = Follower::new(self, running);
        gtk::glib::MainContext::default().spawn_local(async move {
            loop {
                let event = events.recv().await;
                if matches!(event, Err(RecvError::Closed)) {
                    break;
                }
                follower.handle(event);
            }
        });
    }

    /// Show today's earnings in the menu: money first (at `rate`: a credit's value and its
    /// currency), then credits and jobs.
    pub fn show_earnings(&self, earnings: &Earnings, rate: &(f64, String)) {
        let credits = earnings.today_micro_credits as f64 / 1e6;
        let (value, currency) = rate;
        self.earnings_line.set_text(format!(
            "Today: {:.4} {currency} ({credits:.6} {}credits, {} jobs)",
            credits * value,
            if earnings.demo { "demo " } else { "" },
            earnings.today_jobs
        ));
    }

    /// Make the tray match `status`; `pool_error` (the pool cannot be reached) shows the
    /// error icon and the reason while the node would otherwise work.
    pub fn show_status(&self, status: &NodeStatus, pool_error: Option<&str>) {
        let mut toggle_enabled = true;
        let (line, toggle, icon) = match (&status.activity, pool_error) {
            (ActivityState::Paused { reason }, _) => {
                let toggle = match reason {
                    PauseReason::User { .. } => "Resume",
                    PauseReason::CoolingDown { .. } => "Skip wait",
                    automatic if automatic.can_override() => "Resume anyway",
                    // Heat, short GPU memory or a storage fault: it resumes by itself.
                    _ => {
                        toggle_enabled = false;
                        "Resumes by itself"
                    }
                };
                (
                    format!("Paused ({})", reason.describe()),
                    toggle,
                    ICON_PAUSED,
                )
            }
            (_, Some(error)) => (
                format!("Cannot reach the pool ({})", hearth_cli::shorten(error, 60)),
                "Pause",
                ICON_ERROR,
            ),
            (ActivityState::Running, None) => match &status.overriding {
                Some(o) => (format!("Running ({})", o.describe()), "Pause", ICON_RUNNING),
                None => ("Running".to_owned(), "Pause", ICON_RUNNING),
            },
            (ActivityState::Throttled { .. }, None) => {
                let line = status.describe();
                let mut first = line.chars();
                let line = first
                    .next()
                    .map(|c| c.to_uppercase().chain(first).collect())
                    .unwrap_or(line);
                (line, "Pause", ICON_THROTTLED)
            }
        };
        self.status_line.set_text(format!("Hearth: {line}"));
        self.toggle.set_text(toggle);
        self.toggle.set_enabled(toggle_enabled);
        if !std::ptr::eq(self.shown_icon.get(), icon) {
            match decode_icon(icon).and_then(|image| Ok(self.icon.set_icon(Some(image))?)) {
                Ok(()) => self.shown_icon.set(icon),
                Err(error) => tracing::warn!(%error, "could not change the tray icon"),
            }
        }
    }
}

/// Keeps a tray current from the node's events, on whichever main loop the platform runs.
pub struct Follower {
    tray: Tray,
    running: Arc<RunningNode>,
    /// Why the pool cannot be reached, while it cannot.
    pool_error: Option<String>,
}

impl Follower {
    pub fn new(tray: Tray, running: &Arc<RunningNode>) -> Self {
        Self {
            tray,
            running: Arc::clone(running),
            pool_error: None,
        }
    }

    /// Make the tray show what `event` changed (everything again after missed events).
    pub fn handle(&mut self, event: Result<NodeEvent, RecvError>) {
        match event {
            Ok(NodeEvent::StatusChanged { status }) => {
                self.tray.show_status(&status, self.pool_error.as_deref());
            }
            Ok(NodeEvent::PoolChanged { pool }) => {
                let error = (!pool.connected).then(|| pool.error.clone()).flatten();
                if error != self.pool_error {
                    self.pool_error = error;
                    self.tray
                        .show_status(&self.running.node().status(), self.pool_error.as_deref());
                }
            }
            Ok(NodeEvent::EarningsChanged { earnings }) => {
                self.tray
                    .show_earnings(&earnings, &self.running.credit_rate());
            }
            Ok(_) | Err(RecvError::Closed) => {}
            Err(RecvError::Lagged(_)) => {
                self.tray
                    .show_status(&self.running.node().status(), self.pool_error.as_deref());
                self.tray
                    .show_earnings(&self.running.earnings(), &self.running.credit_rate());
            }
        }
    }
}

fn on_click(node: &Node, event: &MenuEvent) {
    tracing::debug!(item = event.id.as_ref(), "tray menu clicked");
    match event.id.as_ref() {
        ITEM_TOGGLE => match node.status().activity {
            // "Resume anyway" / "Skip wait" for an automatic pause the owner may override.
            ActivityState::Paused { reason }
                if !matches!(reason, PauseReason::User { .. }) && reason.can_override() =>
            {
                if let Err(refused) = node.resume_anyway(ControlSource::Tray, None) {
                    tracing::info!(%refused, "Resume anyway refused");
                }
            }
            _ => {
                node.toggle(ControlSource::Tray);
            }
        },
        ITEM_PAUSE_30 => {
            node.pause_for(ControlSource::Tray, Duration::from_secs(30 * 60));
        }
        ITEM_PAUSE_60 => {
            node.pause_for(ControlSource::Tray, Duration::from_secs(60 * 60));
        }
        ITEM_OPEN => crate::open_window(),
        ITEM_QUIT => {
            tracing::info!("Quit chosen in the tray");
            #[cfg(target_os = "linux")]
            gtk::main_quit();
            // The menu's click arrives on the message loop's thread: end that loop.
            #[cfg(windows)]
            #[allow(unsafe_code)]
            // SAFETY: takes no pointers; posts WM_QUIT to this (the loop's) thread.
            unsafe {
                windows_sys::Win32::UI::WindowsAndMessaging::PostQuitMessage(0);
            }
        }
        _ => {}
    }
}

/// A PNG (8-bit RGBA, as in `icons/`) as a tray icon.
fn decode_icon(png_bytes: &[u8]) -> anyhow::Result<Icon> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let mut pixels = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let frame = reader.next_frame(&mut pixels)?;
    anyhow::ensure!(
        frame.color_type == png::ColorType::Rgba,
        "tray icons must be RGBA, this one is {:?}",
        frame.color_type
    );
    pixels.truncate(frame.buffer_size());
    Ok(Icon::from_rgba(pixels, frame.width, frame.height)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_state_icon_decodes_to_rgba() {
        for icon in [ICON_RUNNING, ICON_PAUSED, ICON_THROTTLED, ICON_ERROR] {
            decode_icon(icon).unwrap();
        }
    }
}
