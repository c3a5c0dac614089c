//! End-to-end tests of the real `tracelake` binary: real OTLP clients, real
//! sockets, SIGKILL, real files on disk.

mod analytics;
mod auth;
mod bad_input;
mod browser;
mod cluster;
mod compaction;
mod crash;
mod crash_points;
mod dedicated;
mod delta_readers;
mod disk_full;
mod distributed;
mod encodings;
mod isolation;
mod jaeger;
mod kafka;
mod load;
mod otlp_clients;
mod procs;
mod python_env;
mod refusals;
mod retention;
mod s3;
mod server;
mod skip;
mod spans;
mod sql;
mod stopping;
mod tempo;
mod tenants;
mod tls;
mod traceql;
mod upgrade;
mod watch;
mod zipkin;

/// `path` in this checkout: under the directory `cargo test` names at run
/// time, so that a test binary built in another checkout (cargo reuses
/// artifacts across checkouts that share a target directory) reads this
/// checkout's files; under the one it was built in otherwise.
pub(crate) fn checkout(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()),
    )
    .join(path)
}
