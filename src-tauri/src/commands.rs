//! The Tauri commands: each forwards to the node and returns what it says.

use std::sync::Arc;

use hearth_node::views::{EarningsReport, HardwareView, JobPage, JobQuery};
use hearth_node::{ControlSource, Node, NodeConfig, NodeStatus, Overview, Service};
use tauri::{AppHandle, Manager, State};

use crate::Running;

/// The node's current state.
#[tauri::command]
pub fn node_status(node: State<'_, Node>) -> NodeStatus {
    node.status()
}

/// Pause from the window.
#[tauri::command]
pub fn pause_node(node: State<'_, Node>) -> NodeStatus {
    node.pause(ControlSource::Window)
}

/// Pause from the window for `minutes` (1 to 24 hours' worth), then resume by itself.
#[tauri::command]
pub fn pause_node_for(node: State<'_, Node>, minutes: u32) -> Result<NodeStatus, String> {
    if !(1..=24 * 60).contains(&minutes) {
        return Err(format!("{minutes} minutes: pause for 1 minute to 24 hours"));
    }
    Ok(node.pause_for(
        ControlSource::Window,
        std::time::Duration::from_secs(u64::from(minutes) * 60),
    ))
}

/// Resume from the window.
#[tauri::command]
pub fn resume_node(node: State<'_, Node>) -> NodeStatus {
    node.resume(ControlSource::Window)
}

/// Status, pool, earnings, recent jobs and telemetry. While the node is still starting (or
/// could not start) the answer says so in its pool part.
#[tauri::command]
pub fn node_overview(node: State<'_, Node>, running: State<'_, Running>) -> Overview {
    running.overview(&node)
}

/// The running service, or why there is none yet.
fn service(running: &Running) -> Result<Arc<Service>, String> {
    match running.get() {
        Some(Ok(service)) => Ok(service),
        Some(Err(error)) => Err(format!("Hearth could not start: {error}")),
        None => Err("Hearth is still starting".into()),
    }
}

/// Answer a question off the main thread (it may read many ledger records, or measure).
async fn off_thread<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    running: State<'_, Running>,
    ask: impl FnOnce(&Service) -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    let service = service(&running)?;
    tauri::async_runtime::spawn_blocking(move || ask(&service))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Earnings over the last 30 days (Earnings page).
#[tauri::command]
pub async fn earnings_report(running: State<'_, Running>) -> Result<EarningsReport, String> {
    off_thread(running, Service::earnings_report).await
}

/// One page of the job history (History page).
#[tauri::command]
pub async fn job_page(running: State<'_, Running>, query: JobQuery) -> Result<JobPage, String> {
    off_thread(running, move |service| service.job_page(&query)).await
}

/// The settings as saved.
#[tauri::command]
pub fn settings(running: State<'_, Running>) -> Result<NodeConfig, String> {
    Ok(service(&running)?.settings())
}

/// Check and save settings; an error names the setting (`key: reason`).
#[tauri::command]
pub fn save_settings(
    app: AppHandle,
    running: State<'_, Running>,
    settings: NodeConfig,
) -> Result<NodeConfig, String> {
    let saved = service(&running)?
        .save_settings(settings)
        .map_err(|e| e.to_string())?;
    crate::desktop::apply_start_at_login(&app, saved.start_at_login);
    Ok(saved)
}

/// Write every job as CSV into the Downloads folder (else the data folder); the file's path.
#[tauri::command]
pub async fn export_history(app: AppHandle, running: State<'_, Running>) -> Result<String, String> {
    let folder = export_folder(&app)?;
    let name = format!(
        "hearth-jobs-{}.csv",
        chrono::Local::now().format("%Y-%m-%d-%H%M%S")
    );
    let path = folder.join(name);
    let written = path.clone();
    off_thread(running, move |service| {
        std::fs::create_dir_all(&folder).map_err(hearth_ledger::LedgerError::Export)?;
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&written).map_err(hearth_ledger::LedgerError::Export)?,
        );
        service.ledger().export_csv(&mut file)?;
        std::io::Write::flush(&mut file).map_err(hearth_ledger::LedgerError::Export)
    })
    .await?;
    tracing::info!(path = %path.display(), "job history exported");
    Ok(path.display().to_string())
}

/// The machine, its stored benchmark and expected earnings (Hardware page).
#[tauri::command]
pub async fn hardware(running: State<'_, Running>) -> Result<HardwareView, String> {
    off_thread(running, |service| {
        Ok::<_, std::convert::Infallible>(service.hardware_view())
    })
    .await
}

/// Run the capability benchmark; its progress arrives as node events.
#[tauri::command]
pub async fn run_benchmark(running: State<'_, Running>) -> Result<HardwareView, String> {
    off_thread(running, Service::run_benchmark).await
}

/// Where exports go: `$HEARTH_EXPORT_DIR`, else the Downloads folder, else the data folder.
fn export_folder(app: &AppHandle) -> Result<std::path::PathBuf, String> {
    match std::env::var_os("HEARTH_EXPORT_DIR") {
        Some(dir) => Ok(std::path::PathBuf::from(dir)),
        None => app
            .path()
            .download_dir()
            .or_else(|_| app.path().app_data_dir())
            .map_err(|e| e.to_string()),
    }
}

/// The newest `lines` log lines (Diagnostics page).
#[tauri::command]
pub async fn recent_logs(app: AppHandle, lines: usize) -> Result<Vec<String>, String> {
    let dir = crate::logging::log_dir(&app)?;
    tauri::async_runtime::spawn_blocking(move || {
        hearth_node::diagnostics::recent_log_lines(&dir, lines.clamp(1, 5000))
    })
    .await
    .map_err(|e| e.to_string())
}

/// Write the diagnostics bundle (no keys) into the Downloads folder; the file's path.
#[tauri::command]
pub async fn save_diagnostics(
    app: AppHandle,
    running: State<'_, Running>,
) -> Result<String, String> {
    let service = service(&running)?;
    let (logs, folder) = (crate::logging::log_dir(&app)?, export_folder(&app)?);
    tauri::async_runtime::spawn_blocking(move || {
        hearth_node::diagnostics::save_bundle(&service, Some(&logs), &folder)
    })
    .await
    .map_err(|e| e.to_string())?
    .map(|path| path.display().to_string())
    .map_err(|e| e.to_string())
}
