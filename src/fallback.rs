//! Answers for requests a listener has no endpoint for: 404 for an unknown
//! path and 405 for a known path with another method, each naming what was
//! asked for and what the port does serve; unknown gRPC methods on the gRPC
//! ports are gRPC UNIMPLEMENTED with the same message.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// One listener: its name and what it serves, as a person would look it up.
#[derive(Clone, Copy)]
pub(crate) struct Port {
    pub(crate) name: &'static str,
    pub(crate) serves: &'static str,
    /// gRPC requests get gRPC answers.
    pub(crate) grpc: bool,
}

pub(crate) const OTLP_GRPC: Port = Port {
    name: "OTLP/gRPC",
    serves: "OTLP/gRPC traces are opentelemetry.proto.collector.trace.v1.TraceService/Export",
    grpc: true,
};
pub(crate) const OTLP_HTTP: Port = Port {
    name: "OTLP/HTTP",
    serves: "OTLP/HTTP traces are POST /v1/traces (protobuf or JSON)",
    grpc: false,
};
pub(crate) const HTTP: Port = Port {
    name: "query and UI",
    serves: "the web UI is GET /; the query API is under /api/v1 (e.g. GET /api/v1/traces/{id}, \
             GET /api/v1/search, POST /api/v1/sql; see docs/api.md); Jaeger's API is under \
             /jaeger/api, Tempo's under /tempo/api, Zipkin's under /zipkin/api/v2; \
             GET /health, /ready, /metrics",
    grpc: false,
};
pub(crate) const ZIPKIN: Port = Port {
    name: "Zipkin",
    serves: "Zipkin spans are POST /api/v2/spans (JSON or proto3) or POST /api/v1/spans (JSON); \
             the Zipkin query API is under GET /api/v2 (e.g. /api/v2/services, /api/v2/trace/{id})",
    grpc: false,
};
pub(crate) const JAEGER_HTTP: Port = Port {
    name: "Jaeger thrift over HTTP",
    serves: "Jaeger batches are POST /api/traces (application/x-thrift)",
    grpc: false,
};
pub(crate) const JAEGER_SAMPLING: Port = Port {
    name: "Jaeger remote sampling",
    serves: "sampling strategies are GET /sampling?service=<name>",
    grpc: false,
};
pub(crate) const FLIGHT_SQL: Port = Port {
    name: "Arrow Flight SQL",
    serves: "Arrow Flight SQL is the gRPC service arrow.flight.protocol.FlightService",
    grpc: true,
};

/// `router` with answers for what it does not serve.
pub(crate) fn with_fallbacks(router: Router, port: Port) -> Router {
    router
        .method_not_allowed_fallback(move |method: Method, uri: Uri| async move {
            let message = format!(
                "method {method} is not allowed for {}: {}",
                uri.path(),
                port.serves
            );
            (StatusCode::METHOD_NOT_ALLOWED, text(message)).into_response()
        })
        .fallback(
            move |method: Method, uri: Uri, headers: HeaderMap| async move {
                not_found(port, &method, &uri, &headers)
            },
        )
}

fn not_found(port: Port, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let is_grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if port.grpc && is_grpc {
        let status = tonic::Status::unimplemented(format!(
            "no such gRPC method {} on the {} port; {}",
            uri.path(),
            port.name,
            port.serves
        ));
        return status.into_http::<Body>();
    }
    let message = format!(
        "no such endpoint: {method} {} on the {} port; {}",
        uri.path(),
        port.name,
        port.serves
    );
    (StatusCode::NOT_FOUND, text(message)).into_response()
}

fn text(message: String) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
}
