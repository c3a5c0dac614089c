use arrow_array::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use proptest::prelude::*;
use prost::Message as _;
use tracelake_schema::otlp::arbitrary::{DAY_NS, DAY_START, kv, request, roughen};
use tracelake_schema::otlp::{Acceptance, Rejections, SpansBuilder};

use super::*;

/// Half the generated day: spans in the other half are rejected.
const WINDOW: Acceptance = Acceptance {
    min_start_unix_nano: DAY_START as i64,
    max_start_unix_nano: (DAY_START + DAY_NS / 2) as i64,
};

/// The reference: prost, then `SpansBuilder::append_request`.
fn reference(body: &[u8]) -> Option<(RecordBatch, Rejections)> {
    let request = ExportTraceServiceRequest::decode(body).ok()?;
    let mut builder = SpansBuilder::default();
    let rejections = builder.append_request(&request, &WINDOW);
    Some((builder.finish(), rejections))
}

fn direct(body: &[u8]) -> Option<(RecordBatch, Rejections)> {
    direct_in(body, WINDOW)
}

fn direct_in(body: &[u8], window: Acceptance) -> Option<(RecordBatch, Rejections)> {
    let mut builder = SpansBuilder::default();
    let mut sink = Sink::new(&mut builder, window);
    decode_into(body, &mut sink).ok()?;
    let rejections = sink.rejections;
    Some((builder.finish(), rejections))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn writes_what_prost_and_append_request_write(request in request(), seed in any::<u64>()) {
        let body = roughen(request, seed).encode_to_vec();
        let expected = reference(&body).expect("prost decodes what it encoded");
        let got = direct(&body).expect("the direct decoder decodes it too");
        prop_assert_eq!(got.1, expected.1);
        prop_assert_eq!(got.0, expected.0);
    }

    /// Cut or damaged bodies: both refuse, or both write the same rows.
    #[test]
    fn refuses_what_prost_refuses(
        request in request(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut body = request.encode_to_vec();
        if byte % 2 == 0 {
            let i = flip.index(body.len());
            body[i] = byte;
        } else {
            body.truncate(cut.index(body.len()));
        }
        prop_assert_eq!(direct(&body), reference(&body));
    }
}

#[test]
fn repeated_singular_messages_merge_as_protobuf_requires() {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        start_time_unix_nano: DAY_START + 1,
        end_time_unix_nano: DAY_START + 2,
        status: Some(Status {
            message: "first".into(),
            code: 2,
        }),
        ..Default::default()
    };
    let resource = |name: &str| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv(name, Any::BoolValue(true))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![span.clone()],
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    // Two encodings of a message concatenated are one message: its
    // resource, span lists and (through a second status) statuses merge.
    let mut merged = resource("a").encode_to_vec();
    let mut second = resource("b");
    second.scope_spans[0].spans[0].status = Some(Status {
        message: String::new(),
        code: 1,
    });
    merged.extend(second.encode_to_vec());
    let mut body = vec![0x0a];
    prost::encode_length_delimiter(merged.len(), &mut body).unwrap();
    body.extend(merged);
    let expected = reference(&body).unwrap();
    assert_eq!(expected.0.num_rows(), 2);
    assert_eq!(direct(&body).unwrap(), expected);
}

#[test]
fn errors_name_the_offset() {
    let err = decode_into(
        &[0x0a, 0x05, 0x01],
        &mut Sink::new(&mut SpansBuilder::default(), WINDOW),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid protobuf: length past the end of the message at byte 2"
    );
    let err = decode_into(
        &[0x0a, 0x02, 0x12, 0x00, 0x00],
        &mut Sink::new(&mut SpansBuilder::default(), WINDOW),
    );
    assert!(err.is_err());
    // A string that is not UTF-8 (a span name).
    let span = [0x2a, 0x01, 0xff];
    let mut ss = vec![0x12, span.len() as u8];
    ss.extend(span);
    let mut rs = vec![0x12, ss.len() as u8];
    rs.extend(ss);
    let mut body = vec![0x0a, rs.len() as u8];
    body.extend(rs);
    assert_eq!(reference(&body), None);
    let err = decode_into(&body, &mut Sink::new(&mut SpansBuilder::default(), WINDOW)).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    // Field 1 of the request as a varint: prost refuses the wire type
    // (found by the otlp_proto fuzz target, docs/fuzzing.md finding 4).
    assert_eq!(reference(&[0x08, 0x08]), None);
    assert_eq!(direct(&[0x08, 0x08]), None);
}

/// The public OTLP/JSON samples (`../shared/fixtures`), as the protobuf an
/// exporter would send for them: the direct decoder writes what prost and
/// `append_request` write.
#[test]
fn the_shared_otlp_samples_as_protobuf_decode_as_prost_does() {
    for (name, json) in crate::otlp_json::shared_otlp_samples() {
        let request = crate::otlp_json::decode_request(&json).unwrap();
        let mut builder = SpansBuilder::default();
        let rejections = builder.append_request(&request, &Acceptance::ANY_TIME);
        let expected = (builder.finish(), rejections);
        assert!(expected.0.num_rows() > 0, "{name}: no span decoded");
        let body = request.encode_to_vec();
        assert_eq!(
            direct_in(&body, Acceptance::ANY_TIME),
            Some(expected),
            "{name}: the direct decoder wrote other rows than prost"
        );
    }
}

/// Appends `field` as a length-delimited field holding `payload`.
fn put(out: &mut Vec<u8>, field: u32, payload: &[u8]) {
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A request of one span whose attribute value is an `arrayValue` nested
/// `depth` levels, written outside in (each level's length known first),
/// so that no step recurses.
fn nested_attribute(depth: usize) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let inner = [0x18, 0x01]; // AnyValue { int_value: 1 }
    // levels[i]: the lengths of the ArrayValue holding the AnyValue nested
    // i levels deep, and of the AnyValue around that ArrayValue.
    let mut levels: Vec<(usize, usize)> = Vec::with_capacity(depth);
    let mut any = inner.len();
    for _ in 0..depth {
        let array = 1 + encoded_len_varint(any as u64) + any;
        levels.push((array, any));
        any = 1 + encoded_len_varint(array as u64) + array;
    }
    let mut value = Vec::with_capacity(any);
    for &(array, held) in levels.iter().rev() {
        encode_key(5, WireType::LengthDelimited, &mut value);
        encode_varint(array as u64, &mut value);
        encode_key(1, WireType::LengthDelimited, &mut value);
        encode_varint(held as u64, &mut value);
    }
    value.extend_from_slice(&inner);
    assert_eq!(value.len(), any);
    let mut attribute = Vec::new();
    put(&mut attribute, 1, b"k");
    put(&mut attribute, 2, &value);
    let mut span = Vec::new();
    put(&mut span, 1, &[1; 16]);
    put(&mut span, 2, &[2; 8]);
    put(&mut span, 5, b"x");
    prost::encoding::fixed64::encode(7, &(DAY_START + 1), &mut span);
    prost::encoding::fixed64::encode(8, &(DAY_START + 2), &mut span);
    put(&mut span, 9, &attribute);
    let mut scope = Vec::new();
    put(&mut scope, 2, &span);
    let mut resource = Vec::new();
    put(&mut resource, 2, &scope);
    let mut request = Vec::new();
    put(&mut request, 1, &resource);
    request
}

/// A hostile body nesting attribute values without end is refused with an
/// error, not a stack overflow (nested values go to prost, whose recursion
/// limit is 100); values nested within it are written as prost writes them.
#[test]
fn values_nested_without_end_are_refused_with_an_error() {
    let within = nested_attribute(40);
    let got = direct(&within).expect("40 levels are taken");
    assert_eq!(got.0.num_rows(), 1);
    assert_eq!(Some(got), reference(&within));
    for depth in [150, 200_000] {
        let body = nested_attribute(depth);
        let mut builder = SpansBuilder::default();
        let mut sink = Sink::new(&mut builder, WINDOW);
        let err = decode_into(&body, &mut sink).unwrap_err().to_string();
        assert!(err.contains("invalid array value"), "{depth}: {err}");
        assert_eq!(reference(&body), None, "{depth}");
    }
}

/// A resource's columns, written once for all its rows and copied, read
/// back row by row: the rows of two scopes (one span rejected), a key
/// repeated (its last value, where it first appeared), values of every
/// kind that the map keeps as text or null, and a dedicated column.
#[test]
fn every_row_of_a_resource_carries_its_attributes() {
    use arrow_array::{Array as _, MapArray, StringArray};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use tracelake_schema::attributes::decode;
    use tracelake_schema::spans::{RESOURCE_ATTRIBUTE_TYPES, RESOURCE_ATTRIBUTES, SERVICE_NAME};

    let span = |id: u8, start: u64| Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1,
        ..Default::default()
    };
    let late = DAY_START + DAY_NS - 1;
    let attributes = vec![
        kv("service.name", Any::StringValue("checkout".into())),
        kv("host.name", Any::StringValue("first".into())),
        kv("cloud.region", Any::StringValue("eu-west-1".into())),
        kv("pid", Any::IntValue(4242)),
        kv("ratio", Any::DoubleValue(0.5)),
        KeyValue {
            key: "absent".into(),
            value: None,
            key_strindex: 0,
        },
        KeyValue {
            key: "empty".into(),
            value: Some(AnyValue { value: None }),
            key_strindex: 0,
        },
        kv("host.name", Any::StringValue("last".into())),
    ];
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: attributes.clone(),
                ..Default::default()
            }),
            scope_spans: vec![
                ScopeSpans {
                    spans: vec![
                        span(1, DAY_START + 1),
                        span(2, late),
                        span(3, DAY_START + 3),
                    ],
                    ..Default::default()
                },
                ScopeSpans {
                    spans: vec![span(4, DAY_START + 4)],
                    ..Default::default()
                },
            ],
            schema_url: String::new(),
        }],
    };
    let body = request.encode_to_vec();
    let (batch, rejections) = direct(&body).unwrap();
    assert_eq!(batch.num_rows(), 3, "{rejections:?}");
    assert_eq!(reference(&body).unwrap().0, batch);

    // What a reader gets back: each key once, the repeated one's last
    // value where it first appeared; cloud.region in its own column, not
    // in the map (service.name is in both).
    let mut expected: Vec<KeyValue> = attributes[..7].to_vec();
    expected[1] = attributes[7].clone();
    expected.retain(|kv| kv.key != "cloud.region");
    let (values, types) = (
        column::<MapArray>(&batch, RESOURCE_ATTRIBUTES),
        column::<MapArray>(&batch, RESOURCE_ATTRIBUTE_TYPES),
    );
    let (service, region) = (
        column::<StringArray>(&batch, SERVICE_NAME),
        column::<StringArray>(&batch, "resource_cloud_region"),
    );
    for row in 0..batch.num_rows() {
        assert_eq!(
            decode(&values, Some(&types), row).unwrap(),
            expected,
            "row {row}"
        );
        assert_eq!(service.value(row), "checkout");
        assert!(!region.is_null(row));
        assert_eq!(region.value(row), "eu-west-1");
    }
}

/// Column `name` of `batch` as its array type.
fn column<T: arrow_array::Array + Clone + 'static>(batch: &RecordBatch, name: &str) -> T {
    batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
        .clone()
}
