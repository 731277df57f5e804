//! Logs go to stderr and to a daily-rolling file under the app's data directory.

use tauri::AppHandle;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log files kept before the oldest is deleted.
const KEPT_LOG_FILES: usize = 7;

/// Where the log files are: `logs/` in the app's data folder.
pub fn log_dir(app: &AppHandle) -> Result<std::path::PathBuf, String> {
    Ok(crate::data_dir(app)?.join("logs"))
}

/// Install the global subscriber. Keep the returned guard alive: dropping it stops the
/// file writer (it is managed as app state).
pub fn init(app: &AppHandle) -> anyhow::Result<WorkerGuard> {
    let dir = log_dir(app).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&dir)?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("hearth")
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(&dir)?;
    let (file_writer, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hearth=debug"));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr))
        .with(fmt::layer().with_ansi(false).with_writer(file_writer))
        .try_init()?;
    tracing::info!(dir = %dir.display(), "logging to file");
    Ok(guard)
}
