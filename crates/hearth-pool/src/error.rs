//! Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) with the HTTP
//! status OpenAI uses for each kind, for customers and nodes alike.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_protocol::{ErrorBody, ErrorDetail};

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds after which a retry may succeed (`Retry-After`), for 429 and 503.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            message,
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    /// 400: the request is malformed or asks for something impossible.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message.into(),
        )
    }

    /// 400 naming the offending parameter.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::invalid(message)
        }
    }

    /// 401.
    pub fn unauthorized(message: String) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    /// 401 for a customer key.
    pub fn bad_api_key() -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::unauthorized("Incorrect API key provided.".into())
        }
    }

    /// 403 for a node the pool no longer gives work to, with the reason.
    pub fn quarantined(reason: &str) -> Self {
        Self {
            code: Some("node_quarantined"),
            ..Self::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                format!("This node is quarantined: {reason}."),
            )
        }
    }

    /// 429: slow down; retry after `retry_after_s` seconds.
    pub fn rate_limited(message: String, retry_after_s: u64) -> Self {
        Self {
            code: Some("rate_limit_exceeded"),
            retry_after_s: Some(retry_after_s.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
    }

    /// 429 for a key that has used its quota (OpenAI's `insufficient_quota`).
    pub fn quota_exceeded(charged: u64, quota: u64) -> Self {
        Self {
            code: Some("insufficient_quota"),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                format!("You exceeded your quota: {charged} of {quota} micro-credits used."),
            )
        }
    }

    /// 503 that a client may retry after `retry_after_s` seconds (a full queue, a pool
    /// shutting down).
    pub fn overloaded(message: String, retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s.max(1)),
            ..Self::unavailable(message)
        }
    }

    /// 408: the body did not arrive in time.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "The request body did not arrive within {} s.",
                limit.as_secs()
            ),
        )
    }

    /// 405 for a route that exists with other methods.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "This method is not allowed on this route.".into(),
        )
    }

    /// 404.
    pub fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    /// 404 for a model the pool does not sell.
    pub fn unknown_model(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::not_found(format!("The model `{model}` does not exist."))
        }
    }

    /// 409: a lease that is not (or no longer) the caller's.
    pub fn conflict(message: String) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict_error", message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    }

    /// 422: a node's result that fails the checks.
    pub fn unprocessable(message: String) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            message,
        )
    }

    /// 500.
    pub fn internal(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// 503: no node could finish the work.
    pub fn unavailable(message: String) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    /// 504.
    pub fn timeout(message: String) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_owned(),
                param: self.param.clone(),
                code: self.code.map(str::to_owned),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<crate::StoreError> for ApiError {
    /// A database that is down or busy is 503 with a short `Retry-After`; anything else 500.
    fn from(error: crate::StoreError) -> Self {
        if error.is_transient() {
            Self::overloaded(error.to_string(), 1)
        } else {
            Self::internal(error.to_string())
        }
    }
}
