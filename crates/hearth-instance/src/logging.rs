//! Logs go to stderr and to a daily file in `logs/` of the data folder. The background process
//! and the window append to the same file, so one file tells what both did, in order.

use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log files kept before the oldest is deleted.
const KEPT_LOG_FILES: usize = 7;

/// Where the log files are: `logs/` in the data folder.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

/// Install the global subscriber (filter from `$HEARTH_LOG`, default `info`). Keep the guard
/// alive: dropping it stops the file writer.
pub fn init(data_dir: &Path) -> Result<WorkerGuard, Box<dyn std::error::Error + Send + Sync>> {
    let dir = log_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("hearth")
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(&dir)?;
    let (file_writer, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_env("HEARTH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr))
        .with(fmt::layer().with_ansi(false).with_writer(file_writer))
        .try_init()?;
    Ok(guard)
}
