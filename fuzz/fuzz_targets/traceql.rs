//! TraceQL (Tempo's `/api/search?q=` and metrics queries) and Tempo's legacy search `tags`,
//! parsed as the Tempo API does. The parsers may refuse any text with an
//! error (TraceQL's with a position inside the text), but never panic; what
//! they accept walks without panicking too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelake_protocols::traceql;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let walk = |query: traceql::Query| {
        for cond in query.spansets() {
            let mut comparisons = Vec::new();
            cond.span_comparisons(&mut comparisons);
        }
    };
    match traceql::parse(text) {
        Ok(query) => walk(query),
        Err(e) => {
            assert!(e.at <= text.len(), "error position {} past the end", e.at);
            let _ = e.to_string();
        }
    }
    match traceql::parse_pipeline(text) {
        Ok(pipeline) => walk(pipeline.query),
        Err(e) => assert!(e.at <= text.len(), "error position {} past the end", e.at),
    }
    match traceql::parse_metrics(text) {
        Ok(metrics) => {
            walk(metrics.filter);
            let _ = (metrics.function.name(), metrics.function.field());
        }
        Err(e) => assert!(e.at <= text.len(), "error position {} past the end", e.at),
    }
    if let Ok(query) = traceql::legacy_tags(text) {
        walk(query);
    }
});
