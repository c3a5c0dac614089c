//! The spans schema of tracelake and the conversions into and out of it.
//!
//! Sits at the start of the data flow: receivers decode their protocol into
//! the OTLP model (`tracelake-protocols`) and [`otlp::SpansBuilder`] writes
//! it into Arrow; the query APIs read rows back with [`model::SpanRows`].
//! Pure: no I/O, no async, so everything here is tested as plain functions.

pub mod attributes;
pub mod layout;
pub mod live;
pub mod model;
pub mod otlp;
pub mod spans;
pub mod trace_keys;
pub mod upgrade;

pub use opentelemetry_proto;
