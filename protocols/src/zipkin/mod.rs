//! Zipkin v2 spans (JSON and proto3) to OTLP, and stored spans back to
//! Zipkin v2 JSON.
//!
//! The Zipkin -> OTLP mapping is the OpenTelemetry Collector's zipkin
//! receiver's (`zipkinv2.ToTranslator`): one resource per local service
//! (plus the resource-type tags), tags as string attributes, annotations as
//! events, `otel.status_code` / `error` as the status, `otel.library.*` /
//! `otel.scope.*` as the scope, `w3c.tracestate` and `otlp.link.N` back to
//! their fields, endpoints as `net.host.*` / `net.peer.*` / `peer.service`.
//! Status spellings are accepted case-insensitively (`OK`, `Ok`,
//! `STATUS_CODE_OK`, ...), and an `error` tag means ERROR unless it is
//! `"false"`. Ids are hex (upper case tolerated), shorter ones left-padded;
//! a 64-bit trace id becomes 16 bytes with a zero high half.
//!
//! The reverse mapping ([`to_json`]) emits what the OpenTelemetry
//! specification's Zipkin exporter emits, in the forms the forward mapping
//! reads back, so Zipkin in -> Zipkin out is the identity for what Zipkin can
//! express.

mod decode;
mod encode;

use std::fmt;

pub use decode::{from_json, from_proto, from_v1_json};
pub use encode::to_json;

/// Zipkin's proto3 messages (`zipkin.proto`, package `zipkin.proto3`).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListOfSpans {
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub parent_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub id: Vec<u8>,
        /// 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
        #[prost(int32, tag = "4")]
        pub kind: i32,
        #[prost(string, tag = "5")]
        pub name: String,
        /// Start, epoch microseconds.
        #[prost(fixed64, tag = "6")]
        pub timestamp: u64,
        /// Microseconds.
        #[prost(uint64, tag = "7")]
        pub duration: u64,
        #[prost(message, optional, tag = "8")]
        pub local_endpoint: Option<Endpoint>,
        #[prost(message, optional, tag = "9")]
        pub remote_endpoint: Option<Endpoint>,
        #[prost(message, repeated, tag = "10")]
        pub annotations: Vec<Annotation>,
        #[prost(map = "string, string", tag = "11")]
        pub tags: std::collections::HashMap<String, String>,
        #[prost(bool, tag = "12")]
        pub debug: bool,
        #[prost(bool, tag = "13")]
        pub shared: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Endpoint {
        #[prost(string, tag = "1")]
        pub service_name: String,
        #[prost(bytes = "vec", tag = "2")]
        pub ipv4: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub ipv6: Vec<u8>,
        #[prost(int32, tag = "4")]
        pub port: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Annotation {
        #[prost(fixed64, tag = "1")]
        pub timestamp: u64,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// Why a Zipkin request could not be converted: names the span and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipkinError {
    /// Position of the span in the request.
    pub span: usize,
    pub message: String,
}

impl fmt::Display for ZipkinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "span {}: {}", self.span, self.message)
    }
}

impl std::error::Error for ZipkinError {}

#[cfg(test)]
mod tests;
