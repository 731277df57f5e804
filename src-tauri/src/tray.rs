//! The tray icon: a status line, today's earnings, Pause/Resume, Open Hearth and Quit.

use hearth_node::{ActivityState, ControlSource, Earnings, Node, NodeStatus};
use tauri::image::Image;
use tauri::menu::{Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Wry};

const TRAY_ID: &str = "hearth";
const ITEM_STATUS: &str = "status";
const ITEM_EARNINGS: &str = "earnings";
const ITEM_TOGGLE: &str = "toggle";
const ITEM_PAUSE_30: &str = "pause-30m";
const ITEM_PAUSE_60: &str = "pause-1h";
const ITEM_OPEN: &str = "open";
const ITEM_QUIT: &str = "quit";

const ICON_RUNNING: &[u8] = include_bytes!("../../icons/tray-running.png");
const ICON_PAUSED: &[u8] = include_bytes!("../../icons/tray-paused.png");
const ICON_THROTTLED: &[u8] = include_bytes!("../../icons/tray-throttled.png");
const ICON_ERROR: &[u8] = include_bytes!("../../icons/tray-error.png");

/// Handles to the parts of the tray that change with the node's state.
#[derive(Clone)]
pub struct Tray {
    icon: TrayIcon,
    status_line: MenuItem<Wry>,
    earnings_line: MenuItem<Wry>,
    toggle: MenuItem<Wry>,
}

impl Tray {
    /// Build the tray icon and its menu. Without a tray host this is a silent no-op.
    pub fn create(app: &AppHandle) -> tauri::Result<Self> {
        let status_line = MenuItem::with_id(app, ITEM_STATUS, "Hearth", false, None::<&str>)?;
        let earnings_line =
            MenuItem::with_id(app, ITEM_EARNINGS, "Today: starting…", false, None::<&str>)?;
        let toggle = MenuItem::with_id(app, ITEM_TOGGLE, "Pause", true, None::<&str>)?;
        let pause_30 = MenuItem::with_id(
            app,
            ITEM_PAUSE_30,
            "Pause for 30 minutes",
            true,
            None::<&str>,
        )?;
        let pause_60 =
            MenuItem::with_id(app, ITEM_PAUSE_60, "Pause for 1 hour", true, None::<&str>)?;
        let open = MenuItem::with_id(app, ITEM_OPEN, "Open Hearth", true, None::<&str>)?;
        let quit = MenuItem::with_id(app, ITEM_QUIT, "Quit", true, None::<&str>)?;
        let separator = PredefinedMenuItem::separator(app)?;
        let menu = Menu::with_items(
            app,
            &[
                &status_line,
                &earnings_line,
                &separator,
                &toggle,
                &pause_30,
                &pause_60,
                &open,
                &quit,
            ],
        )?;
        let icon = TrayIconBuilder::with_id(TRAY_ID)
            .icon(Image::from_bytes(ICON_RUNNING)?)
            .tooltip("Hearth")
            .menu(&menu)
            .show_menu_on_left_click(true)
            .on_menu_event(on_menu_event)
            .build(app)?;
        Ok(Self {
            icon,
            status_line,
            earnings_line,
            toggle,
        })
    }

    /// Show today's earnings in the menu.
    pub fn show_earnings(&self, earnings: &Earnings) {
        let line = format!(
            "Today: {:.6} {}credits, {} jobs",
            earnings.today_micro_credits as f64 / 1e6,
            if earnings.demo { "demo " } else { "" },
            earnings.today_jobs
        );
        if let Err(error) = self.earnings_line.set_text(line) {
            tracing::warn!(%error, "could not update the tray's earnings");
        }
    }

    /// Make the tray match `status`; `pool_error` (the pool cannot be reached) shows the
    /// error icon and the reason while the node would otherwise work.
    pub fn show_status(&self, status: &NodeStatus, pool_error: Option<&str>) {
        let (line, toggle, icon) = match (&status.activity, pool_error) {
            (ActivityState::Paused { reason }, _) => (
                format!("Paused ({})", reason.describe()),
                "Resume",
                ICON_PAUSED,
            ),
            (_, Some(error)) => (
                format!("Cannot reach the pool ({})", shorten(error, 60)),
                "Pause",
                ICON_ERROR,
            ),
            (ActivityState::Running, None) => ("Running".to_owned(), "Pause", ICON_RUNNING),
            (ActivityState::Throttled { duty_percent }, None) => (
                format!("Running at {duty_percent}% while you use the computer"),
                "Pause",
                ICON_THROTTLED,
            ),
        };
        let results = [
            (
                "status line",
                self.status_line.set_text(format!("Hearth: {line}")),
            ),
            ("toggle", self.toggle.set_text(toggle)),
            (
                "icon",
                Image::from_bytes(icon).and_then(|image| self.icon.set_icon(Some(image))),
            ),
        ];
        for (part, result) in results {
            if let Err(error) = result {
                tracing::warn!(%error, part, "could not update the tray");
            }
        }
    }
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

impl std::fmt::Debug for Tray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tray").finish_non_exhaustive()
    }
}

fn on_menu_event(app: &AppHandle, event: MenuEvent) {
    tracing::debug!(item = event.id.as_ref(), "tray menu clicked");
    match event.id.as_ref() {
        ITEM_TOGGLE => {
            app.state::<Node>().toggle(ControlSource::Tray);
        }
        ITEM_PAUSE_30 | ITEM_PAUSE_60 => {
            let minutes = if event.id.as_ref() == ITEM_PAUSE_30 {
                30
            } else {
                60
            };
            app.state::<Node>().pause_for(
                ControlSource::Tray,
                std::time::Duration::from_secs(minutes * 60),
            );
        }
        ITEM_OPEN => crate::show_main_window(app),
        ITEM_QUIT => app.exit(0),
        _ => {}
    }
}
