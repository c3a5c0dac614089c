//! The read side of tracelake: a DataFusion session over the `spans` table
//! (the Delta table unioned with the collector's unflushed buffer) and the
//! HTTP APIs built on it.
//!
//! [`executor`] runs every query's CPU work on threads of its own, with
//! admission control and one deadline per request;
//! [`engine::QueryEngine`] owns the session and the limits; [`table`] the
//! `spans` provider; [`analysis`] the span tree, clock skew, self time and
//! critical path (pure); [`trace`] trace by id; [`search`] services,
//! operations and search; [`analytics`] RED metrics, dependencies and the
//! cross-trace breakdown; [`sql`] the parsed parameters (from
//! `tracelake_protocols::params`) as SQL conditions; [`traceql`] TraceQL
//! compiled to SQL and evaluated per trace. Over them the API surfaces:
//! [`http`] (the native `/api/v1` routes and the Zipkin, Jaeger and Tempo
//! compatibility APIs) and [`flight`] (Arrow Flight SQL).

pub mod analysis;
pub mod analytics;
pub mod dedicated;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod executor;
pub mod fetch;
pub mod flight;
pub mod http;
mod map_keys;
pub mod peers;
pub mod scan;
pub mod search;
pub mod sql;
pub mod streaming;
pub mod string_groups;
pub mod table;
pub mod trace;
pub mod trace_index;
pub mod traceql;
pub mod udf;

#[cfg(test)]
mod slt;
#[cfg(test)]
mod testing;

pub use engine::{QueryConfig, QueryEngine, QueryError};
pub use executor::{Class, ExecutorConfig};
pub use table::{LiveSnapshot, LiveSpans};
