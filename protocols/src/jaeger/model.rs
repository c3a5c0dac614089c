//! Jaeger's protobuf model (`jaeger.api_v2`, `model.proto`): one `Span`
//! with its `Process`, as Jaeger's collector writes to Kafka
//! (`jaeger_proto`, and `jaeger_json`: the same message in protobuf's JSON
//! mapping, ids in base64). Decoded into the thrift model's shape, then
//! mapped to OTLP like every Jaeger span.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;
use serde_json::Value;

use super::thrift::{Batch, JaegerSpan, ThriftError};

#[derive(Clone, PartialEq, prost::Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    operation_name: String,
    #[prost(message, repeated, tag = "4")]
    references: Vec<SpanRef>,
    #[prost(uint32, tag = "5")]
    flags: u32,
    #[prost(message, optional, tag = "6")]
    start_time: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "7")]
    duration: Option<prost_types::Duration>,
    #[prost(message, repeated, tag = "8")]
    tags: Vec<Tag>,
    #[prost(message, repeated, tag = "9")]
    logs: Vec<Log>,
    #[prost(message, optional, tag = "10")]
    process: Option<Process>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SpanRef {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    /// CHILD_OF = 0, FOLLOWS_FROM = 1.
    #[prost(int32, tag = "3")]
    ref_type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Tag {
    #[prost(string, tag = "1")]
    key: String,
    /// STRING = 0, BOOL = 1, INT64 = 2, FLOAT64 = 3, BINARY = 4.
    #[prost(int32, tag = "2")]
    v_type: i32,
    #[prost(string, tag = "3")]
    v_str: String,
    #[prost(bool, tag = "4")]
    v_bool: bool,
    #[prost(int64, tag = "5")]
    v_int64: i64,
    #[prost(double, tag = "6")]
    v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    v_binary: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Log {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<prost_types::Timestamp>,
    #[prost(message, repeated, tag = "2")]
    fields: Vec<Tag>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Process {
    #[prost(string, tag = "1")]
    service_name: String,
    #[prost(message, repeated, tag = "2")]
    tags: Vec<Tag>,
}

/// One protobuf `jaeger.api_v2.Span` (with its process) as OTLP.
pub fn from_model_proto(message: &[u8]) -> Result<ExportTraceServiceRequest, ThriftError> {
    let span = Span::decode(message)
        .map_err(|e| ThriftError::new(format!("not a jaeger.api_v2.Span: {e}")))?;
    Ok(super::decode::to_otlp(batch(span)?))
}

/// One `jaeger.api_v2.Span` in protobuf's JSON mapping as OTLP.
pub fn from_model_json(message: &[u8]) -> Result<ExportTraceServiceRequest, ThriftError> {
    let value: Value =
        serde_json::from_slice(message).map_err(|e| ThriftError::new(format!("not JSON: {e}")))?;
    Ok(super::decode::to_otlp(batch(span_from_json(&value)?)?))
}

fn batch(span: Span) -> Result<Batch, ThriftError> {
    let process = span.process.unwrap_or_default();
    let (trace_high, trace_low) = trace_halves(&span.trace_id, "traceId")?;
    let references = span
        .references
        .iter()
        .map(|r| {
            let (high, low) = trace_halves(&r.trace_id, "references.traceId")?;
            Ok((
                r.ref_type,
                low,
                high,
                span_half(&r.span_id, "references.spanId")?,
            ))
        })
        .collect::<Result<_, ThriftError>>()?;
    Ok(Batch {
        service: process.service_name,
        process_tags: process.tags.into_iter().map(tag).collect(),
        spans: vec![JaegerSpan {
            trace_low,
            trace_high,
            span_id: span_half(&span.span_id, "spanId")?,
            parent_id: 0,
            name: span.operation_name,
            references,
            start: micros(span.start_time.as_ref()),
            duration: span.duration.map_or(0, |d| {
                d.seconds
                    .saturating_mul(1_000_000)
                    .saturating_add(i64::from(d.nanos / 1000))
            }),
            tags: span.tags.into_iter().map(tag).collect(),
            logs: span
                .logs
                .into_iter()
                .map(|l| {
                    (
                        micros(l.timestamp.as_ref()),
                        l.fields.into_iter().map(tag).collect(),
                    )
                })
                .collect(),
        }],
    })
}

/// Microseconds since the epoch (saturating: the fields come from the
/// wire).
fn micros(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos / 1000))
    })
}

/// A 16-byte trace id as (high, low).
fn trace_halves(id: &[u8], what: &str) -> Result<(i64, i64), ThriftError> {
    let id: [u8; 16] = id
        .try_into()
        .map_err(|_| ThriftError::new(format!("{what} has {} bytes, not 16", id.len())))?;
    Ok((
        i64::from_be_bytes(id[..8].try_into().expect("8 bytes")),
        i64::from_be_bytes(id[8..].try_into().expect("8 bytes")),
    ))
}

fn span_half(id: &[u8], what: &str) -> Result<i64, ThriftError> {
    let id: [u8; 8] = id
        .try_into()
        .map_err(|_| ThriftError::new(format!("{what} has {} bytes, not 8", id.len())))?;
    Ok(i64::from_be_bytes(id))
}

fn tag(t: Tag) -> KeyValue {
    let value = match t.v_type {
        1 => Any::BoolValue(t.v_bool),
        2 => Any::IntValue(t.v_int64),
        3 => Any::DoubleValue(t.v_float64),
        4 => Any::StringValue(BASE64.encode(&t.v_binary)),
        _ => Any::StringValue(t.v_str),
    };
    KeyValue {
        key: t.key,
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

// ---- protobuf's JSON mapping ----

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|v| !v.is_null())
}

fn string(v: &Value, name: &str) -> Result<String, ThriftError> {
    match field(v, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ThriftError::new(format!("{name} is {other}, not a string"))),
    }
}

fn bytes(v: &Value, name: &str) -> Result<Vec<u8>, ThriftError> {
    let text = string(v, name)?;
    BASE64
        .decode(text.as_bytes())
        .map_err(|e| ThriftError::new(format!("{name} is not base64: {e}")))
}

/// An int64 is a JSON string or number.
fn int64(v: &Value, name: &str) -> Result<i64, ThriftError> {
    match field(v, name) {
        None => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ThriftError::new(format!("{name} {s:?} is not an integer"))),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ThriftError::new(format!("{name} {n} is not an integer"))),
        Some(other) => Err(ThriftError::new(format!(
            "{name} is {other}, not an integer"
        ))),
    }
}

fn list<'a>(v: &'a Value, name: &str) -> Result<&'a [Value], ThriftError> {
    match field(v, name) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(ThriftError::new(format!("{name} is {other}, not a list"))),
    }
}

/// An RFC 3339 time.
fn timestamp(v: &Value, name: &str) -> Result<Option<prost_types::Timestamp>, ThriftError> {
    let text = string(v, name)?;
    if text.is_empty() {
        return Ok(None);
    }
    let t = chrono::DateTime::parse_from_rfc3339(&text)
        .map_err(|e| ThriftError::new(format!("{name} {text:?} is not an RFC 3339 time: {e}")))?;
    Ok(Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }))
}

/// A duration like `"0.001500s"`.
fn duration(v: &Value, name: &str) -> Result<Option<prost_types::Duration>, ThriftError> {
    let text = string(v, name)?;
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || ThriftError::new(format!("{name} {text:?} is not a duration like \"1.5s\""));
    let seconds = text.strip_suffix('s').ok_or_else(bad)?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let nanos: i32 = format!("{fraction:0<9}").parse().map_err(|_| bad())?;
    Ok(Some(prost_types::Duration {
        seconds: whole,
        nanos: if whole < 0 { -nanos } else { nanos },
    }))
}

fn tag_from_json(v: &Value) -> Result<Tag, ThriftError> {
    let v_type = match field(v, "vType") {
        None => 0,
        Some(Value::Number(n)) => n.as_i64().unwrap_or(-1) as i32,
        Some(Value::String(s)) => match s.as_str() {
            "STRING" => 0,
            "BOOL" => 1,
            "INT64" => 2,
            "FLOAT64" => 3,
            "BINARY" => 4,
            other => return Err(ThriftError::new(format!("unknown vType {other:?}"))),
        },
        Some(other) => return Err(ThriftError::new(format!("vType is {other}"))),
    };
    let v_float64 = match field(v, "vFloat64") {
        None => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or_default(),
        Some(Value::String(s)) => match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            s => s
                .parse()
                .map_err(|_| ThriftError::new(format!("vFloat64 {s:?} is not a number")))?,
        },
        Some(other) => return Err(ThriftError::new(format!("vFloat64 is {other}"))),
    };
    Ok(Tag {
        key: string(v, "key")?,
        v_type,
        v_str: string(v, "vStr")?,
        v_bool: field(v, "vBool").and_then(Value::as_bool).unwrap_or(false),
        v_int64: int64(v, "vInt64")?,
        v_float64,
        v_binary: bytes(v, "vBinary")?,
    })
}

fn tags_from_json(v: &Value, name: &str) -> Result<Vec<Tag>, ThriftError> {
    list(v, name)?.iter().map(tag_from_json).collect()
}

fn span_from_json(v: &Value) -> Result<Span, ThriftError> {
    if !v.is_object() {
        return Err(ThriftError::new("a Jaeger span is a JSON object"));
    }
    let process = match field(v, "process") {
        None => None,
        Some(p) => Some(Process {
            service_name: string(p, "serviceName")?,
            tags: tags_from_json(p, "tags")?,
        }),
    };
    Ok(Span {
        trace_id: bytes(v, "traceId")?,
        span_id: bytes(v, "spanId")?,
        operation_name: string(v, "operationName")?,
        references: list(v, "references")?
            .iter()
            .map(|r| {
                Ok(SpanRef {
                    trace_id: bytes(r, "traceId")?,
                    span_id: bytes(r, "spanId")?,
                    ref_type: match field(r, "refType") {
                        None => 0,
                        Some(Value::String(s)) if s == "CHILD_OF" => 0,
                        Some(Value::String(s)) if s == "FOLLOWS_FROM" => 1,
                        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) as i32,
                        Some(other) => {
                            return Err(ThriftError::new(format!("unknown refType {other}")));
                        }
                    },
                })
            })
            .collect::<Result<_, ThriftError>>()?,
        flags: int64(v, "flags")? as u32,
        start_time: timestamp(v, "startTime")?,
        duration: duration(v, "duration")?,
        tags: tags_from_json(v, "tags")?,
        logs: list(v, "logs")?
            .iter()
            .map(|l| {
                Ok(Log {
                    timestamp: timestamp(l, "timestamp")?,
                    fields: tags_from_json(l, "fields")?,
                })
            })
            .collect::<Result<_, ThriftError>>()?,
        process,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Span {
        Span {
            trace_id: (1..=16).collect(),
            span_id: vec![0, 0, 0, 0, 0, 0, 0, 7],
            operation_name: "charge".into(),
            references: vec![SpanRef {
                trace_id: (1..=16).collect(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 3],
                ref_type: 0,
            }],
            flags: 1,
            start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000,
            }),
            duration: Some(prost_types::Duration {
                seconds: 0,
                nanos: 1_500_000,
            }),
            tags: vec![
                Tag {
                    key: "span.kind".into(),
                    v_str: "client".into(),
                    ..Default::default()
                },
                Tag {
                    key: "http.status_code".into(),
                    v_type: 2,
                    v_int64: 503,
                    ..Default::default()
                },
            ],
            logs: vec![],
            process: Some(Process {
                service_name: "payments".into(),
                tags: vec![Tag {
                    key: "hostname".into(),
                    v_str: "h1".into(),
                    ..Default::default()
                }],
            }),
        }
    }

    fn check(request: &ExportTraceServiceRequest) {
        let rs = &request.resource_spans[0];
        let service = rs.resource.as_ref().unwrap().attributes[0].clone();
        assert_eq!(service.key, "service.name");
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(span.span_id, vec![0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(span.parent_span_id, vec![0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(span.name, "charge");
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_250_000_000);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            1_500_000
        );
        assert_eq!(span.kind, 3, "client");
        assert_eq!(span.status.as_ref().unwrap().code, 2, "a 503 is an error");
        assert!(span.attributes.iter().any(|kv| kv.key == "http.status_code"
            && kv.value.as_ref().unwrap().value == Some(Any::IntValue(503))));
    }

    #[test]
    fn a_protobuf_span_maps_like_a_thrift_span() {
        check(&from_model_proto(&sample().encode_to_vec()).unwrap());
    }

    #[test]
    fn a_json_span_maps_like_the_protobuf_one() {
        let json = serde_json::json!({
            "traceId": BASE64.encode((1..=16).collect::<Vec<u8>>()),
            "spanId": BASE64.encode([0, 0, 0, 0, 0, 0, 0, 7]),
            "operationName": "charge",
            "references": [{"traceId": BASE64.encode((1..=16).collect::<Vec<u8>>()),
                            "spanId": BASE64.encode([0, 0, 0, 0, 0, 0, 0, 3])}],
            "flags": 1,
            "startTime": "2023-11-14T22:13:20.250Z",
            "duration": "0.001500s",
            "tags": [{"key": "span.kind", "vStr": "client"},
                     {"key": "http.status_code", "vType": "INT64", "vInt64": "503"}],
            "process": {"serviceName": "payments", "tags": [{"key": "hostname", "vStr": "h1"}]}
        });
        check(&from_model_json(json.to_string().as_bytes()).unwrap());
    }

    #[test]
    fn times_at_the_ends_of_the_range_saturate() {
        // Found by the jaeger_model fuzz target: seconds near i64::MAX with
        // positive nanos overflowed the sum.
        let mut span = sample();
        span.start_time = Some(prost_types::Timestamp {
            seconds: i64::MAX / 1_000_000,
            nanos: 999_999_999,
        });
        span.duration = Some(prost_types::Duration {
            seconds: i64::MAX,
            nanos: 999_999_999,
        });
        assert!(from_model_proto(&span.encode_to_vec()).is_ok());
        span.start_time = Some(prost_types::Timestamp {
            seconds: i64::MIN,
            nanos: -999_999_999,
        });
        assert!(from_model_proto(&span.encode_to_vec()).is_ok());
    }

    #[test]
    fn bad_spans_are_refused_with_what_is_wrong() {
        let mut short = sample();
        short.trace_id = vec![1, 2, 3];
        let e = from_model_proto(&short.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("traceId has 3 bytes"), "{e}");
        assert!(from_model_proto(b"\xff\xff").is_err());
        let e = from_model_json(br#"{"traceId": "%%%"}"#).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        let e = from_model_json(br#"{"duration": "fast"}"#).unwrap_err();
        assert!(e.to_string().contains("duration"), "{e}");
        assert!(from_model_json(b"[]").is_err());
    }
}
