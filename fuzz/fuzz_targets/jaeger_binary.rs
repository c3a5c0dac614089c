//! Jaeger thrift, binary protocol: a bare `Batch` (the HTTP collector's body)
//! and an `Agent.emitBatch` message (the UDP agent port), both from the same
//! bytes, as the seeds hold both shapes.
#![no_main]

use libfuzzer_sys::fuzz_target;

use tracelake_protocols::jaeger::{Protocol, from_agent_message, from_batch};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = from_batch(data, Protocol::Binary) {
        tracelake_fuzz::store(&request);
    }
    if let Ok(request) = from_agent_message(data, Protocol::Binary) {
        tracelake_fuzz::store(&request);
    }
});
