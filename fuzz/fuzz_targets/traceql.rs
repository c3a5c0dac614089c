//! TraceQL (Tempo's `/api/search?q=`), parsed as the Tempo API does. The
//! parser may refuse any text with a positioned error, but never panics;
//! what it accepts walks without panicking too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelake_protocols::traceql;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match traceql::parse(text) {
        Ok(query) => {
            for cond in query.spansets() {
                let mut comparisons = Vec::new();
                cond.span_comparisons(&mut comparisons);
            }
        }
        Err(e) => {
            assert!(e.at <= text.len(), "error position {} past the end", e.at);
            let _ = e.to_string();
        }
    }
});
