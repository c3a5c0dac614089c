use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message as _;

use super::arbitrary::{DAY_NS, DAY_START, kv, request};
use super::*;
use crate::model::to_otlp;
use crate::spans;

/// Proto3 treats an absent message as its default: the canonical form of a
/// request has every resource, scope and status present. Attributes are a
/// map in OTLP (keys unique, order without meaning) and dedicated columns
/// come back after the map's entries: the canonical form orders a span's
/// and a resource's attributes by key.
fn canonical(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for rs in &mut request.resource_spans {
        rs.resource
            .get_or_insert_with(Resource::default)
            .attributes
            .sort_by(|a, b| a.key.cmp(&b.key));
        for ss in &mut rs.scope_spans {
            ss.scope.get_or_insert_with(InstrumentationScope::default);
            for span in &mut ss.spans {
                span.status.get_or_insert_with(Status::default);
                span.attributes.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
    }
    request
}

fn roundtrip(
    request: &ExportTraceServiceRequest,
    layout: &Arc<Layout>,
) -> ExportTraceServiceRequest {
    let mut builder = SpansBuilder::for_layout(Arc::clone(layout), 16);
    let rejected = builder.append_request(request, &Acceptance::ANY_TIME);
    assert_eq!(rejected.count, 0, "{}", rejected.message());
    let batch = builder.finish();
    to_otlp(&[batch]).unwrap()
}

fn assert_identity(request: ExportTraceServiceRequest) {
    assert_identity_in(request, Layout::standard());
}

/// A layout with configured columns for keys [`request`] generates: a
/// string and an integer column per set, of keys that have no built-in
/// column there.
fn configured_layout() -> Arc<Layout> {
    use crate::layout::{AttributeSet, Configured};
    // The sets interleaved, as columns added over time are.
    Layout::new(vec![
        Configured::text(AttributeSet::Resource, "thread.name"),
        Configured::text(AttributeSet::Span, "k"),
        Configured::int(AttributeSet::Resource, "k"),
        Configured::int(AttributeSet::Span, "k8s.namespace.name"),
    ])
    .unwrap()
}

fn assert_identity_in(request: ExportTraceServiceRequest, layout: &Arc<Layout>) {
    let back = canonical(roundtrip(&request, layout));
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

    #[test]
    fn otlp_to_arrow_to_otlp_is_identity_with_configured_columns(request in request()) {
        assert_identity_in(request, &configured_layout());
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
fn dedicated_columns_and_partition_are_filled() {
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
    // Each key has its own column, and is then not in the map.
    assert_eq!(
        col("http_request_method").as_string::<i32>().value(0),
        "POST"
    );
    assert_eq!(col("http_method").as_string::<i32>().value(0), "GET");
    let map = col(spans::SPAN_ATTRIBUTES).as_map().value(0);
    let keys: Vec<&str> = map.column(0).as_string::<i32>().iter().flatten().collect();
    assert_eq!(keys, ["double"]);
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

#[test]
fn a_dedicated_key_of_another_type_stays_in_the_map() {
    let mut span = simple_span(vec![1; 16], vec![2; 8]);
    span.attributes = vec![
        kv(
            "http.response.status_code",
            Value::StringValue("200".into()),
        ),
        kv("http.route", Value::StringValue("/old".into())),
        kv("server.port", Value::IntValue(8080)),
        // A repeated key: the last value counts, as in the map.
        kv("http.route", Value::StringValue("/new".into())),
        kv("thread.name", Value::IntValue(7)),
    ];
    let request = request_of(vec![span]);
    let mut builder = SpansBuilder::default();
    builder.append_request(&request, &Acceptance::ANY_TIME);
    let batch = builder.finish();
    let col = |name| batch.column_by_name(name).unwrap();
    assert!(col("http_response_status_code").is_null(0));
    assert_eq!(col("http_route").as_string::<i32>().value(0), "/new");
    assert_eq!(
        col("server_port").as_primitive::<Int64Type>().value(0),
        8080
    );
    assert!(col("thread_name").is_null(0));
    let map = col(spans::SPAN_ATTRIBUTES).as_map().value(0);
    let keys: Vec<&str> = map.column(0).as_string::<i32>().iter().flatten().collect();
    assert_eq!(keys, ["http.response.status_code", "thread.name"]);
    let back = to_otlp(&[batch]).unwrap();
    let mut attrs = back.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .clone();
    attrs.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<(&str, &Option<Value>)> = attrs
        .iter()
        .map(|kv| (kv.key.as_str(), &kv.value.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        keys,
        [
            (
                "http.response.status_code",
                &Some(Value::StringValue("200".into()))
            ),
            ("http.route", &Some(Value::StringValue("/new".into()))),
            ("server.port", &Some(Value::IntValue(8080))),
            ("thread.name", &Some(Value::IntValue(7))),
        ]
    );
}

#[test]
fn configured_columns_take_their_keys_out_of_the_map() {
    let layout = configured_layout();
    let mut span = simple_span(vec![1; 16], vec![2; 8]);
    span.attributes = vec![
        kv("k", Value::StringValue("acme".into())),
        // The integer column's key with a string value stays in the map.
        kv("k8s.namespace.name", Value::StringValue("shop".into())),
        kv("http.route", Value::StringValue("/cart".into())),
    ];
    let mut request = request_of(vec![span]);
    request.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .extend([
            kv("k", Value::IntValue(3)),
            kv("thread.name", Value::StringValue("main".into())),
        ]);
    let mut builder = SpansBuilder::for_layout(Arc::clone(&layout), 4);
    builder.append_request(&request, &Acceptance::ANY_TIME);
    let batch = builder.finish();
    assert_eq!(batch.schema_ref(), layout.schema());
    let col = |name: &str| Arc::clone(batch.column_by_name(name).unwrap());
    assert_eq!(col("span_k").as_string::<i32>().value(0), "acme");
    assert!(col("span_k8s_namespace_name").is_null(0));
    assert_eq!(col("http_route").as_string::<i32>().value(0), "/cart");
    assert_eq!(col("resource_k").as_primitive::<Int64Type>().value(0), 3);
    assert_eq!(
        col("resource_thread_name").as_string::<i32>().value(0),
        "main"
    );
    let keys = |map: &str| -> Vec<String> {
        let map = col(map).as_map().value(0);
        map.column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(String::from)
            .collect()
    };
    assert_eq!(keys(spans::SPAN_ATTRIBUTES), ["k8s.namespace.name"]);
    assert_eq!(keys(spans::RESOURCE_ATTRIBUTES), ["service.name"]);
    // Read back with the keys (from the columns' metadata), and in the
    // standard layout (a table without the columns) the keys stay in the
    // map.
    for layout in [layout, Arc::clone(Layout::standard())] {
        assert_identity_in(request.clone(), &layout);
    }
}

/// The builder plans a context's resource once, for span after span; a
/// context it meets again after another gets its own plan back, a context
/// made from the same kind of values but other attributes never takes one
/// made for another, and a failed span changes nothing.
#[test]
fn each_row_takes_the_resource_and_scope_of_its_own_context() {
    use view::{Context, ResourceRef, ScopeRef};
    let text = |s: &str| Value::StringValue(s.into());
    // `service.namespace` and `k8s.cluster.name` have resource columns;
    // `b`'s namespace is an integer (it stays in the map), its name is the
    // second key, and it repeats `host.name`.
    let a = [
        kv("service.name", text("a")),
        kv("service.namespace", text("ns-a")),
        kv("host.name", text("host-a")),
    ];
    let b = [
        kv("host.name", text("host-b0")),
        kv("service.name", text("b")),
        kv("service.namespace", Value::IntValue(7)),
        kv("k8s.cluster.name", text("cluster-b")),
        kv("host.name", text("host-b")),
    ];
    // `b`'s scope repeats a key as well; `a`'s has no attributes.
    let scope_b = [
        kv("lib", text("old")),
        kv("pool", Value::IntValue(3)),
        kv("lib", text("b-lib")),
    ];
    let context = |attributes, scope_attributes| {
        Context::new(
            ResourceRef {
                attributes,
                dropped_attributes_count: 0,
                schema_url: "",
            },
            ScopeRef {
                name: "scope",
                version: "",
                attributes: scope_attributes,
                dropped_attributes_count: 0,
                schema_url: "",
            },
        )
    };
    let (cx_a, cx_b) = (context(&a[..], &[][..]), context(&b[..], &scope_b[..]));
    let mut builder = SpansBuilder::default();
    let mut bad = simple_span(vec![1; 16], vec![9; 8]);
    bad.trace_id = vec![0; 16];
    let order = [&cx_a, &cx_a, &cx_b, &cx_b, &cx_a, &cx_b];
    for (i, cx) in order.iter().enumerate() {
        let span = simple_span(vec![1; 16], vec![i as u8 + 1; 8]);
        builder
            .append_span(&span, cx, &Acceptance::ANY_TIME)
            .unwrap();
        assert!(
            builder
                .append_span(&bad, cx, &Acceptance::ANY_TIME)
                .is_err()
        );
    }
    // A context of its own for every span, over one set of attributes.
    for _ in 0..2 {
        let span = simple_span(vec![1; 16], vec![7; 8]);
        builder
            .append_span(&span, &context(&b[..], &scope_b[..]), &Acceptance::ANY_TIME)
            .unwrap();
    }
    let batch = builder.finish();
    let col = |name| batch.column_by_name(name).unwrap();
    let strings = |name| -> Vec<Option<String>> {
        col(name)
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    };
    let is_a = [true, true, false, false, true, false, false, false];
    let pick = |a: Option<&str>, b: Option<&str>| -> Vec<Option<String>> {
        is_a.iter()
            .map(|&x| if x { a } else { b }.map(str::to_string))
            .collect()
    };
    assert_eq!(strings(spans::SERVICE_NAME), pick(Some("a"), Some("b")));
    assert_eq!(
        strings("resource_service_namespace"),
        pick(Some("ns-a"), None)
    );
    assert_eq!(
        strings("resource_k8s_cluster_name"),
        pick(None, Some("cluster-b"))
    );
    let maps = col(spans::RESOURCE_ATTRIBUTES).as_map();
    fn texts(column: &dyn arrow_array::Array) -> Vec<&str> {
        column.as_string::<i32>().iter().flatten().collect()
    }
    for (row, &x) in is_a.iter().enumerate() {
        let entries = maps.value(row);
        let (keys, values) = (texts(entries.column(0)), texts(entries.column(1)));
        if x {
            assert_eq!(
                (keys, values),
                (vec!["service.name", "host.name"], vec!["a", "host-a"]),
                "row {row}"
            );
        } else {
            // Each key once, where it first appeared, with its last value.
            assert_eq!(
                (keys, values),
                (
                    vec!["host.name", "service.name", "service.namespace"],
                    vec!["host-b", "b", "7"]
                ),
                "row {row}"
            );
        }
    }
    let scopes = col(spans::SCOPE_ATTRIBUTES).as_map();
    let scope_types = col(spans::SCOPE_ATTRIBUTE_TYPES).as_map();
    for (row, &x) in is_a.iter().enumerate() {
        let entries = scopes.value(row);
        let (keys, values) = (texts(entries.column(0)), texts(entries.column(1)));
        let typed_entries = scope_types.value(row);
        let typed = texts(typed_entries.column(0));
        if x {
            assert!(keys.is_empty() && typed.is_empty(), "row {row}");
        } else {
            assert_eq!(
                (keys, values, typed),
                (vec!["lib", "pool"], vec!["b-lib", "3"], vec!["pool"]),
                "row {row}"
            );
        }
    }
}

/// A request of spans whose copies of their resource and scope
/// ([`MAX_REPEATED_BYTES`]) go over the limit (or would, for the next
/// group): nothing more is written, `try_finish` says so and drops the
/// rows, and the builder takes the next request as a fresh one.
#[test]
fn rows_over_the_limit_on_copies_are_refused_and_the_builder_starts_afresh() {
    let big = "v".repeat(1000);
    let with = |resource: &str, scope: &str, spans: usize| {
        let spans = (0..spans)
            .map(|i| simple_span(vec![1; 16], (i as u64 + 1).to_be_bytes().to_vec()))
            .collect();
        let mut request = request_of(spans);
        let rs = &mut request.resource_spans[0];
        rs.resource
            .as_mut()
            .unwrap()
            .attributes
            .push(kv("big", Value::StringValue(resource.into())));
        rs.scope_spans[0].scope = Some(InstrumentationScope {
            attributes: vec![kv("big", Value::StringValue(scope.into()))],
            ..Default::default()
        });
        request
    };
    let mut builder = SpansBuilder::default();
    builder.limit_repeated_bytes(50_000);
    // 40 spans copy about 40 kB of either: under the limit.
    for request in [with(&big, "", 40), with("", &big, 40)] {
        builder.append_request(&request, &Acceptance::ANY_TIME);
        assert_eq!(builder.try_finish().unwrap().num_rows(), 40);
    }
    // 60 spans, span by span through one context: over it at the 50th or
    // so, by the resource's copies and then by the scope's.
    for request in [with(&big, "", 60), with("", &big, 60)] {
        builder.append_request(&request, &Acceptance::ANY_TIME);
        assert!(builder.len() < 55, "{} rows written", builder.len());
        let err = builder.try_finish().unwrap_err();
        assert_eq!(err.limit, 50_000);
        assert!(err.needed > 50_000, "{err:?}");
        assert!(err.to_string().contains("send fewer spans"), "{err}");
        assert!(builder.is_empty());
        // Afresh, under the same limit.
        builder.append_request(&with(&big, "", 3), &Acceptance::ANY_TIME);
        assert_eq!(builder.try_finish().unwrap().num_rows(), 3);
    }
    // One resource over 60 scopes of a span each (the Jaeger receiver
    // makes a scope per `otel.scope.name`): each row writes the resource
    // as the request holds it, charged all the same.
    let mut request = with(&big, "", 60);
    let spans = std::mem::take(&mut request.resource_spans[0].scope_spans[0].spans);
    request.resource_spans[0].scope_spans = spans
        .into_iter()
        .map(|span| ScopeSpans {
            spans: vec![span],
            ..Default::default()
        })
        .collect();
    builder.append_request(&request, &Acceptance::ANY_TIME);
    assert!(builder.len() < 55, "{} rows written", builder.len());
    assert!(builder.try_finish().is_err());
    // A group written at once (as the decoders of request bodies do):
    // refused before anything is copied.
    let resource = [kv("big", Value::StringValue(big.clone()))];
    let resource = view::ResourceRef {
        attributes: &resource[..],
        dropped_attributes_count: 0,
        schema_url: "",
    };
    for _ in 0..60 {
        let span = simple_span(vec![1; 16], vec![2; 8]);
        builder
            .append_span_columns(&span, &Acceptance::ANY_TIME)
            .unwrap();
    }
    builder.append_resource_columns(&resource, 60);
    assert!(builder.try_finish().is_err());
}

/// The hard case at the real limit: a 1 MiB resource over 2,100 spans would
/// copy 2.1 GiB, past the 2 GiB that a column's 32-bit offsets address
/// (before the limit, the builder panicked there). Refused, whether the
/// copies come span by span or as one group.
#[test]
fn copies_past_32_bit_offsets_are_refused_not_a_panic() {
    let resource = [
        kv("service.name", Value::StringValue("big".into())),
        kv("blob", Value::StringValue("r".repeat(1 << 20))),
    ];
    let scope = InstrumentationScope::default();
    let cx = view::Context::new(
        view::ResourceRef {
            attributes: &resource[..],
            dropped_attributes_count: 0,
            schema_url: "",
        },
        view::ScopeRef {
            name: &scope.name,
            version: &scope.version,
            attributes: &scope.attributes,
            dropped_attributes_count: 0,
            schema_url: "",
        },
    );
    let span = simple_span(vec![1; 16], vec![2; 8]);
    let mut builder = SpansBuilder::default();
    for _ in 0..2_100 {
        builder
            .append_span(&span, &cx, &Acceptance::ANY_TIME)
            .unwrap();
    }
    let err = builder.try_finish().unwrap_err();
    assert_eq!(err.limit, MAX_REPEATED_BYTES);
    for _ in 0..2_100 {
        builder
            .append_span_columns(&span, &Acceptance::ANY_TIME)
            .unwrap();
    }
    builder.append_resource_columns(&cx.resource, 2_100);
    assert!(builder.try_finish().is_err());
}
