use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
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
use prost::Message as _;

use super::*;
use crate::model::to_otlp;
use crate::spans;

// 2026-11-21T00:00:00Z and a day later: the generated start times.
const DAY_START: u64 = 1_795_219_200_000_000_000;
const DAY_NS: u64 = 86_400_000_000_000;

fn scalar() -> impl Strategy<Value = Option<Value>> {
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

fn any_value() -> impl Strategy<Value = Option<Value>> {
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

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    let special = prop_oneof![
        Just("http.route"),
        Just("http.response.status_code"),
        Just("http.method"),
        Just("db.system"),
        Just("k"),
    ];
    vec((special, any_value(), any::<bool>()), 0..6).prop_map(|kvs| {
        kvs.into_iter()
            .enumerate()
            // Unique keys, as the OTLP data model requires.
            .map(|(i, (k, value, absent))| KeyValue {
                key: if i == 0 {
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

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), len).prop_map(move |mut v| {
        v[len - 1] |= 1; // never all zero
        v
    })
}

fn span() -> impl Strategy<Value = Span> {
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

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
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

/// Proto3 treats an absent message as its default: the canonical form of a
/// request has every resource, scope and status present.
fn canonical(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for rs in &mut request.resource_spans {
        rs.resource.get_or_insert_with(Resource::default);
        for ss in &mut rs.scope_spans {
            ss.scope.get_or_insert_with(InstrumentationScope::default);
            for span in &mut ss.spans {
                span.status.get_or_insert_with(Status::default);
            }
        }
    }
    request
}

fn roundtrip(request: &ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    let mut builder = SpansBuilder::default();
    let rejected = builder.append_request(request, &Acceptance::ANY_TIME);
    assert_eq!(rejected.count, 0, "{}", rejected.message());
    let batch = builder.finish();
    to_otlp(&[batch]).unwrap()
}

fn assert_identity(request: ExportTraceServiceRequest) {
    let back = roundtrip(&request);
    let expected = canonical(request);
    // Compare encodings: byte-equal protobuf is identity, NaN included.
    if back.encode_to_vec() != expected.encode_to_vec() {
        assert_eq!(back, expected);
        panic!("encodings differ but values compare equal (NaN payload?)");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn otlp_to_arrow_to_otlp_is_identity(request in request()) {
        assert_identity(request);
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn simple_span(trace_id: Vec<u8>, span_id: Vec<u8>) -> Span {
    Span {
        trace_id,
        span_id,
        name: "GET /users/{id}".into(),
        kind: 2,
        start_time_unix_nano: DAY_START + 1,
        end_time_unix_nano: DAY_START + 1_000_001,
        attributes: vec![
            kv("http.method", Value::StringValue("GET".into())),
            kv("http.request.method", Value::StringValue("POST".into())),
            kv("http.response.status_code", Value::IntValue(404)),
            kv("double", Value::DoubleValue(f64::NAN)),
        ],
        ..Default::default()
    }
}

fn request_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("frontend".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[test]
fn top_level_nan_round_trips() {
    assert_identity(request_of(vec![simple_span(vec![1; 16], vec![2; 8])]));
}

#[test]
fn promoted_columns_and_partition_are_filled() {
    let mut builder = SpansBuilder::default();
    // A second span at 13:55 of the same day, in another hour partition.
    let mut later = simple_span(vec![1; 16], vec![3; 8]);
    later.start_time_unix_nano += (13 * 60 + 55) * 60_000_000_000;
    later.end_time_unix_nano += (13 * 60 + 55) * 60_000_000_000;
    builder.append_request(
        &request_of(vec![simple_span(vec![1; 16], vec![2; 8]), later]),
        &Acceptance::ANY_TIME,
    );
    let batch = builder.finish();
    let col = |name| batch.column_by_name(name).unwrap();
    let day = (DAY_START / 86_400_000_000_000) as i32;
    let dates = col(spans::DATE).as_primitive::<arrow_array::types::Date32Type>();
    let hours = col(spans::HOUR).as_primitive::<arrow_array::types::Int32Type>();
    assert_eq!((dates.value(0), hours.value(0)), (day, 0));
    assert_eq!((dates.value(1), hours.value(1)), (day, 13));
    // The current semantic-convention key wins over the old one.
    assert_eq!(
        col("http_request_method").as_string::<i32>().value(0),
        "POST"
    );
    assert_eq!(
        col("http_response_status_code")
            .as_primitive::<Int64Type>()
            .value(0),
        404
    );
    assert!(col("http_route").is_null(0));
    assert_eq!(
        col(spans::SERVICE_NAME).as_string::<i32>().value(0),
        "frontend"
    );
    assert_eq!(col(spans::KIND).as_string::<i32>().value(0), "SERVER");
    assert_eq!(col(spans::STATUS_CODE).as_string::<i32>().value(0), "UNSET");
    assert_eq!(
        col(spans::DURATION_NS).as_primitive::<Int64Type>().value(0),
        1_000_000
    );
    assert_eq!(batch.schema(), spans::spans_schema());
}

#[test]
fn invalid_spans_are_rejected_individually() {
    let good = simple_span(vec![1; 16], vec![2; 8]);
    let mut bad_kind = good.clone();
    bad_kind.kind = 9;
    let mut backwards = good.clone();
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let mut bad_parent = good.clone();
    bad_parent.parent_span_id = vec![1; 3];
    let mut bad_status = good.clone();
    bad_status.status = Some(Status {
        message: String::new(),
        code: 7,
    });
    let spans = vec![
        good.clone(),
        simple_span(vec![0; 16], vec![2; 8]),
        simple_span(vec![1; 8], vec![2; 8]),
        simple_span(vec![1; 16], vec![0; 8]),
        bad_kind,
        backwards,
        bad_parent,
        bad_status,
    ];
    let mut builder = SpansBuilder::default();
    let window = Acceptance {
        min_start_unix_nano: DAY_START as i64,
        max_start_unix_nano: (DAY_START + DAY_NS) as i64,
    };
    let rejected = builder.append_request(&request_of(spans), &window);
    assert_eq!(rejected.count, 7);
    assert_eq!(builder.len(), 1);
    let message = rejected.message();
    assert!(
        message.contains("2 span(s) rejected: trace_id must be 16 bytes"),
        "{message}"
    );
    assert!(message.contains("kind must be"), "{message}");

    let mut late = good;
    late.start_time_unix_nano = DAY_START + 2 * DAY_NS;
    late.end_time_unix_nano = late.start_time_unix_nano;
    let rejected = builder.append_request(&request_of(vec![late]), &window);
    assert_eq!(rejected.reasons, vec![(Rejection::StartOutsideWindow, 1)]);
}
