//! What every fuzz target does with a request its decoder accepted: what the
//! collector does with it (`collector/src/ingest.rs`), then reads the rows
//! back the way the query APIs do.
//!
//! A decoder may refuse any input, but must not panic, and whatever it
//! accepts must go through the Arrow writer and come back readable.

use tracelake_schema::model;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::opentelemetry_proto::tonic::trace::v1::Span;
use tracelake_schema::otlp::{self, Acceptance, SpansBuilder};

/// Writes `request` into a spans batch and reads the batch back.
///
/// Panics when spans are lost or changed on the way: every span is either
/// written or counted as rejected, and each written span reads back with its
/// ids, name and times.
pub fn store(request: &ExportTraceServiceRequest) {
    let spans: Vec<&Span> = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let mut builder = SpansBuilder::with_capacity(spans.len());
    let rejections = builder.append_request(request, &Acceptance::ANY_TIME);
    let rows = builder.len();
    assert_eq!(
        rows as u64 + rejections.count,
        spans.len() as u64,
        "every span is written or rejected"
    );
    let batch = builder.finish();
    assert_eq!(batch.num_rows(), rows);
    assert!(builder.is_empty(), "finish resets the builder");

    let back = model::to_otlp(&[batch]).expect("a written batch reads back");
    let accepted = spans
        .iter()
        .filter(|s| otlp::validate(**s, &Acceptance::ANY_TIME).is_ok());
    let read = back
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans);
    let mut n = 0;
    for (i, (a, b)) in accepted.zip(read).enumerate() {
        n += 1;
        assert_eq!(a.trace_id, b.trace_id, "span {i}: trace_id");
        assert_eq!(a.span_id, b.span_id, "span {i}: span_id");
        assert_eq!(a.name, b.name, "span {i}: name");
        assert_eq!(
            (a.start_time_unix_nano, a.end_time_unix_nano),
            (b.start_time_unix_nano, b.end_time_unix_nano),
            "span {i}: times"
        );
    }
    assert_eq!(n, rows, "every written span reads back");
}
