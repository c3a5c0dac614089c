//! Zipkin proto3 `ListOfSpans` (`POST /api/v2/spans`, application/x-protobuf).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = tracelake_protocols::zipkin::from_proto(data) {
        tracelake_fuzz::store(&request);
    }
});
