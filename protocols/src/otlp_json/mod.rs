//! OTLP/JSON both ways: request bodies in ([`decode_request`]), and spans
//! out in the protobuf JSON mapping, in OTLP's and Tempo's dialects
//! ([`traces_data_in`]).

mod decode;
mod encode;
mod into_arrow;

pub use decode::{Error, decode_request};
pub use encode::{Style, encode_response, span, traces_data, traces_data_in};
pub use into_arrow::decode_into;

/// A snake_case key in the lowerCamelCase of the proto3 JSON mapping
/// (`trace_id` -> `traceId`), as the Collector accepts both.
pub fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The OTLP/JSON requests among the public samples in `../shared/fixtures`
/// (never committed; the folder sits beside the clone). Absent, the test
/// skips with a message, except under `CI`, which always has them.
#[cfg(test)]
pub(crate) fn shared_otlp_samples() -> Vec<(&'static str, Vec<u8>)> {
    // The directory `cargo test` names at run time: a test binary built in
    // another checkout (a shared target directory) reads this one's.
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../shared/fixtures");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is absent; CI always has the shared fixtures",
            dir.display()
        );
        // Straight to stderr: libtest hides a passing test's `eprintln!`.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED: {} is absent\n", dir.display()).as_bytes(),
        );
        return Vec::new();
    }
    [
        "opentelemetry-proto_trace.json",
        "jaeger_otlp2jaeger-in.json",
    ]
    .into_iter()
    .map(|name| {
        let body = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name} in {}: {e}", dir.display()));
        (name, body)
    })
    .collect()
}
