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
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use tracelake_protocols::zipkin;

use crate::body;
use crate::ingest::Ingest;
use crate::plain::{self, Failure};

const PROTOCOL: &str = "zipkin";

#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
    max_body_bytes: usize,
}

/// The `/api/v2/spans` and `/api/v1/spans` ingest routes.
pub fn router(ingest: Arc<Ingest>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/api/v2/spans",
            post(spans_v2).fallback(|| async {
                plain::method_not_allowed("use POST to send spans, GET to list span names")
            }),
        )
        .route(
            "/api/v1/spans",
            post(spans_v1)
                .fallback(|| async { plain::method_not_allowed("use POST to send v1 spans") }),
        )
        .with_state(Receiver {
            ingest,
            max_body_bytes,
        })
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Proto,
    V1Json,
}

async fn spans_v2(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let outcome = handle(&receiver, &headers, body, false).await;
    plain::respond(&receiver.ingest, PROTOCOL, outcome)
}

async fn spans_v1(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let outcome = handle(&receiver, &headers, body, true).await;
    plain::respond(&receiver.ingest, PROTOCOL, outcome)
}

async fn handle(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: Body,
    v1: bool,
) -> Result<(), Failure> {
    let unsupported = |message: String| {
        Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    };
    let format = match (plain::media_type(headers).as_str(), v1) {
        ("" | "application/json", false) => Format::Json,
        ("application/x-protobuf" | "application/protobuf", false) => Format::Proto,
        ("" | "application/json", true) => Format::V1Json,
        (other, true) => {
            return Err(unsupported(format!(
                "unsupported content type {other:?} for v1 spans: use application/json (v1 thrift is not supported)"
            )));
        }
        (other, false) => {
            return Err(unsupported(format!(
                "unsupported content type {other:?}: use application/json (Zipkin v2 JSON) or application/x-protobuf (proto3 ListOfSpans)"
            )));
        }
    };
    receiver.ingest.check_capacity(PROTOCOL)?;
    let raw = body::read(body, headers, receiver.max_body_bytes).await?;
    let request = tokio::task::spawn_blocking(move || match format {
        Format::Json => zipkin::from_json(&raw),
        Format::Proto => zipkin::from_proto(&raw),
        Format::V1Json => zipkin::from_v1_json(&raw),
    })
    .await
    .map_err(|e| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("decoding failed: {e}"),
        )
    })?
    .map_err(|e| Failure::bad_request("bad_request", e.to_string()))?;
    if request.resource_spans.is_empty() {
        return Ok(());
    }
    let accepted = receiver.ingest.export(PROTOCOL, request).await?;
    plain::all_accepted(&accepted)
}
