//! Plain-text answers of the receivers whose protocols have no error body
//! (Zipkin, Jaeger thrift over HTTP): 202 on success, otherwise a status, a
//! text message naming what was wrong and, under backpressure, `Retry-After`.
//! Neither protocol has partial success, so spans rejected individually
//! make the answer a 400 that counts them; the others are stored.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::body::BodyError;
use crate::ingest::{Accepted, Ingest, IngestError};

/// Why a request was refused (or partly refused).
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    /// Metric label.
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) retry_after: Option<u64>,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            status,
            reason,
            message,
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(reason: &'static str, message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }
}

impl From<IngestError> for Failure {
    fn from(e: IngestError) -> Self {
        if let IngestError::Invalid { reason, message } = e {
            return Self::bad_request(reason, message);
        }
        let (status, retry_after) = e.http_status();
        Self {
            status,
            reason: e.reason(),
            message: e.to_string(),
            retry_after,
        }
    }
}

impl From<BodyError> for Failure {
    fn from(e: BodyError) -> Self {
        Self::new(e.status(), e.reason(), e.message().to_string())
    }
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// The answer to a request: 202, or the failure (counted as a request error
/// of `protocol`).
pub(crate) fn respond(
    ingest: &Ingest,
    protocol: &'static str,
    outcome: Result<(), Failure>,
) -> Response {
    match outcome {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(f) => {
            ingest.count_error(protocol, f.reason);
            tracing::debug!(status = %f.status, message = %f.message, protocol, "request refused");
            let mut response = text(f.status, f.message);
            if let Some(secs) = f.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
    }
}

/// A 405 with a hint.
pub(crate) fn method_not_allowed(hint: &str) -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, hint.to_string())
}

/// The request's media type, lower case, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A 400 when some spans were rejected individually.
pub(crate) fn all_accepted(accepted: &Accepted) -> Result<(), Failure> {
    if accepted.rejections.count == 0 {
        return Ok(());
    }
    Err(Failure::bad_request(
        "rejected_spans",
        format!(
            "{} spans stored, {} rejected: {}",
            accepted.spans,
            accepted.rejections.count,
            accepted.rejections.message()
        ),
    ))
}
