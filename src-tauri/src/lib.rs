//! Hearth's desktop shell. It owns no logic: it starts a [`Node`], forwards the window's
//! commands to it, and pushes the node's events to the window and the tray.

mod commands;
mod logging;
mod tray;

use hearth_node::{Node, NodeEvent};
use tauri::{AppHandle, Emitter, Manager, RunEvent, WindowEvent};
use tokio::sync::broadcast::error::RecvError;

/// The label of the one window, as in `tauri.conf.json`.
pub const MAIN_WINDOW: &str = "main";
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
        .manage(node)
        .invoke_handler(tauri::generate_handler![
            commands::node_status,
            commands::pause_node,
            commands::resume_node,
        ])
        .setup(|app| {
            let log_guard = logging::init(app.handle())?;
            app.manage(log_guard);
            let tray = tray::Tray::create(app.handle())?;
            spawn_event_forwarder(app.handle().clone(), tray);
            tracing::info!(version = env!("CARGO_PKG_VERSION"), "Hearth started");
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing the window keeps Hearth running in the tray.
            if let WindowEvent::CloseRequested { api, .. } = event {
                api.prevent_close();
                if let Err(error) = window.hide() {
                    tracing::warn!(%error, "could not hide the window");
                }
            }
        })
        .build(tauri::generate_context!("../tauri.conf.json"));
    match result {
        Ok(app) => app.run(|_app, event| {
            if let RunEvent::Exit = event {
                tracing::info!("Hearth quitting");
            }
        }),
        Err(error) => {
            eprintln!("Hearth could not start: {error}");
            std::process::exit(1);
        }
    }
}

/// Show, unminimise and focus the main window.
pub(crate) fn show_main_window(app: &AppHandle) {
    let Some(window) = app.get_webview_window(MAIN_WINDOW) else {
        tracing::warn!("main window is gone");
        return;
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
    tray.show_status(&node.status());
    tauri::async_runtime::spawn(async move {
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
                NodeEvent::StatusChanged { status } => tray.show_status(status),
            }
            if let Err(error) = app.emit(NODE_EVENT, &event) {
                tracing::warn!(%error, "could not send an event to the window");
            }
        }
    });
}
