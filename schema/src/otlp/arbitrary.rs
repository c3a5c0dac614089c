//! Generators of OTLP requests for property tests (here and in the crates
//! whose decoders must write what `SpansBuilder` writes): valid spans with
//! every kind of attribute value, events, links, absent and present
//! resources and scopes. Enabled by the `arbitrary` feature.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::collection::vec;
use proptest::prelude::*;

/// 2026-11-21T00:00:00Z and a day later: the generated start times.
pub const DAY_START: u64 = 1_795_219_200_000_000_000;
pub const DAY_NS: u64 = 86_400_000_000_000;

pub fn scalar() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        ".{0,12}".prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        // Finite doubles: nested values are stored as OTLP/JSON, where NaN
        // has no representation (top-level NaN is covered separately).
        (-1e300f64..1e300).prop_map(|d| Some(Value::DoubleValue(d))),
        vec(any::<u8>(), 0..8).prop_map(|b| Some(Value::BytesValue(b))),
        Just(None),
    ]
}

pub fn any_value() -> impl Strategy<Value = Option<Value>> {
    scalar().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|vs| Some(Value::ArrayValue(ArrayValue {
                values: vs.into_iter().map(|value| AnyValue { value }).collect(),
            }))),
            vec(inner, 0..4).prop_map(|vs| Some(Value::KvlistValue(KeyValueList {
                values: vs
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| KeyValue {
                        key: format!("n{i}"),
                        value: Some(AnyValue { value }),
                        key_strindex: 0,
                    })
                    .collect(),
            }))),
        ]
    })
}

pub fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    // Keys with a dedicated text or integer column (values of any type), and
    // others.
    let special = prop_oneof![
        Just("http.route"),
        Just("http.response.status_code"),
        Just("http.method"),
        Just("db.system"),
        Just("server.port"),
        Just("thread.name"),
        // Resource keys with columns (also used as span keys: in the map).
        Just("k8s.namespace.name"),
        Just("cloud.region"),
        Just("k"),
    ];
    vec((special, any_value(), any::<bool>()), 0..6).prop_map(|kvs| {
        let mut used = std::collections::HashSet::new();
        kvs.into_iter()
            .enumerate()
            // Unique keys, as the OTLP data model requires.
            .map(|(i, (k, value, absent))| KeyValue {
                key: if used.insert(k) {
                    k.to_string()
                } else {
                    format!("{k}.{i}")
                },
                value: (!absent || i % 3 != 1).then_some(AnyValue { value }),
                key_strindex: 0,
            })
            .collect()
    })
}

pub fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), len).prop_map(move |mut v| {
        v[len - 1] |= 1; // never all zero
        v
    })
}

pub fn span() -> impl Strategy<Value = Span> {
    let events = vec(
        (0..DAY_NS, ".{0,8}", attributes(), 0u32..3).prop_map(|(t, name, attributes, d)| Event {
            time_unix_nano: DAY_START + t,
            name,
            attributes,
            dropped_attributes_count: d,
        }),
        0..3,
    );
    let links = vec(
        (
            id(16),
            id(8),
            "[a-z=,]{0,8}",
            any::<u32>(),
            attributes(),
            0u32..3,
        )
            .prop_map(
                |(trace_id, span_id, trace_state, flags, attributes, d)| Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count: d,
                    flags,
                },
            ),
        0..3,
    );
    (
        (
            id(16),
            id(8),
            prop::option::of(id(8)),
            "[a-z=,]{0,8}",
            any::<u32>(),
        ),
        (".{0,16}", 0i32..6, 0..DAY_NS, 0u64..10_000_000_000),
        (attributes(), 0u32..4, events, 0u32..4, links, 0u32..4),
        prop::option::of((0i32..3, ".{0,10}")),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent, trace_state, flags),
                (name, kind, start, duration),
                (attributes, dropped_attrs, events, dropped_events, links, dropped_links),
                status,
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id: parent.unwrap_or_default(),
                flags,
                name,
                kind,
                start_time_unix_nano: DAY_START + start,
                end_time_unix_nano: DAY_START + start + duration,
                attributes,
                dropped_attributes_count: dropped_attrs,
                events,
                dropped_events_count: dropped_events,
                links,
                dropped_links_count: dropped_links,
                status: status.map(|(code, message)| Status { message, code }),
            },
        )
}

pub fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = (
        prop::option::of((".{0,8}", ".{0,5}", attributes(), 0u32..3)),
        prop::option::of(Just("https://opentelemetry.io/schemas/1.26.0".to_string())),
        vec(span(), 1..4),
    );
    let resource = (
        prop::option::of((attributes(), 0u32..3)),
        prop::option::of(Just("https://opentelemetry.io/schemas/1.21.0".to_string())),
        vec(scope, 1..3),
    );
    vec(resource, 1..3).prop_map(|resources| ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .enumerate()
            .map(|(r, (resource, url, scopes))| ResourceSpans {
                // Distinct resources: adjacent equal ones would merge, so
                // only the first may be absent.
                resource: if r == 0 {
                    resource
                } else {
                    Some(resource.unwrap_or_default())
                }
                .map(|(mut attributes, dropped)| {
                    attributes.push(kv("service.name", Value::StringValue(format!("svc-{r}"))));
                    Resource {
                        attributes,
                        dropped_attributes_count: dropped,
                        entity_refs: Vec::new(),
                    }
                }),
                scope_spans: scopes
                    .into_iter()
                    .enumerate()
                    .map(|(s, (scope, url, spans))| ScopeSpans {
                        // Likewise only the first scope may be absent.
                        scope: if s == 0 {
                            scope
                        } else {
                            Some(scope.unwrap_or_default())
                        }
                        .map(
                            |(name, version, attributes, dropped)| InstrumentationScope {
                                name: format!("{name}#{s}"),
                                version,
                                attributes,
                                dropped_attributes_count: dropped,
                            },
                        ),
                        spans,
                        schema_url: url.unwrap_or_default(),
                    })
                    .collect(),
                schema_url: url.unwrap_or_default(),
            })
            .collect(),
    })
}

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// Makes some spans of `request` invalid and some attribute sets repeat a
/// key (chosen by `seed`), so that decoders compared with the reference
/// path are compared on rejection and de-duplication too.
pub fn roughen(mut request: ExportTraceServiceRequest, seed: u64) -> ExportTraceServiceRequest {
    let mut n = seed;
    for span in request
        .resource_spans
        .iter_mut()
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans)
    {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        match (n >> 33) % 9 {
            0 => span.trace_id.truncate(5),
            1 => span.kind = 9,
            2 => span.end_time_unix_nano = span.start_time_unix_nano.saturating_sub(1),
            3 => span.span_id = vec![0; 8],
            4 => {
                let first = span.attributes.first().cloned();
                span.attributes.extend(first);
                span.attributes.push(kv("k", Value::IntValue(7)));
                span.attributes
                    .push(kv("k", Value::StringValue("x".into())));
            }
            _ => {}
        }
    }
    request
}
