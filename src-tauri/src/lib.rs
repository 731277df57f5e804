//! Hearth's desktop shell. It owns no logic: it starts a [`hearth_node::Service`] (by
//! default with the embedded local pool, so a fresh install does real work at once), forwards
//! the window's commands to its [`Node`], and pushes the node's events to the window and tray.

mod commands;
mod desktop;
mod logging;
mod tray;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_node::{Node, NodeEvent, Overview, PoolStatus, Service, ServiceOptions};
use tauri::{AppHandle, Emitter, Manager, RunEvent, WindowEvent};
use tokio::sync::broadcast::error::RecvError;

/// The running service once it has started, or why it could not.
#[derive(Debug, Default)]
pub struct Running {
    service: Mutex<Option<Result<Arc<Service>, String>>>,
}

impl Running {
    fn set(&self, result: Result<Arc<Service>, String>) {
        *self.service.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    }

    pub(crate) fn get(&self) -> Option<Result<Arc<Service>, String>> {
        self.service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The service's overview, or the node's state with the start-up news in its pool part.
    pub fn overview(&self, node: &Node) -> Overview {
        match self.get() {
            Some(Ok(service)) => service.overview(),
            other => Overview {
                node_id: String::new(),
                device: String::new(),
                status: node.status(),
                pool: PoolStatus {
                    error: Some(match other {
                        Some(Err(error)) => error,
                        _ => "starting".into(),
                    }),
                    ..PoolStatus::default()
                },
                earnings: Default::default(),
                jobs: Vec::new(),
                telemetry: None,
                changes: Vec::new(),
            },
        }
    }
}

/// Where the app keeps its ledger, key and settings: `$HEARTH_DATA_DIR`, else the platform's
/// app data folder (`~/.local/share/app.hearth.desktop`).
pub(crate) fn data_dir(app: &AppHandle) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("HEARTH_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    app.path().app_data_dir().map_err(|e| e.to_string())
}

/// Start the node in the background; the window shows "starting" until it is up.
fn start_service(app: &AppHandle) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let node = app.state::<Node>().inner().clone();
        let started = async {
            let dir = data_dir(&app)?;
            let options = ServiceOptions::from_data_dir(&dir).map_err(|e| e.to_string())?;
            Service::start_with(options, node)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match &started {
            Ok(service) => tracing::info!(
                node = service.node_id(),
                device = service.device(),
                "node started"
            ),
            Err(error) => tracing::error!(%error, "the node could not start"),
        }
        let result = started.map(Arc::new);
        if let Ok(service) = &result {
            desktop::apply_start_at_login(&app, service.settings().start_at_login);
        }
        if let Ok(service) = &result
            && let Some(tray) = app.try_state::<tray::Tray>()
        {
            tray.show_earnings(&service.earnings());
        }
        app.state::<Running>().set(result);
    });
}

/// The label of the one window, as in `tauri.conf.json`.
pub const MAIN_WINDOW: &str = "main";

/// Start in the tray without opening the window (how Hearth starts at login).
pub const IN_TRAY_FLAG: &str = "--in-tray";

/// The event name under which every [`NodeEvent`] reaches the window.
pub const NODE_EVENT: &str = "node-event";

/// Start the app and block until it quits.
pub fn run() {
    let node = Node::new();
    let result = tauri::Builder::default()
        // Must come first: a second launch hands over to the first and exits here.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            tracing::info!("second launch: focusing the running instance");
            show_main_window(app);
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec![IN_TRAY_FLAG]),
        ))
        .plugin(tauri_plugin_notification::init())
        .manage(node)
        .manage(Running::default())
        .invoke_handler(tauri::generate_handler![
            commands::node_status,
            commands::pause_node,
            commands::pause_node_for,
            commands::resume_node,
            commands::node_overview,
            commands::earnings_report,
            commands::job_page,
            commands::settings,
            commands::save_settings,
            commands::export_history,
            commands::hardware,
            commands::run_benchmark,
            commands::recent_logs,
            commands::save_diagnostics,
        ])
        .setup(|app| {
            let log_guard = logging::init(app.handle())?;
            app.manage(log_guard);
            let tray = tray::Tray::create(app.handle())?;
            app.manage(tray.clone());
            spawn_event_forwarder(app.handle().clone(), tray);
            start_service(app.handle());
            let in_tray = std::env::args().any(|arg| arg == IN_TRAY_FLAG);
            if !in_tray {
                show_main_window(app.handle());
            }
            tracing::info!(
                version = env!("CARGO_PKG_VERSION"),
                in_tray,
                "Hearth started"
            );
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing the window destroys it and its webview (whose web process holds most of
            // the app's memory); Hearth keeps running in the tray, and Open builds it anew.
            if let WindowEvent::Destroyed = event {
                tracing::info!(
                    window = window.label(),
                    "window closed: running in the tray"
                );
            }
        })
        .build(tauri::generate_context!("../tauri.conf.json"));
    match result {
        Ok(app) => app.run(|app, event| {
            // The last window closing is no reason to quit (`code` is set only by Quit).
            if let RunEvent::ExitRequested {
                api, code: None, ..
            } = &event
            {
                api.prevent_exit();
                return;
            }
            if let RunEvent::Exit = event {
                tracing::info!("Hearth quitting: giving running jobs back");
                if let Some(Ok(service)) = app.state::<Running>().get() {
                    tauri::async_runtime::block_on(service.shutdown(Duration::from_secs(5)));
                }
            }
        }),
        Err(error) => {
            eprintln!("Hearth could not start: {error}");
            std::process::exit(1);
        }
    }
}

/// Show, unminimise and focus the main window, building it (from `tauri.conf.json`) when it
/// was closed.
pub(crate) fn show_main_window(app: &AppHandle) {
    let window = match app.get_webview_window(MAIN_WINDOW) {
        Some(window) => window,
        None => {
            let Some(config) = app
                .config()
                .app
                .windows
                .iter()
                .find(|w| w.label == MAIN_WINDOW)
            else {
                tracing::error!("tauri.conf.json has no main window");
                return;
            };
            match tauri::WebviewWindowBuilder::from_config(app, config).and_then(|b| b.build()) {
                Ok(window) => {
                    tracing::info!("window opened again");
                    window
                }
                Err(error) => {
                    tracing::error!(%error, "could not open the window");
                    return;
                }
            }
        }
    };
    for (what, result) in [
        ("show", window.show()),
        ("unminimize", window.unminimize()),
        ("focus", window.set_focus()),
    ] {
        if let Err(error) = result {
            tracing::warn!(%error, what, "could not raise the window");
        }
    }
}

/// Relay node events to the tray and the window, in order, for the life of the app.
fn spawn_event_forwarder(app: AppHandle, tray: tray::Tray) {
    let node = app.state::<Node>().inner().clone();
    let mut events = node.subscribe();
    tray.show_status(&node.status(), None);
    tauri::async_runtime::spawn(async move {
        let mut pool_error: Option<String> = None;
        let mut last_activity = node.status().activity;
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "event forwarder fell behind; resending status");
                    NodeEvent::StatusChanged {
                        status: node.status(),
                    }
                }
                Err(RecvError::Closed) => break,
            };
            match &event {
                NodeEvent::StatusChanged { status } => {
                    tray.show_status(status, pool_error.as_deref());
                    if let Some(text) = desktop::pause_notice(&last_activity, &status.activity) {
                        desktop::notify(&app, &text);
                    }
                    last_activity = status.activity.clone();
                }
                NodeEvent::PoolChanged { pool } => {
                    let error = (!pool.connected).then(|| pool.error.clone()).flatten();
                    if error != pool_error {
                        pool_error = error;
                        tray.show_status(&node.status(), pool_error.as_deref());
                    }
                }
                NodeEvent::EarningsChanged { earnings } => tray.show_earnings(earnings),
                _ => {}
            }
            if let Err(error) = app.emit(NODE_EVENT, &event) {
                tracing::warn!(%error, "could not send an event to the window");
            }
        }
    });
}
