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

/// Held by the tests of rows too large for one array, which take 2.5-4.5
/// GiB each: one at a time, not as many as the test threads.
pub(crate) static LARGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `rows` spans of trace `trace`, from 2025-12-05 02:00 UTC on, each
/// with a string attribute of `value_bytes` bytes (in the long-tail map).
pub(crate) fn large(trace: u8, rows: usize, value_bytes: usize) -> RecordBatch {
    use tracelake_schema::opentelemetry_proto::tonic::common::v1::any_value::Value;
    use tracelake_schema::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

    let value = "x".repeat(value_bytes);
    let spans = (0..rows as u64)
        .map(|i| Span {
            trace_id: [trace; 16].to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "upload".into(),
            start_time_unix_nano: 1_764_900_000_000_000_000 + i,
            end_time_unix_nano: 1_764_900_000_000_000_010 + i,
            attributes: vec![KeyValue {
                key: "request.body".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(value.clone())),
                }),
                key_strindex: 0,
            }],
            ..Default::default()
        })
        .collect();
    batch(spans)
}
