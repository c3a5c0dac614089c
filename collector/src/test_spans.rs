//! Spans for the crate's unit tests.

use arrow::record_batch::RecordBatch;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracelake_schema::otlp::{Acceptance, SpansBuilder};

/// `spans` under one empty resource and scope, as the batch ingest makes.
pub(crate) fn batch(spans: Vec<Span>) -> RecordBatch {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut builder =
        SpansBuilder::with_capacity(request.resource_spans[0].scope_spans[0].spans.len());
    builder.append_request(&request, &Acceptance::ANY_TIME);
    builder.finish()
}
