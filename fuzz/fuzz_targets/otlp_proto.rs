//! OTLP protobuf `ExportTraceServiceRequest` (gRPC and `POST /v1/traces`),
//! decoded straight into Arrow as the receivers do
//! (`tracelake_protocols::otlp_proto`), against the reference: prost, then
//! `SpansBuilder::append_request`. Both must refuse the same bodies and
//! write the same rows.
#![no_main]

use libfuzzer_sys::fuzz_target;

use prost::Message as _;
use tracelake_protocols::{Sink, otlp_proto};
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::otlp::{Acceptance, SpansBuilder};

fuzz_target!(|data: &[u8]| {
    let reference = ExportTraceServiceRequest::decode(data).ok().map(|request| {
        tracelake_fuzz::store(&request);
        let mut builder = SpansBuilder::default();
        let rejections = builder.append_request(&request, &Acceptance::ANY_TIME);
        builder.try_finish().ok().map(|batch| (batch, rejections))
    });
    let mut builder = SpansBuilder::default();
    let mut sink = Sink::new(&mut builder, Acceptance::ANY_TIME);
    let direct = otlp_proto::decode_into(data, &mut sink)
        .ok()
        .map(|()| sink.rejections);
    // The inner `None`: refused whole as too large once decoded.
    let direct = direct.map(|rejections| builder.try_finish().ok().map(|batch| (batch, rejections)));
    assert_eq!(
        direct.is_some(),
        reference.is_some(),
        "direct decoder and prost disagree on whether the body decodes"
    );
    assert_eq!(
        direct, reference,
        "direct decoder wrote other rows than prost"
    );
});
