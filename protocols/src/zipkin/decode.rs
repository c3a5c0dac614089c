//! Zipkin v2 JSON, v1 JSON and proto3 spans to an OTLP request.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::{ZipkinError, proto};
use crate::otlp::{RequestBuilder, int_kv, string_kv};

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

/// [`ids`] of the hex ids of a JSON span (v1 and v2 alike).
fn hex_ids(trace_id: Option<&str>, id: Option<&str>, parent: Option<&str>) -> Result<Ids, String> {
    ids(
        trace_id.map(|t| hex_id("traceId", t, 16)).transpose()?,
        id.map(|t| hex_id("id", t, 8)).transpose()?,
        parent.map(|t| hex_id("parentId", t, 8)).transpose()?,
    )
}

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
    let (trace_id, id, parent_id) = hex_ids(
        s.trace_id.as_deref(),
        s.id.as_deref(),
        s.parent_id.as_deref(),
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
    let (trace_id, id, parent_id) = hex_ids(
        s.trace_id.as_deref(),
        s.id.as_deref(),
        s.parent_id.as_deref(),
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
    // One resource per local service and resource tags.
    let mut request = RequestBuilder::default();
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
        request.push(
            (s.local.service, resource_tags),
            |(service, tags)| {
                let mut attributes: Vec<KeyValue> = service
                    .iter()
                    .map(|s| string_kv("service.name", s))
                    .collect();
                attributes.extend(tags.iter().map(|(k, v)| string_kv(k, v)));
                attributes
            },
            (scope_name, scope_version),
            span,
        );
    }
    request.finish()
}
