//! OTLP/JSON `ExportTraceServiceRequest` (`POST /v1/traces`,
//! application/json), decoded as the HTTP receiver does, then written to
//! Arrow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = tracelake_protocols::otlp_json::decode_request(data) {
        tracelake_fuzz::store(&request);
    }
});
