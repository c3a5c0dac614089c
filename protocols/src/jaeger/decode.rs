//! The Jaeger model to OTLP, as the OpenTelemetry Collector's jaeger
//! translator maps it.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use super::thrift::{self, Batch, Protocol, Reader, ThriftError};
use crate::otlp::{RequestBuilder, string_kv, value_text};

/// A bare `Batch` struct (the HTTP collector's body, TBinaryProtocol).
pub fn from_batch(
    body: &[u8],
    protocol: Protocol,
) -> Result<ExportTraceServiceRequest, ThriftError> {
    thrift::batch(&mut Reader::new(body, protocol)).map(to_otlp)
}

/// An `Agent.emitBatch` message (UDP datagrams).
pub fn from_agent_message(
    datagram: &[u8],
    protocol: Protocol,
) -> Result<ExportTraceServiceRequest, ThriftError> {
    thrift::agent_batch(datagram, protocol).map(to_otlp)
}

fn text(kv: &KeyValue) -> String {
    value_text(kv.value.as_ref())
}

fn id_bytes(high: i64, low: i64) -> Vec<u8> {
    let mut v = (high as u64).to_be_bytes().to_vec();
    v.extend_from_slice(&(low as u64).to_be_bytes());
    v
}

pub(super) fn to_otlp(b: Batch) -> ExportTraceServiceRequest {
    let mut resource_attributes = vec![string_kv("service.name", &b.service)];
    for mut kv in b.process_tags {
        match kv.key.as_str() {
            "hostname" => kv.key = "host.name".into(),
            "jaeger.version" => {
                kv = KeyValue {
                    key: "opencensus.exporterversion".into(),
                    value: Some(AnyValue {
                        value: Some(Any::StringValue(format!("Jaeger-{}", text(&kv)))),
                    }),
                    key_strindex: 0,
                }
            }
            _ => {}
        }
        resource_attributes.push(kv);
    }
    // One resource: the batch's process.
    let mut request = RequestBuilder::default();
    let mut resource = Some(resource_attributes);
    for s in b.spans {
        let trace_id = id_bytes(s.trace_high, s.trace_low);
        let mut kind = SpanKind::Unspecified;
        let (mut scope_name, mut scope_version) = (String::new(), String::new());
        let mut trace_state = String::new();
        let mut error = false;
        let mut status_code: Option<StatusCode> = None;
        let mut description = String::new();
        let mut http_status: Option<i64> = None;
        let mut http_message = String::new();
        let mut attributes = Vec::with_capacity(s.tags.len());
        for kv in s.tags {
            match kv.key.as_str() {
                "span.kind" => {
                    kind = match text(&kv).to_ascii_lowercase().as_str() {
                        "client" => SpanKind::Client,
                        "server" => SpanKind::Server,
                        "producer" => SpanKind::Producer,
                        "consumer" => SpanKind::Consumer,
                        "internal" => SpanKind::Internal,
                        _ => SpanKind::Unspecified,
                    };
                }
                "error" => error = text(&kv).eq_ignore_ascii_case("true"),
                "otel.status_code" => {
                    status_code = match text(&kv).to_ascii_uppercase().as_str() {
                        "OK" => Some(StatusCode::Ok),
                        "ERROR" => Some(StatusCode::Error),
                        _ => None,
                    };
                }
                "otel.status_description" => description = text(&kv),
                "w3c.tracestate" => trace_state = text(&kv),
                "otel.library.name" | "otel.scope.name" => scope_name = text(&kv),
                "otel.library.version" | "otel.scope.version" => scope_version = text(&kv),
                _ => {
                    if kv.key == "http.status_code" {
                        http_status = text(&kv).parse().ok();
                    }
                    if kv.key == "http.status_message" {
                        http_message = text(&kv);
                    }
                    attributes.push(kv);
                }
            }
        }
        let code = if error {
            StatusCode::Error
        } else if let Some(c) = status_code {
            c
        } else {
            match http_status {
                Some(500..=599) => StatusCode::Error,
                Some(400..=499) if kind == SpanKind::Client => StatusCode::Error,
                _ => StatusCode::Unset,
            }
        };
        if code == StatusCode::Error && description.is_empty() {
            description = http_message;
        }
        let mut parent = s.parent_id;
        let mut links = Vec::new();
        for (ref_type, low, high, span_id) in s.references {
            let same_trace = (high, low) == (s.trace_high, s.trace_low);
            if ref_type == 0 && parent == 0 && same_trace {
                parent = span_id;
                continue;
            }
            if ref_type == 0 && same_trace && span_id == parent {
                continue;
            }
            links.push(Link {
                trace_id: id_bytes(high, low),
                span_id: (span_id as u64).to_be_bytes().to_vec(),
                trace_state: String::new(),
                attributes: vec![KeyValue {
                    key: "opentracing.ref_type".into(),
                    value: Some(AnyValue {
                        value: Some(Any::StringValue(
                            if ref_type == 0 {
                                "child_of"
                            } else {
                                "follows_from"
                            }
                            .into(),
                        )),
                    }),
                    key_strindex: 0,
                }],
                dropped_attributes_count: 0,
                flags: 0,
            });
        }
        let events = s
            .logs
            .into_iter()
            .map(|(ts, fields)| {
                let mut name = String::new();
                let mut attributes = Vec::with_capacity(fields.len());
                for kv in fields {
                    if kv.key == "event" && name.is_empty() {
                        name = text(&kv);
                    } else {
                        attributes.push(kv);
                    }
                }
                Event {
                    time_unix_nano: (ts.max(0) as u64).saturating_mul(1000),
                    name,
                    attributes,
                    dropped_attributes_count: 0,
                }
            })
            .collect();
        let start = (s.start.max(0) as u64).saturating_mul(1000);
        let span = Span {
            trace_id,
            span_id: (s.span_id as u64).to_be_bytes().to_vec(),
            trace_state,
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                (parent as u64).to_be_bytes().to_vec()
            },
            flags: 0,
            name: s.name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start
                .saturating_add((s.duration.max(0) as u64).saturating_mul(1000)),
            attributes,
            dropped_attributes_count: 0,
            events,
            dropped_events_count: 0,
            links,
            dropped_links_count: 0,
            status: (code != StatusCode::Unset).then(|| Status {
                code: code as i32,
                message: if code == StatusCode::Error {
                    description
                } else {
                    String::new()
                },
            }),
        };
        request.push(
            (),
            |()| resource.take().unwrap_or_default(),
            (scope_name, scope_version),
            span,
        );
    }
    request.finish()
}
