//! OTLP/JSON both ways: request bodies in ([`decode_request`]), and spans
//! out in the protobuf JSON mapping, in OTLP's and Tempo's dialects
//! ([`traces_data_in`]).

mod decode;
mod encode;
mod into_arrow;

pub use decode::{Error, decode_request};
pub use encode::{Style, encode_response, span, traces_data, traces_data_in};
pub use into_arrow::decode_into;
