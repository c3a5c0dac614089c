//! OTLP/HTTP receiver (default port 4318): `POST /v1/traces` with a protobuf
//! or JSON body, optionally gzip/zstd/deflate compressed.
//!
//! The response's `Content-Type` mirrors the request's; errors carry a
//! `google.rpc.Status` encoded the same way, so every 2xx body decodes and
//! every error names what was wrong.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message as _;

use crate::body::{self, BodyError};
use crate::ingest::{Ingest, IngestError};
use tracelake_protocols::{Sink, otlp_json, otlp_proto};

const PROTOCOL: &str = "otlp_http";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
    max_body_bytes: usize,
}

/// Body encoding of a request, and so of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// Roughly the encoded size of a span, to size the builders before
    /// decoding (too small a guess makes them grow and copy as they fill).
    fn bytes_per_span(self) -> usize {
        match self {
            Self::Protobuf => PROTOBUF_BYTES_PER_SPAN,
            // Hex ids, quoted keys and 64-bit integers as strings: about
            // 2.5 times the protobuf.
            Self::Json => 2 * PROTOBUF_BYTES_PER_SPAN + PROTOBUF_BYTES_PER_SPAN / 2,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => PROTOBUF,
            Self::Json => JSON,
        }
    }
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// An error response: HTTP status, gRPC code for the body, message.
struct Failure {
    status: StatusCode,
    code: tonic::Code,
    message: String,
    reason: &'static str,
    retry_after: Option<u64>,
    /// Already counted in `request_errors` by the ingest path.
    counted: bool,
}

impl Failure {
    fn new(status: StatusCode, code: tonic::Code, reason: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
            reason,
            retry_after: None,
            counted: false,
        }
    }

    fn bad_request(reason: &'static str, message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            reason,
            message,
        )
    }

    fn into_response(self, encoding: Encoding) -> Response {
        let status = RpcStatus {
            code: self.code as i32,
            message: self.message,
        };
        let body = match encoding {
            Encoding::Protobuf => status.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(&serde_json::json!({
                "code": status.code,
                "message": status.message,
            }))
            .expect("status serializes"),
        };
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, encoding.content_type())],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<BodyError> for Failure {
    fn from(err: BodyError) -> Self {
        let code = match err {
            BodyError::TooLarge(_) => tonic::Code::ResourceExhausted,
            _ => tonic::Code::InvalidArgument,
        };
        Self::new(err.status(), code, err.reason(), err.message().to_string())
    }
}

impl From<IngestError> for Failure {
    fn from(err: IngestError) -> Self {
        if let IngestError::Invalid { reason, message } = err {
            return Self {
                counted: true,
                ..Self::bad_request(reason, message)
            };
        }
        let (status, retry_after) = err.http_status();
        Self {
            status,
            code: tonic::Code::Unavailable,
            message: err.to_string(),
            reason: err.reason(),
            retry_after,
            counted: true,
        }
    }
}

/// The HTTP receiver's router.
pub fn router(ingest: Arc<Ingest>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/v1/traces",
            post(export).fallback(|| async {
                Failure::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    tonic::Code::Unimplemented,
                    "method_not_allowed",
                    "only POST is supported on /v1/traces".into(),
                )
                .into_response(Encoding::Json)
            }),
        )
        .with_state(Receiver {
            ingest,
            max_body_bytes,
        })
}

async fn export(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let encoding = match content_type(&headers) {
        Ok(e) => e,
        Err(failure) => {
            receiver.ingest.count_error(PROTOCOL, failure.reason);
            return failure.into_response(Encoding::Json);
        }
    };
    match handle(&receiver, &headers, body, encoding).await {
        Ok(response) => response,
        Err(failure) => {
            if !failure.counted {
                receiver.ingest.count_error(PROTOCOL, failure.reason);
            }
            tracing::debug!(status = %failure.status, message = %failure.message, "otlp/http request refused");
            failure.into_response(encoding)
        }
    }
}

async fn handle(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<Response, Failure> {
    // `export` checks again; checking first spares reading and decoding a
    // body that would be refused anyway.
    receiver.ingest.check_capacity(PROTOCOL)?;
    let body = body::read(body, headers, receiver.max_body_bytes).await?;
    // Decoded on the blocking pool, straight into the Arrow builders.
    let capacity = body.len() / encoding.bytes_per_span() + 1;
    let accepted = receiver
        .ingest
        .export_with(PROTOCOL, capacity, move |sink| {
            decode(encoding, &body, sink)
        })
        .await?;
    let response = super::response(&accepted);
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => otlp_json::encode_response(&response),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response())
}

fn content_type(headers: &HeaderMap) -> Result<Encoding, Failure> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        PROTOBUF | "application/protobuf" => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            "unsupported_media_type",
            format!("unsupported content type {value:?}: use {PROTOBUF} or {JSON}"),
        )),
    }
}

/// Roughly the encoded size of a span in OTLP protobuf (instrumented
/// services: 300-500 bytes), to size the builders before decoding.
pub(super) const PROTOBUF_BYTES_PER_SPAN: usize = 400;

fn decode(encoding: Encoding, body: &[u8], sink: &mut Sink<'_>) -> Result<(), IngestError> {
    match encoding {
        Encoding::Protobuf => {
            otlp_proto::decode_into(body, sink).map_err(|e| IngestError::Invalid {
                reason: "bad_protobuf",
                message: format!("body is not a valid ExportTraceServiceRequest protobuf: {e}"),
            })
        }
        Encoding::Json => otlp_json::decode_into(body, sink).map_err(|e| IngestError::Invalid {
            reason: "bad_json",
            message: format!("body is not a valid OTLP/JSON ExportTraceServiceRequest: {e}"),
        }),
    }
}
