//! tracelake's benchmark tools: a deterministic workload generator
//! ([`workload`]) and an OTLP load driver ([`driver`]); the binary
//! `tracelake-bench` runs them from the command line.

pub mod driver;
pub mod workload;
