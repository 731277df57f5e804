//! The headless server: the same web UI the desktop window shows, a JSON API and server-sent
//! events, on 127.0.0.1 only, behind a bearer token (saved in the data folder, mode 0600).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/overview` | status, pool, earnings, recent jobs, telemetry in one answer |
//! | `GET /api/status`, `POST /api/pause[?minutes=N or seconds=N]`, `POST /api/resume` (`&from=window` from the UI) | the node's state |
//! | `POST /api/resume-anyway[?seconds=N]`, `DELETE /api/resume-anyway` | work through an automatic pause (until its reason ends, or N seconds); let it apply again |
//! | `GET /api/telemetry?minutes=N` | resource use over the last N minutes (1..=10080), at most 240 averaged points |
//! | `GET /api/games` | the built-in game list with the owner's switches, their own games, games seen lately |
//! | `GET /api/jobs?limit=N` | newest jobs first |
//! | `GET /api/earnings`, `GET /api/pool` | totals, the pool connection |
//! | `GET /api/events?token=…` | every [`NodeEvent`] as JSON, server-sent |
//! | `GET /api/ledger/verify`, `GET /api/ledger/export` | chain check, CSV |
//! | `POST /api/ledger/export/save`, `POST /api/diagnostics/save` | the CSV or the diagnostics bundle written to the Downloads folder; its path |
//! | anything else | files of the built UI (`ui/dist`) |
//!
//! Browsers' `EventSource` cannot send headers, so the token may also come as `?token=`.
//! The desktop window (`hearth-app`) shows the UI it carries and calls this API across
//! origins: its origins, and only those, are allowed by CORS (the token is still required).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::status::Overview;
use crate::{NodeEvent, RunningNode};

pub use hearth_instance::{SERVER_FILE, ServerInfo, TOKEN_FILE};

mod control;
mod records;

use control::{end_override, games, pause, resume, resume_anyway, save_settings, settings, status};
pub use records::{VerifyError, verify_ledger};
use records::{
    benchmark, diagnostics, earnings, earnings_report, export, hardware, job_page, jobs, logs,
    open_new_version, pool, save_diagnostics, save_export, telemetry_history, verify,
};

/// The result of `ledger verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub receipts: u64,
    pub micro_credits: u64,
}

/// Load the API token from `data_dir`, or create one (mode 0600).
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= 32 => return Ok(token.trim().to_owned()),
        Ok(_) => {
            // Too short to be ours: replace it.
            std::fs::remove_file(&path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hearth_instance::write_private(&path, token.as_bytes())?;
    Ok(token)
}

struct ServerState {
    running: Arc<RunningNode>,
    token: String,
    ui_dir: Option<PathBuf>,
}

/// Proof that the request carried the token.
struct Authorized;

impl FromRequestParts<Arc<ServerState>> for Authorized {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ServerState>,
    ) -> Result<Self, Self::Rejection> {
        let from_header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let from_query = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
        match from_header.or(from_query) {
            Some(token) if same_secret(token.as_bytes(), state.token.as_bytes()) => Ok(Authorized),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                "missing or wrong token (see the api-token file in Hearth's data folder)",
            )),
        }
    }
}

/// Compare without an early exit, so timing says nothing about the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serve `running` on 127.0.0.1:`port` (0: a free port) with `token`, and the UI from `ui_dir`.
pub async fn serve(
    running: Arc<RunningNode>,
    port: u16,
    token: String,
    ui_dir: Option<PathBuf>,
) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(ServerState {
        running,
        token,
        ui_dir,
    });
    let app = Router::new()
        .route("/api/overview", get(overview))
        .route("/api/status", get(status))
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .route(
            "/api/resume-anyway",
            post(resume_anyway).delete(end_override),
        )
        .route("/api/telemetry", get(telemetry_history))
        .route("/api/games", get(games))
        .route("/api/jobs", get(jobs))
        .route("/api/earnings", get(earnings))
        .route("/api/pool", get(pool))
        .route("/api/new-version/open", post(open_new_version))
        .route("/api/events", get(events))
        .route("/api/ledger/verify", get(verify))
        .route("/api/ledger/export", get(export))
        .route("/api/ledger/export/save", post(save_export))
        .route("/api/diagnostics/save", post(save_diagnostics))
        .route("/api/earnings/report", get(earnings_report))
        .route("/api/jobs/page", post(job_page))
        .route("/api/settings", get(settings))
        .route("/api/settings", put(save_settings))
        .route("/api/hardware", get(hardware))
        .route("/api/hardware/benchmark", post(benchmark))
        .route("/api/logs", get(logs))
        .route("/api/diagnostics", get(diagnostics))
        .fallback(static_file)
        .layer(axum::middleware::from_fn(allow_desktop_window))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "headless server stopped");
        }
    });
    Ok(Server { addr, task })
}

/// The origins the desktop window's pages have (WebKitGTK and macOS; WebView2 on Windows).
const DESKTOP_ORIGINS: [&str; 3] = [
    "tauri://localhost",
    "http://tauri.localhost",
    "https://tauri.localhost",
];

/// CORS for the desktop window's origins: preflights answered here, answers marked readable.
/// Any other origin gets no CORS headers, so a web page elsewhere cannot read the API.
async fn allow_desktop_window(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .filter(|origin| {
            DESKTOP_ORIGINS
                .iter()
                .any(|allowed| origin.as_bytes() == allowed.as_bytes())
        })
        .cloned();
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let mut response = if request.method() == axum::http::Method::OPTIONS {
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        let headers = preflight.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        preflight
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    response
}

async fn overview(_: Authorized, State(state): State<Arc<ServerState>>) -> Json<Overview> {
    Json(state.running.overview())
}

async fn events(
    _: Authorized,
    State(state): State<Arc<ServerState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let node = state.running.node().clone();
    // First the current state, then every change.
    let first = NodeEvent::StatusChanged {
        status: node.status(),
    };
    let changes = BroadcastStream::new(node.subscribe()).map(move |event| {
        Ok::<_, Infallible>(match event {
            Ok(event) => event,
            // A slow reader missed events: the current state makes up for them.
            Err(_) => NodeEvent::StatusChanged {
                status: node.status(),
            },
        })
    });
    let stream =
        tokio_stream::once(Ok(first))
            .chain(changes)
            .map(|event: Result<NodeEvent, Infallible>| {
                let event = event.unwrap_or_else(|never| match never {});
                Ok(Event::default().data(serde_json::to_string(&event).unwrap_or_default()))
            });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A question answered off the async threads (it may read many ledger records, or measure).
async fn off_thread<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    running: &Arc<RunningNode>,
    ask: impl FnOnce(&RunningNode) -> Result<T, E> + Send + 'static,
) -> Result<Json<T>, (StatusCode, String)> {
    let running = Arc::clone(running);
    match tokio::task::spawn_blocking(move || ask(&running)).await {
        Ok(Ok(answer)) => Ok(Json(answer)),
        Ok(Err(e)) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Files of the built UI; `/` is `index.html`. Paths that climb out are refused.
async fn static_file(State(state): State<Arc<ServerState>>, uri: Uri) -> Response {
    let Some(root) = &state.ui_dir else {
        return (
            StatusCode::NOT_FOUND,
            "this node was started without its web UI (build it: cd ui && npm run build)",
        )
            .into_response();
    };
    let relative = uri.path().trim_start_matches('/');
    let relative = if relative.is_empty() {
        "index.html"
    } else {
        relative
    };
    let path = Path::new(relative);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match tokio::fs::read(root.join(path)).await {
        Ok(bytes) => {
            let kind = match path.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                Some("json") => "application/json",
                Some("woff2") => "font/woff2",
                Some("woff") => "font/woff",
                Some("ico") => "image/x-icon",
                _ => "application/octet-stream",
            };
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static(kind))],
                bytes,
            )
                .into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
