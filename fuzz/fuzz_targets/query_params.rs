//! The query-string grammar every read API shares (`/api/v1`, Zipkin,
//! Jaeger and Tempo parameters): a raw query string, read the way the
//! handlers read it. Any parameter may be refused with a message, but
//! nothing panics, and what is accepted is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelake_protocols::params::{AttributeCondition, Params};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut p = Params::from_query(Some(text.to_string()));
    if let Ok(range) = p.time_range(3_600_000_000_000) {
        assert!(range.start <= range.end, "{range:?}");
    }
    if let Ok(filter) = p.span_filter() {
        if let (Some(min), Some(max)) = (filter.min_duration, filter.max_duration) {
            assert!(min >= 0 && max >= 0, "{min} {max}");
        }
    }
    let _ = p.limit("limit", 20, 1000);
    let _ = p.kinds("spanKind");
    let _ = p.duration("minDuration");
    let _ = p.finish();
    // Each line of the text as a condition (`attr=` values of the search API).
    for line in text.lines() {
        let _ = AttributeCondition::parse(line);
    }
    let _ = tracelake_protocols::duration::parse_nanos(text);
});
