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
    let mut builder = SpansBuilder::default();
    let mut sink = Sink::new(&mut builder, WINDOW);
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
