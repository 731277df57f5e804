//! The operator's admin API, on its own listener (loopback, [`PoolConfig::admin_bind`]), for
//! what `hearth-pool keys`, `usage` and `payouts` do while the pool serves (the store has one
//! process at a time). Every request carries the admin token the pool made at start.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::PoolState;
use crate::accounts::{CustomerKey, IssuedKey, NewKey};
use crate::error::ApiError;

/// Where a running pool's admin API is and the token it takes: the binary writes it beside
/// the database (`admin.json`, readable by the operator alone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEndpoint {
    pub url: String,
    pub token: String,
}

struct Admin {
    state: Arc<PoolState>,
    token: String,
}

fn check(admin: &Admin, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared as hashes, so the time taken says nothing about the token.
    if hearth_protocol::sha256_hex(given.as_bytes())
        == hearth_protocol::sha256_hex(admin.token.as_bytes())
    {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong admin token".into()))
    }
}

fn store_error(e: crate::StoreError) -> ApiError {
    match e {
        crate::StoreError::Invalid(message) => ApiError::invalid(message),
        crate::StoreError::NotFound(what) => ApiError::not_found(format!("no {what}")),
        other => ApiError::from(other),
    }
}

async fn list_keys(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<Json<Vec<CustomerKey>>, ApiError> {
    check(&admin, &headers)?;
    admin
        .state
        .accounts
        .list()
        .await
        .map(Json)
        .map_err(store_error)
}

async fn add_key(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Json(new): Json<NewKey>,
) -> Result<Json<IssuedKey>, ApiError> {
    check(&admin, &headers)?;
    admin
        .state
        .accounts
        .add(&new)
        .await
        .map(Json)
        .map_err(store_error)
}

async fn revoke_key(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CustomerKey>, ApiError> {
    check(&admin, &headers)?;
    admin
        .state
        .accounts
        .revoke(&id)
        .await
        .map(Json)
        .map_err(store_error)
}

async fn payouts(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check(&admin, &headers)?;
    let csv = crate::payout_csv(admin.state.store.as_ref(), admin.state.config.settlement_ms)
        .await
        .map_err(store_error)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/csv")], csv).into_response())
}

async fn usage(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, ApiError> {
    check(&admin, &headers)?;
    let csv = crate::accounts::usage_csv(admin.state.store.as_ref())
        .await
        .map_err(store_error)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/csv")], csv).into_response())
}

/// The admin routes over `state`, taking `token`.
pub(crate) fn router(state: Arc<PoolState>, token: String) -> Router {
    Router::new()
        .route("/admin/v1/keys", get(list_keys).post(add_key))
        .route("/admin/v1/keys/{id}/revoke", post(revoke_key))
        .route("/admin/v1/payouts", get(payouts))
        .route("/admin/v1/usage", get(usage))
        .fallback(|| async { ApiError::not_found("no such admin route".into()) })
        .with_state(Arc::new(Admin { state, token }))
}
