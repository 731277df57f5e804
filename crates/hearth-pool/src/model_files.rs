//! Models for nodes: `GET /node/v1/models` lists the manifests of the models the pool sells,
//! and `GET /node/v1/files/{sha256}` serves a file of one of them by its hash, with HTTP range
//! requests, so a node that lacks a model fetches it from its pool and resumes after a break.
//! Only registered nodes may ask (the request's MAC or signature over an empty body); the node
//! checks the size and hash of what it receives before it uses it.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hearth_inference::Manifest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::PoolState;
use crate::error::ApiError;

/// Bytes read from disk per piece of the reply.
const PIECE_BYTES: usize = 256 << 10;

/// Check that a request comes from a registered node (its MAC or signature, over no body).
/// Only its head is kept across the awaits (a body is not `Sync`).
async fn authenticate(state: &PoolState, request: Request) -> Result<Parts, ApiError> {
    let (parts, _) = request.into_parts();
    let mut caller = state.nodes.check_headers(&parts.headers).await?;
    state
        .nodes
        .verify_body(&mut caller, &parts.method, parts.uri.path(), &[])
        .await?;
    Ok(parts)
}

/// `GET /node/v1/models`: the manifests of the models this pool sells.
pub(crate) async fn manifests(
    State(state): State<Arc<PoolState>>,
    request: Request,
) -> Result<Json<Vec<Manifest>>, ApiError> {
    authenticate(&state, request).await?;
    Ok(Json(state.meter.manifests().to_vec()))
}

/// The bytes a `Range` header asks of a file of `size` bytes: `bytes=START-`, `bytes=START-END`
/// or `bytes=-SUFFIX` (one range; several are answered with the whole file, as RFC 9110
/// allows). `Ok(None)`: the whole file. `Err(())`: a range that starts past the end (416).
fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let last = size.checked_sub(1);
    let range = match (start.parse::<u64>(), end.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => Some((start, end.min(last.unwrap_or(0)))),
        (Ok(start), Err(_)) if end.is_empty() => last.map(|last| (start, last)),
        (Err(_), Ok(suffix)) if start.is_empty() && suffix > 0 => {
            last.map(|last| (size.saturating_sub(suffix), last))
        }
        // Malformed: ignored, as a server may.
        _ => return Ok(None),
    };
    match range {
        Some((start, end)) if start < size && start <= end => Ok(Some((start, end))),
        _ => Err(()),
    }
}

/// `GET /node/v1/files/{sha256}`: a model file by its hash, whole (200) or the range asked
/// (206, `Content-Range`); 416 for a range past its end; 404 for a hash the pool does not
/// sell. `ETag` is the hash, so a node resuming can tell it is the same file.
pub(crate) async fn file(
    State(state): State<Arc<PoolState>>,
    Path(sha256): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let request = authenticate(&state, request).await?;
    let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ApiError::invalid_param(
            "sha256",
            "a file is named by its sha256: 64 hexadecimal digits".to_owned(),
        ));
    }
    let sha256 = sha256.to_ascii_lowercase();
    let Some(served) = state.meter.file(&sha256) else {
        return Err(ApiError::not_found(format!(
            "this pool sells no model with a file {sha256}"
        )));
    };
    let size = served.size;
    let range = match requested_range(&request.headers, size) {
        Ok(range) => range,
        Err(()) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response());
        }
    };
    let mut file = tokio::fs::File::open(&served.path).await.map_err(|error| {
        tracing::error!(%error, path = %served.path.display(), "a model file the pool sells cannot be read");
        ApiError::unavailable("the pool cannot read this file now".into())
    })?;
    let on_disk = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if on_disk != size {
        tracing::error!(path = %served.path.display(), on_disk, size, "a model file the pool sells has the wrong size");
        return Err(ApiError::unavailable(
            "the pool's copy of this file is damaged".into(),
        ));
    }
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { end - start + 1 };
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::unavailable(format!("the pool cannot read this file now: {e}")))?;
    let pieces = futures_util::stream::unfold((file, length), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut piece = vec![0; PIECE_BYTES.min(usize::try_from(left).unwrap_or(PIECE_BYTES))];
        match file.read(&mut piece).await {
            // The file shrank under the pool: end the reply short; the node sees it.
            Ok(0) => None,
            Ok(read) => {
                piece.truncate(read);
                Some((
                    Ok(axum::body::Bytes::from(piece)),
                    (file, left - read as u64),
                ))
            }
            Err(error) => Some((Err(error), (file, 0))),
        }
    });
    let mut response = Response::new(Body::from_stream(pieces));
    let headers = response.headers_mut();
    let value = |text: String| HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, value(length.to_string()));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::ETAG, value(format!("\"{sha256}\"")));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            value(format!("bytes {start}-{end}/{size}")),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(range: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::RANGE,
            HeaderValue::from_str(range).unwrap_or(HeaderValue::from_static("")),
        );
        headers
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let size = 1000;
        assert_eq!(requested_range(&HeaderMap::new(), size), Ok(None));
        assert_eq!(
            requested_range(&asking("bytes=0-"), size),
            Ok(Some((0, 999)))
        );
        assert_eq!(
            requested_range(&asking("bytes=250-"), size),
            Ok(Some((250, 999)))
        );
        assert_eq!(
            requested_range(&asking("bytes=10-19"), size),
            Ok(Some((10, 19)))
        );
        // An end past the file is cut to the file.
        assert_eq!(
            requested_range(&asking("bytes=990-5000"), size),
            Ok(Some((990, 999)))
        );
        assert_eq!(
            requested_range(&asking("bytes=-100"), size),
            Ok(Some((900, 999)))
        );
        // Past the end: 416.
        assert_eq!(requested_range(&asking("bytes=1000-"), size), Err(()));
        assert_eq!(requested_range(&asking("bytes=5000-6000"), size), Err(()));
        // Several ranges, or nonsense: the whole file.
        assert_eq!(requested_range(&asking("bytes=0-1,5-9"), size), Ok(None));
        assert_eq!(requested_range(&asking("bytes=x-y"), size), Ok(None));
        assert_eq!(requested_range(&asking("items=0-9"), size), Ok(None));
        assert_eq!(requested_range(&asking("bytes=9-3"), size), Ok(None));
    }
}
