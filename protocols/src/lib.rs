//! What clients send and receive, decoded and encoded without I/O: the span
//! wire formats of the receivers and the compatibility APIs (OTLP/JSON,
//! Zipkin v1/v2 JSON and proto3, Jaeger thrift and Jaeger UI JSON), and the
//! query languages of the read APIs (the query-parameter grammar shared by
//! every API, and TraceQL).
//!
//! Sits beside `schema` at the edge of the data flow: receivers in
//! `collector` decode requests here into the OTLP model, which `schema`
//! writes into Arrow; the APIs in `query` parse their parameters and
//! queries here and render the rows `schema` reads back into each
//! protocol's JSON. Pure: no I/O, no async, so every decoder is a plain
//! function that the fuzz targets in `fuzz/` call directly.

mod direct;
pub mod duration;
pub mod jaeger;
pub mod otlp;
pub mod otlp_json;
pub mod otlp_proto;
pub mod params;
pub mod tempo;
pub mod traceql;
pub mod zipkin;

pub use direct::Sink;
pub use opentelemetry_proto;
