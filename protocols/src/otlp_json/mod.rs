//! OTLP/JSON both ways: request bodies in ([`decode_request`]), and spans
//! out in the protobuf JSON mapping, in OTLP's and Tempo's dialects
//! ([`traces_data_in`]).

mod decode;
mod encode;
mod into_arrow;

pub use decode::{Error, decode_request};
pub use encode::{Style, encode_response, span, traces_data, traces_data_in};
pub use into_arrow::decode_into;

/// A snake_case key in the lowerCamelCase of the proto3 JSON mapping
/// (`trace_id` -> `traceId`), as the Collector accepts both.
pub fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
