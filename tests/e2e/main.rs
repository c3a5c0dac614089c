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
