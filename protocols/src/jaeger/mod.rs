//! Jaeger thrift (`jaeger.thrift` `Batch`) to OTLP, as the OpenTelemetry
//! Collector's jaeger translator maps it.
//!
//! Decodes the two wire encodings Jaeger clients use: TBinaryProtocol (HTTP
//! `POST /api/traces` bodies, UDP 6832) and TCompactProtocol (UDP 6831),
//! with the `Agent.emitBatch` message envelope on UDP. The reader is ours:
//! every length is checked against the bytes left, nesting is bounded, and
//! unknown fields are skipped, so hostile input is an error, never a large
//! allocation or a stack overflow.
//!
//! Mapping: process service name and tags become the resource (`hostname` ->
//! `host.name`); tags become typed attributes (binary as base64 text);
//! `span.kind` gives the kind; `error=true` (then `otel.status_code`, then an
//! HTTP status of 5xx, or 4xx on a client) gives the status, with
//! `otel.status_description` as its message; `w3c.tracestate` the trace
//! state; `otel.library.*` / `otel.scope.*` the scope; `parentSpanId` (or the
//! first CHILD_OF reference) the parent, other references links with
//! `opentracing.ref_type`; logs become events named by their `event` field.
//!
//! Jaeger's protobuf model (one `jaeger.api_v2.Span` with its process, in
//! protobuf or its JSON mapping: what Jaeger's collector writes to Kafka)
//! is read into the same shape and mapped the same way (`model`).

mod decode;
mod encode;
mod model;
pub mod sampling;
mod thrift;

pub use decode::{from_agent_message, from_batch};
pub use encode::{UiSpan, tag, ui_trace};
pub use model::{from_model_json, from_model_proto};
pub use thrift::{Protocol, ThriftError};

#[cfg(test)]
mod tests;
