//! OTLP rendered as JSON the way protobuf's JSON mapping does it:
//! lowerCamelCase keys, 64-bit integers as strings, fields at their default
//! value omitted. Two dialects differ in ids and enums: [`Style::Otlp`] (OTLP/JSON
//! and Jaeger api_v3: hex ids, enums as numbers) and [`Style::Tempo`] (Tempo's
//! gogo jsonpb: base64 ids, enums as names).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value, json};

/// The JSON dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Hex ids, enums as numbers.
    Otlp,
    /// Base64 ids, enums as names (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`).
    Tempo,
}

/// `TracesData` (`{"resourceSpans": [...]}`) of `request`, OTLP style.
pub fn traces_data(request: &ExportTraceServiceRequest) -> Value {
    traces_data_in(request, Style::Otlp)
}

/// `TracesData` of `request` in `style`.
pub fn traces_data_in(request: &ExportTraceServiceRequest, style: Style) -> Value {
    let resource_spans: Vec<Value> = request
        .resource_spans
        .iter()
        .map(|rs| {
            let mut o = Map::new();
            o.insert(
                "resource".into(),
                resource(rs.resource.as_ref().unwrap_or(&Resource::default())),
            );
            let scope_spans: Vec<Value> = rs
                .scope_spans
                .iter()
                .map(|ss| {
                    let mut s = Map::new();
                    s.insert(
                        "scope".into(),
                        scope(
                            ss.scope
                                .as_ref()
                                .unwrap_or(&InstrumentationScope::default()),
                        ),
                    );
                    s.insert(
                        "spans".into(),
                        ss.spans.iter().map(|sp| span_in(sp, style)).collect(),
                    );
                    text(&mut s, "schemaUrl", &ss.schema_url);
                    Value::Object(s)
                })
                .collect();
            o.insert("scopeSpans".into(), Value::Array(scope_spans));
            text(&mut o, "schemaUrl", &rs.schema_url);
            Value::Object(o)
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

fn text(o: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        o.insert(key.into(), json!(value));
    }
}

fn number(o: &mut Map<String, Value>, key: &str, value: u64) {
    if value != 0 {
        o.insert(key.into(), json!(value));
    }
}

/// A `fixed64`/`uint64` field: a decimal string.
fn wide(o: &mut Map<String, Value>, key: &str, value: u64) {
    if value != 0 {
        o.insert(key.into(), json!(value.to_string()));
    }
}

fn id(o: &mut Map<String, Value>, key: &str, id: &[u8], style: Style) {
    if !id.is_empty() {
        let text = match style {
            Style::Otlp => hex::encode(id),
            Style::Tempo => BASE64.encode(id),
        };
        o.insert(key.into(), json!(text));
    }
}

fn enumeration(
    o: &mut Map<String, Value>,
    key: &str,
    value: i32,
    name: Option<&'static str>,
    style: Style,
) {
    if value == 0 {
        return;
    }
    let v = match (style, name) {
        (Style::Tempo, Some(name)) => json!(name),
        _ => json!(value),
    };
    o.insert(key.into(), v);
}

fn attributes(o: &mut Map<String, Value>, attrs: &[KeyValue]) {
    if !attrs.is_empty() {
        o.insert("attributes".into(), key_values(attrs));
    }
}

fn key_values(attrs: &[KeyValue]) -> Value {
    attrs
        .iter()
        .map(|kv| {
            let mut o = Map::new();
            text(&mut o, "key", &kv.key);
            o.insert("value".into(), any(kv.value.as_ref()));
            Value::Object(o)
        })
        .collect()
}

fn any(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(Any::StringValueStrindex(_)) => json!({}),
        Some(Any::StringValue(s)) => json!({ "stringValue": s }),
        Some(Any::BoolValue(b)) => json!({ "boolValue": b }),
        Some(Any::IntValue(i)) => json!({ "intValue": i.to_string() }),
        Some(Any::DoubleValue(d)) if d.is_finite() => json!({ "doubleValue": d }),
        Some(Any::DoubleValue(d)) => {
            json!({ "doubleValue": if d.is_nan() { "NaN" } else if *d > 0.0 { "Infinity" } else { "-Infinity" } })
        }
        Some(Any::BytesValue(b)) => json!({ "bytesValue": BASE64.encode(b) }),
        Some(Any::ArrayValue(a)) => {
            json!({ "arrayValue": { "values": a.values.iter().map(|v| any(Some(v))).collect::<Vec<_>>() } })
        }
        Some(Any::KvlistValue(kv)) => {
            json!({ "kvlistValue": { "values": key_values(&kv.values) } })
        }
    }
}

fn resource(r: &Resource) -> Value {
    let mut o = Map::new();
    attributes(&mut o, &r.attributes);
    number(
        &mut o,
        "droppedAttributesCount",
        r.dropped_attributes_count.into(),
    );
    Value::Object(o)
}

fn scope(s: &InstrumentationScope) -> Value {
    let mut o = Map::new();
    text(&mut o, "name", &s.name);
    text(&mut o, "version", &s.version);
    attributes(&mut o, &s.attributes);
    number(
        &mut o,
        "droppedAttributesCount",
        s.dropped_attributes_count.into(),
    );
    Value::Object(o)
}

/// One span, OTLP style.
pub fn span(s: &Span) -> Value {
    span_in(s, Style::Otlp)
}

fn span_in(s: &Span, style: Style) -> Value {
    let mut o = Map::new();
    id(&mut o, "traceId", &s.trace_id, style);
    id(&mut o, "spanId", &s.span_id, style);
    text(&mut o, "traceState", &s.trace_state);
    id(&mut o, "parentSpanId", &s.parent_span_id, style);
    number(&mut o, "flags", s.flags.into());
    text(&mut o, "name", &s.name);
    let kind = SpanKind::try_from(s.kind).ok().map(|k| k.as_str_name());
    enumeration(&mut o, "kind", s.kind, kind, style);
    wide(&mut o, "startTimeUnixNano", s.start_time_unix_nano);
    wide(&mut o, "endTimeUnixNano", s.end_time_unix_nano);
    attributes(&mut o, &s.attributes);
    number(
        &mut o,
        "droppedAttributesCount",
        s.dropped_attributes_count.into(),
    );
    if !s.events.is_empty() {
        let events: Vec<Value> = s
            .events
            .iter()
            .map(|e| {
                let mut eo = Map::new();
                wide(&mut eo, "timeUnixNano", e.time_unix_nano);
                text(&mut eo, "name", &e.name);
                attributes(&mut eo, &e.attributes);
                number(
                    &mut eo,
                    "droppedAttributesCount",
                    e.dropped_attributes_count.into(),
                );
                Value::Object(eo)
            })
            .collect();
        o.insert("events".into(), Value::Array(events));
    }
    number(&mut o, "droppedEventsCount", s.dropped_events_count.into());
    if !s.links.is_empty() {
        let links: Vec<Value> = s
            .links
            .iter()
            .map(|l| {
                let mut lo = Map::new();
                id(&mut lo, "traceId", &l.trace_id, style);
                id(&mut lo, "spanId", &l.span_id, style);
                text(&mut lo, "traceState", &l.trace_state);
                attributes(&mut lo, &l.attributes);
                number(
                    &mut lo,
                    "droppedAttributesCount",
                    l.dropped_attributes_count.into(),
                );
                number(&mut lo, "flags", l.flags.into());
                Value::Object(lo)
            })
            .collect();
        o.insert("links".into(), Value::Array(links));
    }
    number(&mut o, "droppedLinksCount", s.dropped_links_count.into());
    if let Some(status) = &s.status {
        let mut so = Map::new();
        text(&mut so, "message", &status.message);
        let code = StatusCode::try_from(status.code)
            .ok()
            .map(|c| c.as_str_name());
        enumeration(&mut so, "code", status.code, code, style);
        o.insert("status".into(), Value::Object(so));
    }
    Value::Object(o)
}

/// The OTLP/HTTP response body: `{}` for full success, else
/// `{"partialSuccess":{...}}` with `rejectedSpans` as a string (proto3 JSON
/// for int64).
pub fn encode_response(response: &ExportTraceServiceResponse) -> Vec<u8> {
    let value = match &response.partial_success {
        None => json!({}),
        Some(p) => json!({
            "partialSuccess": {
                "rejectedSpans": p.rejected_spans.to_string(),
                "errorMessage": p.error_message,
            }
        }),
    };
    serde_json::to_vec(&value).expect("response serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    #[test]
    fn defaults_are_omitted_and_ids_are_hex() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans: vec![Span {
                        trace_id: vec![0; 15].into_iter().chain([1]).collect(),
                        span_id: vec![0, 0, 0, 0, 0, 0, 0, 2],
                        name: "foobar".into(),
                        kind: 2,
                        status: Some(Status {
                            code: 2,
                            message: String::new(),
                        }),
                        attributes: vec![KeyValue {
                            key: "n".into(),
                            value: Some(AnyValue {
                                value: Some(Any::IntValue(1 << 60)),
                            }),
                            key_strindex: 0,
                        }],
                        start_time_unix_nano: 5,
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(
            traces_data(&request),
            json!({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": [{
                "traceId": "00000000000000000000000000000001", "spanId": "0000000000000002",
                "name": "foobar", "kind": 2, "startTimeUnixNano": "5",
                "attributes": [{"key": "n", "value": {"intValue": "1152921504606846976"}}],
                "status": {"code": 2}}]}]}]})
        );
        let tempo = traces_data_in(&request, Style::Tempo);
        let span = &tempo["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "AAAAAAAAAAAAAAAAAAAAAQ==");
        assert_eq!(span["kind"], "SPAN_KIND_SERVER");
        assert_eq!(span["status"], json!({"code": "STATUS_CODE_ERROR"}));
    }

    #[test]
    fn partial_success_counts_are_strings() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
        let body = encode_response(&ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "x".into(),
            }),
        });
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"partialSuccess":{"errorMessage":"x","rejectedSpans":"3"}}"#
        );
        let empty = encode_response(&ExportTraceServiceResponse {
            partial_success: None,
        });
        assert_eq!(empty, b"{}");
    }
}
