//! Zipkin receiver (default port 9411): `POST /api/v2/spans` with a JSON
//! list of v2 spans or a proto3 `ListOfSpans`, and `POST /api/v1/spans`
//! with a JSON list of v1 spans; optionally gzip/deflate/zstd compressed. Spans go through the same ingest path as OTLP (validation,
//! WAL, fsync before the answer).
//!
//! As the Zipkin server: 202 with an empty body on success (an empty body or
//! `[]` included); errors are plain text naming what was wrong: 400
//! undecodable or invalid spans, 413 too large, 415 unknown content type or
//! encoding, 429/503 with `Retry-After` under backpressure. Zipkin has no
//! partial success, so when some spans are rejected (e.g. outside the
//! accepted time window) the others are stored and the answer is 400 with
//! the count and reasons: nothing is dropped silently.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tracelake_schema::zipkin;

use crate::body;
use crate::ingest::{Ingest, IngestError};

const PROTOCOL: &str = "zipkin";

#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
    max_body_bytes: usize,
}

/// The `/api/v2/spans` ingest route.
pub fn router(ingest: Arc<Ingest>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/api/v2/spans",
            post(spans_v2).fallback(|| async {
                text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST to send spans, GET to list span names",
                )
            }),
        )
        .route(
            "/api/v1/spans",
            post(spans_v1).fallback(|| async {
                text(StatusCode::METHOD_NOT_ALLOWED, "use POST to send v1 spans")
            }),
        )
        .with_state(Receiver {
            ingest,
            max_body_bytes,
        })
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Proto,
    V1Json,
}

struct Failure {
    status: StatusCode,
    reason: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl Failure {
    fn into_response(self) -> Response {
        let mut response = text(self.status, self.message);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

async fn spans_v2(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    respond(&receiver, handle(&receiver, &headers, body, false).await)
}

async fn spans_v1(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    respond(&receiver, handle(&receiver, &headers, body, true).await)
}

fn respond(receiver: &Receiver, outcome: Result<(), Failure>) -> Response {
    match outcome {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(failure) => {
            receiver.ingest.count_error(PROTOCOL, failure.reason);
            tracing::debug!(status = %failure.status, message = %failure.message, "zipkin request refused");
            failure.into_response()
        }
    }
}

async fn handle(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: Body,
    v1: bool,
) -> Result<(), Failure> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match (media.as_str(), v1) {
        ("" | "application/json", false) => Format::Json,
        ("application/x-protobuf" | "application/protobuf", false) => Format::Proto,
        ("" | "application/json", true) => Format::V1Json,
        (other, true) => {
            return Err(Failure {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                reason: "unsupported_media_type",
                message: format!(
                    "unsupported content type {other:?} for v1 spans: use application/json (v1 thrift is not supported)"
                ),
                retry_after: None,
            });
        }
        (other, false) => {
            return Err(Failure {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                reason: "unsupported_media_type",
                message: format!(
                    "unsupported content type {other:?}: use application/json (Zipkin v2 JSON) or application/x-protobuf (proto3 ListOfSpans)"
                ),
                retry_after: None,
            });
        }
    };
    let overloaded = |e: IngestError| Failure {
        status: match e {
            IngestError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        },
        reason: e.reason(),
        retry_after: Some(match &e {
            IngestError::Overloaded { retry_after, .. } => retry_after.as_secs().max(1),
            IngestError::Unavailable(_) => 1,
        }),
        message: e.to_string(),
    };
    receiver
        .ingest
        .check_capacity(PROTOCOL)
        .map_err(overloaded)?;
    let raw = body::read(body, headers, receiver.max_body_bytes)
        .await
        .map_err(|e| Failure {
            status: e.status(),
            reason: e.reason(),
            message: e.message().to_string(),
            retry_after: None,
        })?;
    let request = tokio::task::spawn_blocking(move || match format {
        Format::Json => zipkin::from_json(&raw),
        Format::Proto => zipkin::from_proto(&raw),
        Format::V1Json => zipkin::from_v1_json(&raw),
    })
    .await
    .map_err(|e| Failure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        reason: "internal",
        message: format!("decoding failed: {e}"),
        retry_after: None,
    })?
    .map_err(|e| Failure {
        status: StatusCode::BAD_REQUEST,
        reason: "bad_request",
        message: e.to_string(),
        retry_after: None,
    })?;
    if request.resource_spans.is_empty() {
        return Ok(());
    }
    let accepted = receiver
        .ingest
        .export(PROTOCOL, request)
        .await
        .map_err(overloaded)?;
    if accepted.rejections.count > 0 {
        return Err(Failure {
            status: StatusCode::BAD_REQUEST,
            reason: "rejected_spans",
            message: format!(
                "{} spans stored, {} rejected: {}",
                accepted.spans,
                accepted.rejections.count,
                accepted.rejections.message()
            ),
            retry_after: None,
        });
    }
    Ok(())
}
