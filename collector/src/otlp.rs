//! OTLP trace receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces`.
//!
//! Both decode the request and hand it to [`crate::ingest::Ingest`]; they
//! differ only in how outcomes are spelled (see `../shared/protocols.md` §1):
//! - per-span rejections: success with `partial_success`;
//! - undecodable body: HTTP 400 / `INVALID_ARGUMENT`;
//! - body over the limit: HTTP 413 / `RESOURCE_EXHAUSTED` without RetryInfo;
//! - overload: HTTP 429 + `Retry-After` / `UNAVAILABLE` + RetryInfo;
//! - WAL failure or shutdown: HTTP 503 + `Retry-After` / `UNAVAILABLE`.

pub mod grpc;
pub mod http;

use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};

use crate::ingest::Accepted;

/// The OTLP response for an accepted request: `partial_success` only when
/// spans were rejected.
pub fn response(accepted: &Accepted) -> ExportTraceServiceResponse {
    let r = &accepted.rejections;
    ExportTraceServiceResponse {
        partial_success: (r.count > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: r.count as i64,
            error_message: r.message(),
        }),
    }
}
