//! OTLP requests built by hand, for tests that need exact control.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

pub(crate) fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

/// A span's parent id for a test's numbered spans: 0 is none.
pub(crate) fn parent_id(parent: u64) -> Vec<u8> {
    if parent == 0 {
        Vec::new()
    } else {
        parent.to_be_bytes().to_vec()
    }
}

/// A server span with id `span_id` in trace `trace`, starting now.
pub(crate) fn span(trace: u128, span_id: u64) -> Span {
    let start = now_nanos();
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: span_id.to_be_bytes().to_vec(),
        name: format!("op-{}", span_id % 7),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        attributes: vec![kv("http.route", "/items/{id}")],
        ..Default::default()
    }
}

pub(crate) fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}
