//! OTLP protobuf `ExportTraceServiceRequest` (gRPC and `POST /v1/traces`),
//! decoded with prost as the receivers do, then written to Arrow.
#![no_main]

use libfuzzer_sys::fuzz_target;

use prost::Message as _;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ExportTraceServiceRequest::decode(data) {
        tracelake_fuzz::store(&request);
    }
});
