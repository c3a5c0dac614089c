//! OTLP/gRPC receiver (default port 4317), served by tonic on axum.

use std::sync::Arc;

use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::ingest::{Ingest, IngestError};

const PROTOCOL: &str = "otlp_grpc";

struct Receiver {
    ingest: Arc<Ingest>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        match self.ingest.export(PROTOCOL, request).await {
            Ok(accepted) => Ok(Response::new(super::response(&accepted))),
            Err(err) => Err(status(&err)),
        }
    }
}

/// Backpressure is `RESOURCE_EXHAUSTED` and unavailability (WAL failure,
/// shutdown) `UNAVAILABLE`, both with a RetryInfo: OTLP exporters retry
/// `RESOURCE_EXHAUSTED` only when it carries one, which tells them the
/// server will recover (unlike an oversize message).
fn status(err: &IngestError) -> Status {
    let (code, retry_after) = match err {
        IngestError::Overloaded { retry_after, .. } => (Code::ResourceExhausted, *retry_after),
        IngestError::Unavailable(_) => (Code::Unavailable, std::time::Duration::from_secs(1)),
    };
    Status::with_error_details(
        code,
        err.to_string(),
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// The gRPC service as an axum router. Requests over `max_message_bytes`
/// (after decompression) fail with `RESOURCE_EXHAUSTED`, as OTLP requires.
pub fn router(ingest: Arc<Ingest>, max_message_bytes: usize) -> axum::Router {
    let service = TraceServiceServer::new(Receiver { ingest })
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    tonic::service::Routes::new(service)
        .into_axum_router()
        .layer(axum::middleware::map_response(
            oversize_is_resource_exhausted,
        ))
}

/// tonic's codec answers in ways OTLP exporters misread, fixed here:
/// a message over the decoding limit is `OUT_OF_RANGE`, which exporters
/// retry forever, and OTLP wants a non-retryable `RESOURCE_EXHAUSTED` (our
/// service never returns `OUT_OF_RANGE` itself, so every such status comes
/// from that limit); a message that does not decode is `INTERNAL`, a server
/// fault, where it is the client's bad input: `INVALID_ARGUMENT`.
async fn oversize_is_resource_exhausted(
    mut response: axum::response::Response,
) -> axum::response::Response {
    let headers = response.headers_mut();
    let status = headers.get("grpc-status").map(|v| v.as_bytes().to_vec());
    let undecodable = || {
        headers.get("grpc-message").is_some_and(|m| {
            let m = m.as_bytes();
            m.starts_with(b"failed to decode") || m.starts_with(b"failed%20to%20decode")
        })
    };
    let code = match status.as_deref() {
        Some(b"11") => Some(Code::ResourceExhausted),
        Some(b"13") if undecodable() => Some(Code::InvalidArgument),
        _ => None,
    };
    if let Some(code) = code {
        headers.insert("grpc-status", axum::http::HeaderValue::from(code as i32));
    }
    response
}
