//! Stored spans as Jaeger UI's JSON (`uimodel.Trace`): typed tags, one
//! process per service and resource, references, logs from events, and the
//! OTLP fields Jaeger has no place for as the tags the Collector uses
//! (`otel.scope.*`, `span.kind`, `otel.status_*`, `error`, `w3c.tracestate`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value, json};

use crate::otlp::{trace_id_hex, value_text};

/// One span of a trace as Jaeger shows it.
#[derive(Debug, Clone, Copy)]
pub struct UiSpan<'a> {
    pub span: &'a Span,
    pub resource: &'a Resource,
    pub scope: &'a InstrumentationScope,
    pub service: &'a str,
    /// The id to show: unique within the trace (Jaeger UI keys spans by
    /// id, so the SERVER half of a span shared by Zipkin client and server
    /// needs an id of its own).
    pub span_id: u64,
    /// The id (hex) of the parent to refer to as `CHILD_OF`, as shown.
    pub parent: Option<&'a str>,
}

/// A typed Jaeger tag.
pub fn tag(key: &str, value: Option<&AnyValue>) -> Value {
    const MAX_SAFE: i64 = (1 << 53) - 1;
    let (kind, value) = match value.and_then(|v| v.value.as_ref()) {
        None | Some(Any::StringValueStrindex(_)) => ("string", json!("")),
        Some(Any::StringValue(s)) => ("string", json!(s)),
        Some(Any::BoolValue(b)) => ("bool", json!(b)),
        Some(Any::IntValue(i)) if (-MAX_SAFE..=MAX_SAFE).contains(i) => ("int64", json!(i)),
        Some(Any::IntValue(i)) => ("int64", json!(i.to_string())),
        Some(Any::DoubleValue(d)) if d.is_finite() => ("float64", json!(d)),
        Some(Any::DoubleValue(d)) => ("float64", json!(d.to_string())),
        Some(Any::BytesValue(b)) => ("binary", json!(BASE64.encode(b))),
        Some(Any::ArrayValue(_) | Any::KvlistValue(_)) => ("string", json!(value_text(value))),
    };
    json!({ "key": key, "type": kind, "value": value })
}

fn string_tag(key: &str, value: &str) -> Value {
    json!({ "key": key, "type": "string", "value": value })
}

fn tags(attrs: &[KeyValue]) -> Vec<Value> {
    attrs
        .iter()
        .map(|kv| tag(&kv.key, kv.value.as_ref()))
        .collect()
}

/// One trace in Jaeger UI's JSON, its spans in the order given.
pub fn ui_trace<'a>(trace_id: &[u8], spans: impl IntoIterator<Item = UiSpan<'a>>) -> Value {
    let trace_hex = trace_id_hex(trace_id);
    let mut processes: Vec<(String, Vec<Value>)> = Vec::new();
    let mut out = Vec::new();
    for row in spans {
        let s = row.span;
        let process_tags: Vec<Value> = row
            .resource
            .attributes
            .iter()
            .filter(|kv| kv.key != "service.name")
            .map(|kv| tag(&kv.key, kv.value.as_ref()))
            .collect();
        let process = match processes
            .iter()
            .position(|(svc, t)| svc == row.service && *t == process_tags)
        {
            Some(p) => p,
            None => {
                processes.push((row.service.to_string(), process_tags));
                processes.len() - 1
            }
        };
        let mut references = Vec::new();
        if let Some(parent) = &row.parent {
            references.push(json!({
                "refType": "CHILD_OF", "traceID": trace_hex, "spanID": parent,
            }));
        }
        for l in &s.links {
            let child_of = l.attributes.iter().any(|kv| {
                kv.key == "opentracing.ref_type" && value_text(kv.value.as_ref()) == "child_of"
            });
            references.push(json!({
                "refType": if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" },
                "traceID": trace_id_hex(&l.trace_id),
                "spanID": hex::encode(&l.span_id),
            }));
        }
        let mut span_tags = Vec::new();
        if !row.scope.name.is_empty() {
            span_tags.push(string_tag("otel.scope.name", &row.scope.name));
        }
        if !row.scope.version.is_empty() {
            span_tags.push(string_tag("otel.scope.version", &row.scope.version));
        }
        span_tags.extend(tags(&s.attributes));
        match SpanKind::try_from(s.kind).unwrap_or_default() {
            SpanKind::Unspecified => {}
            kind => {
                let name = kind.as_str_name().trim_start_matches("SPAN_KIND_");
                span_tags.push(string_tag("span.kind", &name.to_ascii_lowercase()));
            }
        }
        let status = s.status.clone().unwrap_or_default();
        match StatusCode::try_from(status.code).unwrap_or_default() {
            StatusCode::Ok => span_tags.push(string_tag("otel.status_code", "OK")),
            StatusCode::Error => {
                span_tags.push(string_tag("otel.status_code", "ERROR"));
                span_tags.push(json!({ "key": "error", "type": "bool", "value": true }));
            }
            StatusCode::Unset => {}
        }
        if !status.message.is_empty() {
            span_tags.push(string_tag("otel.status_description", &status.message));
        }
        if !s.trace_state.is_empty() {
            span_tags.push(string_tag("w3c.tracestate", &s.trace_state));
        }
        let logs: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut fields = Vec::new();
                if !e.attributes.iter().any(|kv| kv.key == "event") {
                    fields.push(string_tag("event", &e.name));
                }
                fields.extend(tags(&e.attributes));
                json!({ "timestamp": e.time_unix_nano / 1000, "fields": fields })
            })
            .collect();
        let mut span = Map::new();
        span.insert("traceID".into(), json!(trace_hex));
        span.insert("spanID".into(), json!(format!("{:016x}", row.span_id)));
        if s.flags != 0 {
            span.insert("flags".into(), json!(s.flags));
        }
        span.insert("operationName".into(), json!(s.name));
        span.insert("references".into(), Value::Array(references));
        span.insert("startTime".into(), json!(s.start_time_unix_nano / 1000));
        span.insert(
            "duration".into(),
            json!(s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) / 1000),
        );
        span.insert("tags".into(), Value::Array(span_tags));
        span.insert("logs".into(), Value::Array(logs));
        span.insert("processID".into(), json!(format!("p{}", process + 1)));
        span.insert("warnings".into(), Value::Null);
        out.push(Value::Object(span));
    }
    let processes: Map<String, Value> = processes
        .into_iter()
        .enumerate()
        .map(|(i, (service, tags))| {
            (
                format!("p{}", i + 1),
                json!({ "serviceName": service, "tags": tags }),
            )
        })
        .collect();
    json!({
        "traceID": trace_hex,
        "spans": out,
        "processes": processes,
        "warnings": null,
    })
}
