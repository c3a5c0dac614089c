//! OTLP/gRPC receiver (default port 4317), served by tonic on axum.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use tracelake_protocols::otlp_proto;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

use crate::ingest::{Ingest, IngestError};

const PROTOCOL: &str = "otlp_grpc";
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `TraceService` served by hand rather than by the generated server: the
/// message reaches [`Ingest::export_with`] as bytes and is decoded there
/// straight into Arrow ([`otlp_proto`]) on the blocking pool, where the
/// generated server would decode it into prost structs on the runtime that
/// serves the listeners.
#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
    max_message_bytes: usize,
}

impl NamedService for Receiver {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> Service<http::Request<B>> for Receiver
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT {
            let status = Status::unimplemented(format!(
                "unknown method {}: this service has Export only",
                request.uri().path()
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let receiver = self.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(RawCodec)
                .max_decoding_message_size(receiver.max_message_bytes)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip);
            Ok(grpc.unary(Export(receiver.ingest), request).await)
        })
    }
}

struct Export(Arc<Ingest>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = Arc::clone(&self.0);
        Box::pin(async move {
            let body = request.into_inner();
            let capacity = body.len() / super::http::PROTOBUF_BYTES_PER_SPAN + 1;
            let accepted = ingest
                .export_with(PROTOCOL, capacity, move |sink| {
                    otlp_proto::decode_into(&body, sink).map_err(|e| IngestError::Invalid {
                        reason: "bad_protobuf",
                        message: format!(
                            "message is not a valid ExportTraceServiceRequest protobuf: {e}"
                        ),
                    })
                })
                .await;
            match accepted {
                Ok(accepted) => Ok(Response::new(super::response(&accepted))),
                Err(err) => Err(status(&err)),
            }
        })
    }
}

/// Requests as their bytes (decoded later, off the runtime); responses
/// encoded by prost.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Backpressure is `RESOURCE_EXHAUSTED` and unavailability (WAL failure,
/// shutdown) `UNAVAILABLE`, both with a RetryInfo: OTLP exporters retry
/// `RESOURCE_EXHAUSTED` only when it carries one, which tells them the
/// server will recover (unlike an oversize message).
fn status(err: &IngestError) -> Status {
    match err {
        IngestError::Invalid { message, .. } => return Status::invalid_argument(message.clone()),
        // A request that can never pass: no RetryInfo, so not retried.
        IngestError::Limited {
            retry_after: None,
            message,
            ..
        } => return Status::resource_exhausted(message.clone()),
        _ => {}
    }
    let (code, retry_after) = match err {
        IngestError::Overloaded { retry_after, .. }
        | IngestError::Limited {
            retry_after: Some(retry_after),
            ..
        } => (Code::ResourceExhausted, *retry_after),
        IngestError::Limited { .. } => unreachable!("answered above"),
        IngestError::Unavailable(_) | IngestError::Invalid { .. } => {
            (Code::Unavailable, std::time::Duration::from_secs(1))
        }
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
    let service = Receiver {
        ingest,
        max_message_bytes,
    };
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
/// from that limit); a frame tonic cannot decode is `INTERNAL`, a server
/// fault, where it is the client's bad input: `INVALID_ARGUMENT` (our raw
/// codec never fails, and a body that is not a request is refused by
/// [`otlp_proto`] with `INVALID_ARGUMENT` already; this stays as the guard
/// for tonic's own framing errors).
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
