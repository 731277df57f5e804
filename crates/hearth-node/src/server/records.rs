//! What the node has done and has: jobs, earnings, resource use, the ledger's check and export,
//! the hardware and its benchmark, logs and the diagnostics bundle.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::RunningNode;
use crate::status::{Earnings, JobSummary, PoolStatus};
use crate::views::{EarningsReport, HardwareView, JobPage, JobQuery};

use super::{Authorized, ServerState, VerifyReport, off_thread};

#[derive(Deserialize)]
pub(super) struct SpanQuery {
    minutes: Option<u32>,
}

pub(super) async fn telemetry_history(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
    Query(query): Query<SpanQuery>,
) -> Result<Json<Vec<crate::Telemetry>>, (StatusCode, String)> {
    let minutes = query.minutes.unwrap_or(5);
    if !(1..=10_080).contains(&minutes) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("{minutes} minutes: ask for 1 minute to 7 days (10080)"),
        ));
    }
    off_thread(&state.running, move |running| {
        running.telemetry_history(u64::from(minutes) * 60_000)
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct JobsQuery {
    limit: Option<usize>,
}

pub(super) async fn jobs(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
    Query(query): Query<JobsQuery>,
) -> Json<Vec<JobSummary>> {
    Json(
        state
            .running
            .recent_jobs(query.limit.unwrap_or(50).clamp(1, 10_000)),
    )
}

pub(super) async fn earnings(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Json<Earnings> {
    Json(state.running.earnings())
}

pub(super) async fn pool(_: Authorized, State(state): State<Arc<ServerState>>) -> Json<PoolStatus> {
    Json(state.running.pool())
}

/// Open the page of the new version the pool told of in the owner's browser (only that
/// address: the window never names one). Answers the address opened.
pub(super) async fn open_new_version(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Result<Json<String>, (StatusCode, String)> {
    let Some(new) = state.running.pool().new_version else {
        return Err((
            StatusCode::NOT_FOUND,
            "the pool told of no newer version".into(),
        ));
    };
    hearth_desktop::open_in_browser(&new.url)
        .map(|()| Json(new.url.clone()))
        .map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not open {}: {e}", new.url),
            )
        })
}

pub(super) async fn verify(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Result<Json<VerifyReport>, (StatusCode, String)> {
    verify_ledger(state.running.ledger())
        .map(Json)
        .map_err(|e| (StatusCode::CONFLICT, e.to_string()))
}

/// Why the ledger's receipts could not be checked (or did not check out).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no pool has paid this node yet: nothing to verify")]
    NoPoolKey,
    #[error(transparent)]
    Ledger(#[from] hearth_ledger::LedgerError),
}

/// Check every receipt's signature and the chain, with the pool key the worker stored.
pub fn verify_ledger(ledger: &hearth_ledger::Ledger) -> Result<VerifyReport, VerifyError> {
    let key: hearth_protocol::PublicKey = ledger
        .setting(crate::worker::POOL_KEY_SETTING)?
        .ok_or(VerifyError::NoPoolKey)?;
    let report = ledger.verify_chain(&key)?;
    Ok(VerifyReport {
        receipts: report.receipts,
        micro_credits: report.micro_credits,
    })
}

pub(super) async fn export(_: Authorized, State(state): State<Arc<ServerState>>) -> Response {
    let running = Arc::clone(&state.running);
    let csv = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        running.ledger().export_csv(&mut out).map(|_| out)
    })
    .await;
    match csv {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"hearth-jobs.csv\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Write the job history as CSV into the Downloads folder (or `$HEARTH_EXPORT_DIR`); its path.
pub(super) async fn save_export(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Result<Json<String>, (StatusCode, String)> {
    off_thread(&state.running, |running| {
        let folder = hearth_instance::export_dir(running.data_dir());
        let path = folder.join(format!(
            "hearth-jobs-{}.csv",
            chrono::Local::now().format("%Y-%m-%d-%H%M%S")
        ));
        std::fs::create_dir_all(&folder).map_err(hearth_ledger::LedgerError::Export)?;
        let mut csv = Vec::new();
        running.ledger().export_csv(&mut csv)?;
        hearth_instance::write_atomic(&path, &csv).map_err(hearth_ledger::LedgerError::Export)?;
        tracing::info!(path = %path.display(), "job history exported");
        Ok::<_, hearth_ledger::LedgerError>(path.display().to_string())
    })
    .await
}

/// Write the diagnostics bundle into the Downloads folder (or `$HEARTH_EXPORT_DIR`); its path.
pub(super) async fn save_diagnostics(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Result<Json<String>, (StatusCode, String)> {
    off_thread(&state.running, |running| {
        let logs = running.data_dir().join("logs");
        let folder = hearth_instance::export_dir(running.data_dir());
        crate::diagnostics::save_bundle(running, logs.is_dir().then_some(logs.as_path()), &folder)
            .map(|path| path.display().to_string())
    })
    .await
}

pub(super) async fn earnings_report(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Result<Json<EarningsReport>, (StatusCode, String)> {
    off_thread(&state.running, RunningNode::earnings_report).await
}

pub(super) async fn job_page(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
    Json(query): Json<JobQuery>,
) -> Result<Json<JobPage>, (StatusCode, String)> {
    off_thread(&state.running, move |running| running.job_page(&query)).await
}

pub(super) async fn hardware(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Result<Json<HardwareView>, (StatusCode, String)> {
    off_thread(&state.running, |running| {
        Ok::<_, Infallible>(running.hardware_view())
    })
    .await
}

/// Run the capability benchmark (progress arrives as events); the Hardware page's view.
pub(super) async fn benchmark(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Result<Json<HardwareView>, (StatusCode, String)> {
    off_thread(&state.running, RunningNode::run_benchmark).await
}

#[derive(Deserialize)]
pub(super) struct LogsQuery {
    lines: Option<usize>,
}

/// The newest log lines, where this node writes log files (`<data>/logs`).
pub(super) async fn logs(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
    Query(query): Query<LogsQuery>,
) -> Json<Vec<String>> {
    let dir = state.running.data_dir().join("logs");
    let lines = query.lines.unwrap_or(200).clamp(1, 5000);
    Json(
        tokio::task::spawn_blocking(move || crate::diagnostics::recent_log_lines(&dir, lines))
            .await
            .unwrap_or_default(),
    )
}

/// The diagnostics bundle as a text download.
pub(super) async fn diagnostics(_: Authorized, State(state): State<Arc<ServerState>>) -> Response {
    let running = Arc::clone(&state.running);
    let text = tokio::task::spawn_blocking(move || {
        let logs = running.data_dir().join("logs");
        crate::diagnostics::bundle(&running, logs.is_dir().then_some(logs.as_path()))
    })
    .await;
    match text {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"hearth-diagnostics.txt\"",
                ),
            ],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
