//! Zipkin v1 JSON (`POST /api/v1/spans`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = tracelake_protocols::zipkin::from_v1_json(data) {
        tracelake_fuzz::store(&request);
    }
});
