//! OTLP/JSON `ExportTraceServiceRequest` (`POST /v1/traces`,
//! application/json), decoded straight into Arrow as the HTTP receiver does
//! (`otlp_json::decode_into`), against the reference: the normalising serde
//! path (`decode_request`), then `SpansBuilder::append_request`. Where both
//! take a body they must write the same rows, unless the body gives a field
//! several values in one object, where the two are documented to differ
//! (`tracelake_fuzz::json_ambiguous`; see the direct decoder's module docs).
#![no_main]

use libfuzzer_sys::fuzz_target;

use tracelake_protocols::{Sink, otlp_json};
use tracelake_schema::otlp::{Acceptance, SpansBuilder};

fuzz_target!(|data: &[u8]| {
    let reference = otlp_json::decode_request(data).ok().map(|request| {
        tracelake_fuzz::store(&request);
        let mut builder = SpansBuilder::default();
        let rejections = builder.append_request(&request, &Acceptance::ANY_TIME);
        builder.try_finish().ok().map(|batch| (batch, rejections))
    });
    let mut builder = SpansBuilder::default();
    let mut sink = Sink::new(&mut builder, Acceptance::ANY_TIME);
    let direct = otlp_json::decode_into(data, &mut sink)
        .ok()
        .map(|()| sink.rejections);
    // The inner `None`: refused whole as too large once decoded.
    let direct = direct.map(|rejections| builder.try_finish().ok().map(|batch| (batch, rejections)));
    if let (Some(direct), Some(reference)) = (direct, reference)
        && !tracelake_fuzz::json_ambiguous(data)
    {
        assert_eq!(
            direct, reference,
            "direct decoder wrote other rows than the serde path"
        );
    }
});
