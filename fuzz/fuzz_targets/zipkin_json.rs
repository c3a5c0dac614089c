//! Zipkin v2 JSON (`POST /api/v2/spans`, application/json).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = tracelake_protocols::zipkin::from_json(data) {
        tracelake_fuzz::store(&request);
    }
});
