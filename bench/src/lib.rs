//! tracelake's benchmark tools: a deterministic workload generator
//! ([`workload`]), an OTLP load driver ([`driver`]) and the decode-only
//! ceiling ([`ceiling`]); the binary
//! `tracelake-bench` runs them from the command line.

pub mod ceiling;
pub mod driver;
pub mod flush;
pub mod kafka;
pub mod runner;
pub mod workload;
