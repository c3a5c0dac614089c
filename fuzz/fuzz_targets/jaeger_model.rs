//! Jaeger's protobuf model: one `jaeger.api_v2.Span` with its process, in
//! protobuf and in protobuf's JSON mapping (the Kafka receiver's
//! `jaeger_proto` and `jaeger_json`); both decoders on each input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = tracelake_protocols::jaeger::from_model_proto(data) {
        tracelake_fuzz::store(&request);
    }
    if let Ok(request) = tracelake_protocols::jaeger::from_model_json(data) {
        tracelake_fuzz::store(&request);
    }
});
