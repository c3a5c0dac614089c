//! Stored spans back to Zipkin v2 JSON.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value, json};

use crate::otlp::{attributes_object, trace_id_hex, value_text};

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
