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

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

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

/// A v2 JSON span as sent; unknown fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    timestamp: Option<i64>,
    duration: Option<i64>,
    local_endpoint: Option<JsonEndpoint>,
    remote_endpoint: Option<JsonEndpoint>,
    annotations: Option<Vec<JsonAnnotation>>,
    tags: Option<Map<String, Value>>,
    /// A v1 field: its presence means the body is v1 JSON.
    binary_annotations: Option<IgnoredAny>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct JsonAnnotation {
    timestamp: Option<i64>,
    value: Option<String>,
}

/// A span in protocol-neutral form.
#[derive(Debug, Default)]
struct Normal {
    trace_id: Vec<u8>,
    id: Vec<u8>,
    parent_id: Vec<u8>,
    kind: SpanKind,
    name: String,
    /// µs; 0 when absent.
    timestamp: u64,
    duration: u64,
    local: Endpoint,
    remote: Endpoint,
    annotations: Vec<(u64, String)>,
    tags: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Endpoint {
    service: Option<String>,
    ip: Option<String>,
    port: Option<i64>,
}

/// Decodes a v2 JSON list of spans into an OTLP request.
pub fn from_json(body: &[u8]) -> Result<ExportTraceServiceRequest, ZipkinError> {
    let spans: Vec<JsonSpan> = json_list(body, "v2")?;
    let mut out = Vec::with_capacity(spans.len());
    for (i, s) in spans.into_iter().enumerate() {
        out.push(normal_json(s).map_err(|message| ZipkinError { span: i, message })?);
    }
    Ok(to_otlp(out))
}

/// The spans of a JSON list body (an empty body is an empty list); a single
/// object is refused, as by the Zipkin server.
fn json_list<T: serde::de::DeserializeOwned>(
    body: &[u8],
    version: &str,
) -> Result<Vec<T>, ZipkinError> {
    let whole = |message: String| ZipkinError { span: 0, message };
    let text = std::str::from_utf8(body)
        .map_err(|_| whole("body is not UTF-8 JSON".into()))?
        .trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if !text.starts_with('[') {
        return Err(whole(format!(
            "expected a JSON list of Zipkin {version} spans (a single object is not accepted)"
        )));
    }
    serde_json::from_str(text).map_err(|e| whole(format!("invalid Zipkin {version} JSON: {e}")))
}

/// Decodes a proto3 `ListOfSpans` into an OTLP request.
pub fn from_proto(body: &[u8]) -> Result<ExportTraceServiceRequest, ZipkinError> {
    let list = <proto::ListOfSpans as prost::Message>::decode(body).map_err(|e| ZipkinError {
        span: 0,
        message: format!("invalid Zipkin proto3 ListOfSpans: {e}"),
    })?;
    let mut out = Vec::with_capacity(list.spans.len());
    for (i, s) in list.spans.into_iter().enumerate() {
        out.push(normal_proto(s).map_err(|message| ZipkinError { span: i, message })?);
    }
    Ok(to_otlp(out))
}

/// Parses a hex id of up to `len` bytes, left-padding shorter ones.
fn hex_id(field: &str, text: &str, len: usize) -> Result<Vec<u8>, String> {
    let t = text.trim();
    if t.is_empty() || t.len() > len * 2 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{field} {text:?} is not hex of at most {} digits",
            len * 2
        ));
    }
    let padded = format!("{:0>width$}", t.to_ascii_lowercase(), width = len * 2);
    Ok(hex::decode(padded).expect("validated hex"))
}

/// (trace id, span id, parent id or empty).
type Ids = (Vec<u8>, Vec<u8>, Vec<u8>);

fn ids(
    trace_id: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    parent: Option<Vec<u8>>,
) -> Result<Ids, String> {
    let trace_id = trace_id.ok_or("traceId is required")?;
    let id = id.ok_or("id is required")?;
    if trace_id.iter().all(|&b| b == 0) {
        return Err("traceId is all zeros".into());
    }
    if id.iter().all(|&b| b == 0) {
        return Err("id is all zeros".into());
    }
    let parent = parent
        .filter(|p| p.iter().any(|&b| b != 0) && *p != id)
        .unwrap_or_default();
    Ok((trace_id, id, parent))
}

fn kind(name: &str) -> Result<SpanKind, String> {
    match name.to_ascii_uppercase().as_str() {
        "CLIENT" => Ok(SpanKind::Client),
        "SERVER" => Ok(SpanKind::Server),
        "PRODUCER" => Ok(SpanKind::Producer),
        "CONSUMER" => Ok(SpanKind::Consumer),
        other => Err(format!(
            "kind {other:?} is not one of CLIENT, SERVER, PRODUCER, CONSUMER"
        )),
    }
}

fn micros(field: &str, v: Option<i64>) -> Result<u64, String> {
    match v {
        None => Ok(0),
        Some(v) if v < 0 => Err(format!("{field} {v} is negative")),
        Some(v) => Ok(v as u64),
    }
}

fn normal_json(s: JsonSpan) -> Result<Normal, String> {
    if s.binary_annotations.is_some() {
        return Err(
            "binaryAnnotations is a Zipkin v1 field: POST v1 spans to /api/v1/spans".into(),
        );
    }
    let (trace_id, id, parent_id) = ids(
        s.trace_id
            .as_deref()
            .map(|t| hex_id("traceId", t, 16))
            .transpose()?,
        s.id.as_deref().map(|t| hex_id("id", t, 8)).transpose()?,
        s.parent_id
            .as_deref()
            .map(|t| hex_id("parentId", t, 8))
            .transpose()?,
    )?;
    let mut tags = Vec::new();
    for (k, v) in s.tags.unwrap_or_default() {
        let v = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => return Err(format!("tag {k:?} must be a string, got {other}")),
        };
        tags.push((k, v));
    }
    let mut annotations = Vec::new();
    for a in s.annotations.unwrap_or_default() {
        let (Some(t), Some(v)) = (a.timestamp, a.value) else {
            return Err("an annotation needs a timestamp and a value".into());
        };
        annotations.push((micros("annotation timestamp", Some(t))?, v));
    }
    Ok(Normal {
        trace_id,
        id,
        parent_id,
        kind: s.kind.as_deref().map(kind).transpose()?.unwrap_or_default(),
        name: s.name.unwrap_or_default(),
        timestamp: micros("timestamp", s.timestamp)?,
        duration: micros("duration", s.duration)?,
        local: json_endpoint(s.local_endpoint),
        remote: json_endpoint(s.remote_endpoint),
        annotations,
        tags,
    })
}

fn json_endpoint(e: Option<JsonEndpoint>) -> Endpoint {
    let e = e.unwrap_or_default();
    Endpoint {
        service: e.service_name.filter(|s| !s.is_empty()),
        ip: e.ipv4.or(e.ipv6).filter(|s| !s.is_empty()),
        port: e.port.filter(|&p| p != 0),
    }
}

/// A Zipkin v1 JSON span.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Span {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    timestamp: Option<i64>,
    duration: Option<i64>,
    #[serde(default)]
    annotations: Vec<V1Annotation>,
    #[serde(default)]
    binary_annotations: Vec<V1BinaryAnnotation>,
}

#[derive(Debug, Deserialize)]
struct V1Annotation {
    timestamp: Option<i64>,
    value: Option<String>,
    endpoint: Option<JsonEndpoint>,
}

#[derive(Debug, Deserialize)]
struct V1BinaryAnnotation {
    key: Option<String>,
    value: Option<Value>,
    endpoint: Option<JsonEndpoint>,
}

/// Decodes a Zipkin v1 JSON list (`POST /api/v1/spans`) into an OTLP
/// request, converting as Zipkin's `V1SpanConverter` does: `cs`/`cr` make a
/// CLIENT span, `sr`/`ss` a SERVER span (a v1 span with both becomes the
/// two halves sharing the id), `ms`/`mr` PRODUCER/CONSUMER; the core
/// annotations' endpoints are the local endpoints and give timestamps and
/// durations; `ca`/`sa`/`ma` address annotations are remote endpoints; `lc`
/// names a local span's service; other binary annotations are tags.
pub fn from_v1_json(body: &[u8]) -> Result<ExportTraceServiceRequest, ZipkinError> {
    let spans: Vec<V1Span> = json_list(body, "v1")?;
    let mut out = Vec::new();
    for (i, s) in spans.into_iter().enumerate() {
        out.extend(normal_v1(s).map_err(|message| ZipkinError { span: i, message })?);
    }
    Ok(to_otlp(out))
}

fn normal_v1(s: V1Span) -> Result<Vec<Normal>, String> {
    let (trace_id, id, parent_id) = ids(
        s.trace_id
            .as_deref()
            .map(|t| hex_id("traceId", t, 16))
            .transpose()?,
        s.id.as_deref().map(|t| hex_id("id", t, 8)).transpose()?,
        s.parent_id
            .as_deref()
            .map(|t| hex_id("parentId", t, 8))
            .transpose()?,
    )?;
    let mut core: BTreeMap<&str, (u64, Option<JsonEndpoint>)> = BTreeMap::new();
    let mut others = Vec::new();
    for a in &s.annotations {
        let (Some(t), Some(v)) = (a.timestamp, a.value.as_deref()) else {
            return Err("an annotation needs a timestamp and a value".into());
        };
        let t = micros("annotation timestamp", Some(t))?;
        match v {
            "cs" | "cr" | "sr" | "ss" | "ms" | "mr" => {
                let key = match v {
                    "cs" => "cs",
                    "cr" => "cr",
                    "sr" => "sr",
                    "ss" => "ss",
                    "ms" => "ms",
                    _ => "mr",
                };
                core.insert(key, (t, a.endpoint.clone()));
            }
            _ => others.push((t, v.to_string(), a.endpoint.clone())),
        }
    }
    let mut tags = Vec::new();
    let mut addresses: BTreeMap<&str, JsonEndpoint> = BTreeMap::new();
    let mut local_component: Option<(String, Option<JsonEndpoint>)> = None;
    for b in &s.binary_annotations {
        let key = b.key.clone().ok_or("a binary annotation needs a key")?;
        let value = match &b.value {
            Some(Value::String(v)) => v.clone(),
            Some(Value::Bool(v)) => v.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => other.to_string(),
            None => return Err(format!("binary annotation {key:?} has no value")),
        };
        match key.as_str() {
            "ca" | "sa" | "ma" => {
                if let Some(e) = b.endpoint.clone() {
                    let k = match key.as_str() {
                        "ca" => "ca",
                        "sa" => "sa",
                        _ => "ma",
                    };
                    addresses.insert(k, e);
                }
            }
            "lc" => {
                local_component = Some((value.clone(), b.endpoint.clone()));
                tags.push((key, value));
            }
            _ => tags.push((key, value)),
        }
    }
    let name = s.name.clone().unwrap_or_default();
    let half = |kind: SpanKind,
                start: Option<&(u64, Option<JsonEndpoint>)>,
                end: Option<&(u64, Option<JsonEndpoint>)>,
                remote: Option<&JsonEndpoint>| {
        let local = start.or(end).and_then(|(_, e)| e.clone());
        let timestamp = start.map(|(t, _)| *t).unwrap_or(0);
        let duration = match (start, end) {
            (Some((a, _)), Some((b, _))) if b >= a => b - a,
            _ => 0,
        };
        Normal {
            trace_id: trace_id.clone(),
            id: id.clone(),
            parent_id: parent_id.clone(),
            kind,
            name: name.clone(),
            timestamp,
            duration,
            local: json_endpoint(local),
            remote: json_endpoint(remote.cloned()),
            annotations: Vec::new(),
            tags: Vec::new(),
        }
    };
    let mut halves = Vec::new();
    if core.contains_key("cs") || core.contains_key("cr") {
        halves.push(half(
            SpanKind::Client,
            core.get("cs"),
            core.get("cr"),
            addresses.get("sa"),
        ));
    }
    if core.contains_key("sr") || core.contains_key("ss") {
        halves.push(half(
            SpanKind::Server,
            core.get("sr"),
            core.get("ss"),
            addresses.get("ca"),
        ));
    }
    if core.contains_key("ms") {
        halves.push(half(
            SpanKind::Producer,
            core.get("ms"),
            None,
            addresses.get("ma"),
        ));
    }
    if core.contains_key("mr") {
        halves.push(half(
            SpanKind::Consumer,
            core.get("mr"),
            None,
            addresses.get("ma"),
        ));
    }
    if halves.is_empty() {
        // A local span: its service from `lc` or any annotation's endpoint.
        let endpoint = local_component
            .and_then(|(_, e)| e)
            .or_else(|| others.iter().find_map(|(_, _, e)| e.clone()))
            .or_else(|| s.binary_annotations.iter().find_map(|b| b.endpoint.clone()));
        let mut n = half(SpanKind::Unspecified, None, None, None);
        n.local = json_endpoint(endpoint);
        halves.push(n);
    }
    // The span's own timestamp and duration win for the first half, as
    // Zipkin's converter does.
    if let Some(first) = halves.first_mut() {
        if let Some(t) = s.timestamp {
            first.timestamp = micros("timestamp", Some(t))?;
        }
        if let Some(d) = s.duration {
            first.duration = micros("duration", Some(d))?;
        }
    }
    // Other annotations go to the half on their endpoint's service.
    for (t, v, endpoint) in others {
        let service = endpoint.and_then(|e| e.service_name);
        let target = halves
            .iter()
            .position(|h| service.is_some() && h.local.service == service)
            .unwrap_or(0);
        halves[target].annotations.push((t, v));
    }
    for h in &mut halves {
        h.tags = tags.clone();
    }
    Ok(halves)
}

fn normal_proto(s: proto::Span) -> Result<Normal, String> {
    let bytes_id = |field: &str, b: &[u8], len: usize| -> Result<Option<Vec<u8>>, String> {
        match b.len() {
            0 => Ok(None),
            n if n <= len => {
                let mut out = vec![0; len - n];
                out.extend_from_slice(b);
                Ok(Some(out))
            }
            n => Err(format!("{field} has {n} bytes (at most {len})")),
        }
    };
    let (trace_id, id, parent_id) = ids(
        bytes_id("trace_id", &s.trace_id, 16)?,
        bytes_id("id", &s.id, 8)?,
        bytes_id("parent_id", &s.parent_id, 8)?,
    )?;
    let kind = match s.kind {
        0 => SpanKind::Unspecified,
        1 => SpanKind::Client,
        2 => SpanKind::Server,
        3 => SpanKind::Producer,
        4 => SpanKind::Consumer,
        k => return Err(format!("kind {k} is not a Zipkin kind (0-4)")),
    };
    let endpoint = |e: Option<proto::Endpoint>| {
        let e = e.unwrap_or_default();
        let ip = match (e.ipv4.len(), e.ipv6.len()) {
            (4, _) => Some(
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&e.ipv4[..]).expect("4 bytes"))
                    .to_string(),
            ),
            (_, 16) => Some(
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&e.ipv6[..]).expect("16 bytes"))
                    .to_string(),
            ),
            _ => None,
        };
        Endpoint {
            service: Some(e.service_name).filter(|s| !s.is_empty()),
            ip,
            port: Some(i64::from(e.port)).filter(|&p| p != 0),
        }
    };
    let mut tags: Vec<(String, String)> = s.tags.into_iter().collect();
    tags.sort();
    Ok(Normal {
        trace_id,
        id,
        parent_id,
        kind,
        name: s.name,
        timestamp: s.timestamp,
        duration: s.duration,
        local: endpoint(s.local_endpoint),
        remote: endpoint(s.remote_endpoint),
        annotations: s
            .annotations
            .into_iter()
            .map(|a| (a.timestamp, a.value))
            .collect(),
        tags,
    })
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(value.to_string())),
        }),
        key_strindex: 0,
    }
}

fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Any::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

/// Tags that describe the resource rather than the span.
fn is_resource_key(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "service.",
        "host.",
        "telemetry.sdk.",
        "telemetry.auto.",
        "process.",
        "os.",
        "container.",
        "k8s.",
        "cloud.",
        "deployment.",
        "faas.",
        "device.",
        "opencensus.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Status from `otel.status_code` in any spelling, else the `error` tag.
fn status_code(text: &str) -> Option<StatusCode> {
    let t = text.to_ascii_uppercase();
    match t.strip_prefix("STATUS_CODE_").unwrap_or(&t) {
        "OK" => Some(StatusCode::Ok),
        "ERROR" => Some(StatusCode::Error),
        "UNSET" => Some(StatusCode::Unset),
        _ => None,
    }
}

/// An annotation value: `name|{json attributes}|dropped` (the Collector's
/// encoding), `{"name": {json attributes}}` (the specification's exporters;
/// also without the outer braces), or a plain name.
fn annotation(value: &str) -> (String, Vec<KeyValue>, u32) {
    let object = if value.starts_with('{') {
        value.to_string()
    } else {
        format!("{{{value}}}")
    };
    if (value.starts_with('"') || value.starts_with('{'))
        && value.ends_with('}')
        && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&object)
        && map.len() == 1
        && let Some((name, Value::Object(attrs))) = map.into_iter().next()
    {
        let attributes = attrs.iter().map(|(k, v)| json_kv(k, v)).collect();
        return (name, attributes, 0);
    }
    split_encoded(value)
}

/// `name|{json attributes}|dropped` (the Collector's event and link
/// encoding) or a plain name.
fn split_encoded(value: &str) -> (String, Vec<KeyValue>, u32) {
    let parts: Vec<&str> = value.rsplitn(3, '|').collect();
    if let [dropped, attrs, name] = parts[..]
        && let (Ok(dropped), Ok(Value::Object(map))) =
            (dropped.parse::<u32>(), serde_json::from_str::<Value>(attrs))
    {
        let attributes = map.into_iter().map(|(k, v)| json_kv(&k, &v)).collect();
        return (name.to_string(), attributes, dropped);
    }
    (value.to_string(), Vec::new(), 0)
}

fn json_kv(key: &str, v: &Value) -> KeyValue {
    let value = match v {
        Value::Bool(b) => Any::BoolValue(*b),
        Value::Number(n) if n.is_i64() => Any::IntValue(n.as_i64().unwrap_or_default()),
        Value::Number(n) => Any::DoubleValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Any::StringValue(s.clone()),
        other => Any::StringValue(other.to_string()),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// `traceid|spanid|tracestate|{json attributes}|dropped`.
fn link(value: &str) -> Option<Link> {
    let mut parts = value.splitn(4, '|');
    let trace_id = hex::decode(parts.next()?).ok().filter(|t| t.len() == 16)?;
    let span_id = hex::decode(parts.next()?).ok().filter(|s| s.len() == 8)?;
    let trace_state = parts.next()?.to_string();
    let (_, attributes, dropped) = split_encoded(&format!("x|{}", parts.next()?));
    Some(Link {
        trace_id,
        span_id,
        trace_state,
        attributes,
        dropped_attributes_count: dropped,
        flags: 0,
    })
}

fn to_otlp(spans: Vec<Normal>) -> ExportTraceServiceRequest {
    // resource key (service, resource tags) -> scope (name, version) -> spans
    type Scopes = BTreeMap<(String, String), Vec<Span>>;
    type ResourceKey = (Option<String>, Vec<(String, String)>);
    let mut resources: BTreeMap<ResourceKey, Scopes> = BTreeMap::new();
    for s in spans {
        let mut attributes = Vec::with_capacity(s.tags.len() + 4);
        let mut resource_tags = Vec::new();
        let (mut scope_name, mut scope_version) = (String::new(), String::new());
        let mut trace_state = String::new();
        let mut code = None;
        let mut description = String::new();
        let mut error = false;
        let mut error_text: Option<String> = None;
        let mut kind = s.kind;
        let mut links = Vec::new();
        let mut peer_service_tag = false;
        for (k, v) in s.tags {
            match k.as_str() {
                "otel.library.name" | "otel.scope.name" => scope_name = v,
                "otel.library.version" | "otel.scope.version" => scope_version = v,
                "w3c.tracestate" => trace_state = v,
                "otel.status_code" => match status_code(&v) {
                    Some(c) => code = Some(c),
                    None => attributes.push(string_kv(&k, &v)),
                },
                "otel.status_description" => description = v,
                "span.kind"
                    if kind == SpanKind::Unspecified && v.eq_ignore_ascii_case("internal") =>
                {
                    kind = SpanKind::Internal;
                }
                "error" => {
                    error = !v.eq_ignore_ascii_case("false");
                    if error && !v.eq_ignore_ascii_case("true") && !v.is_empty() {
                        // The specification's exporters put the status
                        // description here.
                        error_text = Some(v);
                    }
                }
                _ if k.starts_with("otlp.link.") => match link(&v) {
                    Some(l) => links.push(l),
                    None => attributes.push(string_kv(&k, &v)),
                },
                _ if is_resource_key(&k) => resource_tags.push((k, v)),
                _ => {
                    peer_service_tag |= k == "peer.service";
                    attributes.push(string_kv(&k, &v));
                }
            }
        }
        if let Some(ip) = &s.local.ip {
            attributes.push(string_kv("net.host.ip", ip));
        }
        if let Some(port) = s.local.port {
            attributes.push(int_kv("net.host.port", port));
        }
        if let Some(service) = s.remote.service.as_deref().filter(|_| !peer_service_tag) {
            attributes.push(string_kv("peer.service", service));
        }
        if let Some(ip) = &s.remote.ip {
            attributes.push(string_kv("net.peer.ip", ip));
        }
        if let Some(port) = s.remote.port {
            attributes.push(int_kv("net.peer.port", port));
        }
        let code = code.unwrap_or(if error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        });
        // A descriptive `error` tag is the status message, unless another
        // description is given: then it stays an attribute.
        if let Some(text) = error_text {
            if code == StatusCode::Error && (description.is_empty() || description == text) {
                description = text;
            } else {
                attributes.push(string_kv("error", &text));
            }
        }
        let start = s.timestamp.saturating_mul(1000);
        let span = Span {
            trace_id: s.trace_id,
            span_id: s.id,
            parent_span_id: s.parent_id,
            trace_state,
            flags: 0,
            name: s.name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start.saturating_add(s.duration.saturating_mul(1000)),
            attributes,
            dropped_attributes_count: 0,
            events: s
                .annotations
                .into_iter()
                .map(|(t, v)| {
                    let (name, attributes, dropped) = annotation(&v);
                    Event {
                        time_unix_nano: t.saturating_mul(1000),
                        name,
                        attributes,
                        dropped_attributes_count: dropped,
                    }
                })
                .collect(),
            dropped_events_count: 0,
            links,
            dropped_links_count: 0,
            status: (code != StatusCode::Unset || !description.is_empty()).then(|| Status {
                code: code as i32,
                message: if code == StatusCode::Error {
                    description
                } else {
                    String::new()
                },
            }),
        };
        resource_tags.sort();
        resources
            .entry((s.local.service, resource_tags))
            .or_default()
            .entry((scope_name, scope_version))
            .or_default()
            .push(span);
    }
    ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|((service, tags), scopes)| {
                let mut attributes: Vec<KeyValue> = service
                    .iter()
                    .map(|s| string_kv("service.name", s))
                    .collect();
                attributes.extend(tags.iter().map(|(k, v)| string_kv(k, v)));
                ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        dropped_attributes_count: 0,
                        entity_refs: Vec::new(),
                    }),
                    scope_spans: scopes
                        .into_iter()
                        .map(|((name, version), spans)| ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name,
                                version,
                                attributes: Vec::new(),
                                dropped_attributes_count: 0,
                            }),
                            spans,
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                }
            })
            .collect(),
    }
}

/// An attribute value as Zipkin tag text: strings as they are, booleans
/// `true`/`false`, numbers in decimal, bytes base64, arrays and maps JSON.
pub fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(Any::StringValueStrindex(_)) => String::new(),
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BytesValue(b)) => BASE64.encode(b),
        Some(Any::ArrayValue(_) | Any::KvlistValue(_)) => json_value(value).to_string(),
    }
}

fn json_value(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(Any::StringValueStrindex(_)) => Value::Null,
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::BoolValue(b)) => json!(b),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(d)) => json!(d),
        Some(Any::BytesValue(b)) => json!(BASE64.encode(b)),
        Some(Any::ArrayValue(a)) => a.values.iter().map(|v| json_value(Some(v))).collect(),
        Some(Any::KvlistValue(kv)) => attributes_object(&kv.values),
    }
}

fn attributes_object(attrs: &[KeyValue]) -> Value {
    Value::Object(
        attrs
            .iter()
            .map(|kv| (kv.key.clone(), json_value(kv.value.as_ref())))
            .collect(),
    )
}

pub use crate::model::trace_id_hex;

/// A stored span as a Zipkin v2 JSON span; the local service is the
/// resource's `service.name` (absent when the resource has none).
pub fn to_json(span: &Span, resource: &Resource, scope: &InstrumentationScope) -> Value {
    let service_name = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .map(|kv| value_text(kv.value.as_ref()))
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert("traceId".into(), json!(trace_id_hex(&span.trace_id)));
    if !span.parent_span_id.is_empty() {
        out.insert("parentId".into(), json!(hex::encode(&span.parent_span_id)));
    }
    out.insert("id".into(), json!(hex::encode(&span.span_id)));
    let kind = match SpanKind::try_from(span.kind).unwrap_or_default() {
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Server => Some("SERVER"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal | SpanKind::Unspecified => None,
    };
    if let Some(k) = kind {
        out.insert("kind".into(), json!(k));
    }
    if !span.name.is_empty() {
        out.insert("name".into(), json!(span.name));
    }
    if span.start_time_unix_nano > 0 {
        out.insert("timestamp".into(), json!(span.start_time_unix_nano / 1000));
    }
    let duration_ns = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano);
    if duration_ns > 0 {
        out.insert("duration".into(), json!((duration_ns / 1000).max(1)));
    }
    let attr = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| value_text(kv.value.as_ref()))
    };
    let mut local = Map::new();
    if !service_name.is_empty() {
        local.insert("serviceName".into(), json!(service_name));
    }
    let mut remote = Map::new();
    for (map, ip_key, port_key) in [
        (&mut local, "net.host.ip", "net.host.port"),
        (&mut remote, "net.peer.ip", "net.peer.port"),
    ] {
        if let Some(ip) = attr(ip_key) {
            let family = if ip.contains(':') { "ipv6" } else { "ipv4" };
            map.insert(family.into(), json!(ip));
        }
        if let Some(port) = attr(port_key).and_then(|p| p.parse::<i64>().ok()) {
            map.insert("port".into(), json!(port));
        }
    }
    if let Some(peer) = attr("peer.service") {
        remote.insert("serviceName".into(), json!(peer));
    }
    if !local.is_empty() {
        out.insert("localEndpoint".into(), Value::Object(local));
    }
    if !remote.is_empty() {
        out.insert("remoteEndpoint".into(), Value::Object(remote));
    }
    if !span.events.is_empty() {
        let annotations: Vec<Value> = span
            .events
            .iter()
            .map(|e| {
                let value = if e.attributes.is_empty() && e.dropped_attributes_count == 0 {
                    e.name.clone()
                } else {
                    format!(
                        "{}|{}|{}",
                        e.name,
                        attributes_object(&e.attributes),
                        e.dropped_attributes_count
                    )
                };
                json!({ "timestamp": e.time_unix_nano / 1000, "value": value })
            })
            .collect();
        out.insert("annotations".into(), Value::Array(annotations));
    }
    let mut tags = BTreeMap::new();
    let endpoint_keys = [
        "net.host.ip",
        "net.host.port",
        "net.peer.ip",
        "net.peer.port",
    ];
    for kv in &span.attributes {
        if endpoint_keys.contains(&kv.key.as_str()) {
            continue;
        }
        if kv.key == "peer.service" {
            continue;
        }
        tags.insert(kv.key.clone(), value_text(kv.value.as_ref()));
    }
    for kv in &resource.attributes {
        if kv.key != "service.name" {
            tags.insert(kv.key.clone(), value_text(kv.value.as_ref()));
        }
    }
    if !scope.name.is_empty() {
        tags.insert("otel.scope.name".into(), scope.name.clone());
    }
    if !scope.version.is_empty() {
        tags.insert("otel.scope.version".into(), scope.version.clone());
    }
    if !span.trace_state.is_empty() {
        tags.insert("w3c.tracestate".into(), span.trace_state.clone());
    }
    if SpanKind::try_from(span.kind) == Ok(SpanKind::Internal) {
        tags.insert("span.kind".into(), "internal".into());
    }
    let status = span.status.clone().unwrap_or_default();
    match StatusCode::try_from(status.code).unwrap_or_default() {
        StatusCode::Ok => {
            tags.insert("otel.status_code".into(), "OK".into());
        }
        StatusCode::Error => {
            tags.insert("otel.status_code".into(), "ERROR".into());
            // The specification's `error` tag: the description, or empty.
            tags.entry("error".into())
                .or_insert_with(|| status.message.clone());
            if !status.message.is_empty() {
                tags.insert("otel.status_description".into(), status.message);
            }
        }
        StatusCode::Unset => {}
    }
    for (i, l) in span.links.iter().enumerate() {
        tags.insert(
            format!("otlp.link.{i}"),
            format!(
                "{}|{}|{}|{}|{}",
                hex::encode(&l.trace_id),
                hex::encode(&l.span_id),
                l.trace_state,
                attributes_object(&l.attributes),
                l.dropped_attributes_count
            ),
        );
    }
    for (key, n) in [
        (
            "otel.dropped_attributes_count",
            span.dropped_attributes_count,
        ),
        ("otel.dropped_events_count", span.dropped_events_count),
        ("otel.dropped_links_count", span.dropped_links_count),
    ] {
        if n > 0 {
            tags.insert(key.into(), n.to_string());
        }
    }
    if !tags.is_empty() {
        out.insert("tags".into(), json!(tags));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> (Resource, InstrumentationScope, Span) {
        let r = from_json(body.as_bytes()).unwrap();
        assert_eq!(r.resource_spans.len(), 1);
        let rs = &r.resource_spans[0];
        let ss = &rs.scope_spans[0];
        (
            rs.resource.clone().unwrap(),
            ss.scope.clone().unwrap(),
            ss.spans[0].clone(),
        )
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Any> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn maps_a_client_span_like_the_collector() {
        let (resource, scope, span) = one(
            r#"[{"traceId":"5AF7183FB1D4CF5F","id":"6b221d5bc9e6496c","parentId":"6b221d5bc9e6496c",
                "kind":"CLIENT","name":"get /api","timestamp":1472470996199000,"duration":207000,
                "localEndpoint":{"serviceName":"frontend","ipv4":"192.168.99.1","port":8080},
                "remoteEndpoint":{"serviceName":"backend","ipv6":"2001:db8::c001","port":9000},
                "annotations":[{"timestamp":1472470996238000,"value":"ws"},
                               {"timestamp":1472470996239000,"value":"retry|{\"n\":2}|1"}],
                "tags":{"http.path":"/api","clnt/finagle.version":"6.45.0","host.name":"h1",
                        "otel.library.name":"lib","otel.library.version":"1.0","otel.status_code":"Error",
                        "otel.status_description":"boom","w3c.tracestate":"k=v","error":"timeout"},
                "debug":true,"shared":false}]"#,
        );
        assert_eq!(
            hex::encode(&span.trace_id),
            "00000000000000005af7183fb1d4cf5f"
        );
        assert!(
            span.parent_span_id.is_empty(),
            "parent equal to id is dropped"
        );
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.start_time_unix_nano, 1_472_470_996_199_000_000);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            207_000_000
        );
        assert_eq!(span.trace_state, "k=v");
        let status = span.status.unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (StatusCode::Error as i32, "boom")
        );
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("lib", "1.0")
        );
        assert_eq!(
            attr(&resource.attributes, "service.name"),
            Some(&Any::StringValue("frontend".into()))
        );
        assert_eq!(
            attr(&resource.attributes, "host.name"),
            Some(&Any::StringValue("h1".into()))
        );
        let a = &span.attributes;
        assert_eq!(
            attr(a, "peer.service"),
            Some(&Any::StringValue("backend".into()))
        );
        assert_eq!(
            attr(a, "net.host.ip"),
            Some(&Any::StringValue("192.168.99.1".into()))
        );
        assert_eq!(attr(a, "net.host.port"), Some(&Any::IntValue(8080)));
        assert_eq!(
            attr(a, "net.peer.ip"),
            Some(&Any::StringValue("2001:db8::c001".into()))
        );
        // Another description is given: the error text stays a tag.
        assert_eq!(attr(a, "error"), Some(&Any::StringValue("timeout".into())));
        assert_eq!(attr(a, "http.path"), Some(&Any::StringValue("/api".into())));
        assert!(attr(a, "otel.status_code").is_none() && attr(a, "host.name").is_none());
        assert_eq!(span.events.len(), 2);
        assert_eq!(span.events[1].name, "retry");
        assert_eq!(span.events[1].dropped_attributes_count, 1);
        assert_eq!(
            attr(&span.events[1].attributes, "n"),
            Some(&Any::IntValue(2))
        );
    }

    #[test]
    fn status_in_every_spelling() {
        for (tags, code) in [
            (r#"{"otel.status_code":"OK"}"#, StatusCode::Ok),
            (r#"{"otel.status_code":"Ok"}"#, StatusCode::Ok),
            (r#"{"otel.status_code":"STATUS_CODE_OK"}"#, StatusCode::Ok),
            (r#"{"otel.status_code":"ERROR"}"#, StatusCode::Error),
            (r#"{"otel.status_code":"error"}"#, StatusCode::Error),
            (
                r#"{"otel.status_code":"STATUS_CODE_ERROR"}"#,
                StatusCode::Error,
            ),
            (r#"{"error":"true"}"#, StatusCode::Error),
            (r#"{"error":""}"#, StatusCode::Error),
            (r#"{"error":"false"}"#, StatusCode::Unset),
            (r#"{}"#, StatusCode::Unset),
        ] {
            let body =
                format!(r#"[{{"traceId":"1","id":"2","timestamp":1,"duration":1,"tags":{tags}}}]"#);
            let (_, _, span) = one(&body);
            assert_eq!(
                span.status.map(|s| s.code).unwrap_or(0),
                code as i32,
                "{tags}"
            );
        }
    }

    #[test]
    fn what_the_specification_exporters_send() {
        // The OpenTelemetry SDKs' Zipkin exporters: the description in
        // `error`, events as `"name": {attributes}`.
        let (_, _, span) = one(r#"[{"traceId":"1","id":"2","timestamp":1,"duration":1,
                "annotations":[{"timestamp":2,"value":"{\"retry\": {\"attempt\": 2}}"},
                               {"timestamp":3,"value":"\"gc\": {\"ms\": 5}"}],
                "tags":{"otel.status_code":"ERROR","error":"deadlock detected"}}]"#);
        let status = span.status.unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "deadlock detected")
        );
        assert!(attr(&span.attributes, "error").is_none());
        assert_eq!(span.events[0].name, "retry");
        assert_eq!(
            attr(&span.events[0].attributes, "attempt"),
            Some(&Any::IntValue(2))
        );
    }

    #[test]
    fn bad_input_names_the_span_and_field() {
        let ok = r#"{"traceId":"1","id":"2"}"#;
        for (body, needle) in [
            (r#"{"traceId":"1","id":"2"}"#.to_string(), "JSON list"),
            (
                format!(r#"[{ok},{{"id":"2"}}]"#),
                "span 1: traceId is required",
            ),
            (
                format!(r#"[{ok},{{"traceId":"xyz","id":"2"}}]"#),
                "span 1: traceId",
            ),
            (r#"[{"traceId":"1","id":"00"}]"#.into(), "id is all zeros"),
            (
                r#"[{"traceId":"1","id":"2","kind":"LOCAL"}]"#.into(),
                "kind",
            ),
            (
                r#"[{"traceId":"1","id":"2","tags":{"a":true}}]"#.into(),
                "tag \"a\"",
            ),
            (
                r#"[{"traceId":"1","id":"2","binaryAnnotations":[]}]"#.into(),
                "v1",
            ),
            (
                r#"[{"traceId":"1","id":"2","timestamp":-5}]"#.into(),
                "negative",
            ),
            (r#"[{"traceId":"1""#.into(), "invalid Zipkin v2 JSON"),
        ] {
            let err = from_json(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        assert!(from_json(b"").unwrap().resource_spans.is_empty());
        assert!(from_json(b"[]").unwrap().resource_spans.is_empty());
    }

    #[test]
    fn v1_spans_split_into_client_and_server_halves() {
        let r = from_v1_json(
            br#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","parentId":"6b221d5bc9e6496c","name":"get",
                "annotations":[
                  {"timestamp":1000,"value":"cs","endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"}},
                  {"timestamp":1100,"value":"sr","endpoint":{"serviceName":"backend","ipv4":"10.0.0.2"}},
                  {"timestamp":1150,"value":"cache hit","endpoint":{"serviceName":"backend"}},
                  {"timestamp":1800,"value":"ss","endpoint":{"serviceName":"backend"}},
                  {"timestamp":2000,"value":"cr","endpoint":{"serviceName":"frontend"}}],
                "binaryAnnotations":[
                  {"key":"http.path","value":"/api","endpoint":{"serviceName":"backend"}},
                  {"key":"sa","value":true,"endpoint":{"serviceName":"backend","ipv4":"10.0.0.2","port":8080}},
                  {"key":"ca","value":true,"endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"}}]},
               {"traceId":"5af7183fb1d4cf5f","id":"0000000000000007","parentId":"352bff9a74ca9ad2","name":"compute",
                "timestamp":1200,"duration":300,
                "binaryAnnotations":[{"key":"lc","value":"worker","endpoint":{"serviceName":"backend"}}]}]"#,
        )
        .unwrap();
        let mut spans: Vec<(String, String, i32, u64, u64)> = Vec::new();
        for rs in &r.resource_spans {
            let service = attr(&rs.resource.as_ref().unwrap().attributes, "service.name")
                .map(|a| match a {
                    Any::StringValue(s) => s.clone(),
                    _ => String::new(),
                })
                .unwrap_or_default();
            for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                spans.push((
                    service.clone(),
                    s.name.clone(),
                    s.kind,
                    s.start_time_unix_nano / 1000,
                    (s.end_time_unix_nano - s.start_time_unix_nano) / 1000,
                ));
            }
        }
        spans.sort();
        assert_eq!(
            spans,
            [
                ("backend".to_string(), "compute".to_string(), 0, 1200, 300),
                (
                    "backend".into(),
                    "get".into(),
                    SpanKind::Server as i32,
                    1100,
                    700
                ),
                (
                    "frontend".into(),
                    "get".into(),
                    SpanKind::Client as i32,
                    1000,
                    1000
                ),
            ]
        );
        let all: Vec<&Span> = r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect();
        let client = all
            .iter()
            .find(|s| s.kind == SpanKind::Client as i32)
            .unwrap();
        let server = all
            .iter()
            .find(|s| s.kind == SpanKind::Server as i32)
            .unwrap();
        assert_eq!(server.events[0].name, "cache hit", "on the backend's half");
        assert!(client.events.is_empty());
        assert_eq!(
            attr(&client.attributes, "peer.service"),
            Some(&Any::StringValue("backend".into()))
        );
        assert_eq!(
            attr(&client.attributes, "net.peer.port"),
            Some(&Any::IntValue(8080))
        );
        assert!(from_v1_json(br#"{"traceId":"1"}"#).is_err());
        assert!(
            from_v1_json(br#"[{"traceId":"1","id":"2","binaryAnnotations":[{"value":"x"}]}]"#)
                .unwrap_err()
                .to_string()
                .contains("key")
        );
    }

    #[test]
    fn proto3_matches_json() {
        let span = proto::Span {
            trace_id: hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap(),
            id: hex::decode("1112131415161718").unwrap(),
            parent_id: Vec::new(),
            kind: 2,
            name: "get".into(),
            timestamp: 1_000_000,
            duration: 5,
            local_endpoint: Some(proto::Endpoint {
                service_name: "api".into(),
                ipv4: vec![10, 0, 0, 1],
                ipv6: Vec::new(),
                port: 80,
            }),
            remote_endpoint: None,
            annotations: vec![proto::Annotation {
                timestamp: 1_000_001,
                value: "wr".into(),
            }],
            tags: [("http.method".to_string(), "GET".to_string())].into(),
            debug: false,
            shared: true,
        };
        let body = prost::Message::encode_to_vec(&proto::ListOfSpans { spans: vec![span] });
        let decoded = from_proto(&body).unwrap();
        let expected = from_json(
            br#"[{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"1112131415161718","kind":"SERVER",
                "name":"get","timestamp":1000000,"duration":5,"shared":true,
                "localEndpoint":{"serviceName":"api","ipv4":"10.0.0.1","port":80},
                "annotations":[{"timestamp":1000001,"value":"wr"}],"tags":{"http.method":"GET"}}]"#,
        )
        .unwrap();
        assert_eq!(decoded, expected);
        assert!(from_proto(b"\xff\xff").is_err());
    }

    #[test]
    fn zipkin_round_trips_through_otlp() {
        let original: Value = serde_json::from_str(
            r#"{"traceId":"5af7183fb1d4cf5f","parentId":"6b221d5bc9e6496c","id":"352bff9a74ca9ad2",
                "kind":"SERVER","name":"get /api","timestamp":1472470996199000,"duration":207000,
                "localEndpoint":{"serviceName":"backend","ipv4":"192.168.99.101","port":9000},
                "remoteEndpoint":{"serviceName":"frontend","ipv4":"172.19.0.2","port":58648},
                "annotations":[{"timestamp":1472470996238000,"value":"wr"}],
                "tags":{"http.path":"/api","otel.status_code":"ERROR","error":"","otel.scope.name":"s"}}"#,
        )
        .unwrap();
        let request = from_json(format!("[{original}]").as_bytes()).unwrap();
        let rs = &request.resource_spans[0];
        let ss = &rs.scope_spans[0];
        let back = to_json(
            &ss.spans[0],
            rs.resource.as_ref().unwrap(),
            ss.scope.as_ref().unwrap(),
        );
        assert_eq!(back, original);
    }
}
