//! The owner's controls: pause, resume, "Resume anyway", the game list and the settings.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::status::NodeStatus;
use crate::{ControlSource, NodeConfig};

use super::{Authorized, ServerState, off_thread};

pub(super) async fn status(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Json<NodeStatus> {
    Json(state.running.node().status())
}

/// Who asks, for the state's reason ("paused from the window"): `?from=window` from the UI,
/// else the command line.
#[derive(Deserialize)]
pub(super) struct FromQuery {
    from: Option<String>,
}

pub(super) fn control_source(from: Option<&str>) -> ControlSource {
    match from {
        Some("window") => ControlSource::Window,
        _ => ControlSource::Cli,
    }
}

#[derive(Deserialize)]
pub(super) struct PauseQuery {
    /// Pause this long, then resume by itself; absent (and no `seconds`): until resumed.
    minutes: Option<u32>,
    /// The same in seconds (the CLI's `--for 90s`).
    seconds: Option<u32>,
    from: Option<String>,
}

pub(super) async fn pause(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
    Query(query): Query<PauseQuery>,
) -> Result<Json<NodeStatus>, (StatusCode, String)> {
    let (node, source) = (state.running.node(), control_source(query.from.as_deref()));
    let seconds = match (query.minutes, query.seconds) {
        (Some(_), Some(_)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "give minutes or seconds, not both".into(),
            ));
        }
        (Some(minutes), None) => Some(u64::from(minutes) * 60),
        (None, seconds) => seconds.map(u64::from),
    };
    Ok(Json(match seconds {
        None => node.pause(source),
        Some(seconds) => node.pause_for(source, within_a_day(seconds, "pause")?),
    }))
}

/// An owner's timed choice (pause, resume anyway) of `seconds`: 1 second to 24 hours, else a
/// 400 that says so.
pub(super) fn within_a_day(
    seconds: u64,
    what: &str,
) -> Result<std::time::Duration, (StatusCode, String)> {
    match seconds {
        1..=86_400 => Ok(std::time::Duration::from_secs(seconds)),
        _ => Err((
            StatusCode::BAD_REQUEST,
            format!("{seconds} seconds: {what} for 1 second to 24 hours"),
        )),
    }
}

pub(super) async fn resume(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
    Query(from): Query<FromQuery>,
) -> Json<NodeStatus> {
    Json(
        state
            .running
            .node()
            .resume(control_source(from.from.as_deref())),
    )
}

#[derive(Deserialize)]
pub(super) struct AnywayQuery {
    /// Work through the pause this long; absent: until its reason ends.
    seconds: Option<u32>,
    from: Option<String>,
}

pub(super) async fn resume_anyway(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
    Query(query): Query<AnywayQuery>,
) -> Result<Json<NodeStatus>, (StatusCode, String)> {
    let until_ms = match query.seconds {
        None => None,
        Some(seconds) => {
            let lasting = within_a_day(u64::from(seconds), "resume")?;
            Some(hearth_protocol::now_unix_ms().saturating_add(lasting.as_millis() as u64))
        }
    };
    state
        .running
        .node()
        .resume_anyway(control_source(query.from.as_deref()), until_ms)
        .map(Json)
        .map_err(|refused| (StatusCode::CONFLICT, refused.to_string()))
}

pub(super) async fn end_override(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Json<NodeStatus> {
    Json(state.running.node().end_override())
}

pub(super) async fn games(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Result<Json<crate::views::GamesView>, (StatusCode, String)> {
    off_thread(&state.running, |running| {
        Ok::<_, std::convert::Infallible>(running.games_view())
    })
    .await
}

pub(super) async fn settings(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Json<NodeConfig> {
    Json(state.running.settings())
}

/// Save settings; a bad value is a 422 naming the setting (`key: reason`).
pub(super) async fn save_settings(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
    Json(settings): Json<NodeConfig>,
) -> Result<Json<NodeConfig>, (StatusCode, String)> {
    state
        .running
        .save_settings(settings)
        .map(Json)
        .map_err(|e| {
            // A setting that is wrong is the caller's to fix; a file that cannot be written
            // (a full or failing disk) is not.
            let status = match e {
                crate::config::ConfigError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                crate::config::ConfigError::File { .. } => StatusCode::INSUFFICIENT_STORAGE,
            };
            (status, e.to_string())
        })
}
