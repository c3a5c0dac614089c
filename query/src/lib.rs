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
//! cross-trace breakdown; [`params`] the query-string parameters; [`api`]
//! the `/api/v1` routes; [`flight`] Arrow Flight SQL; [`zipkin`], [`jaeger`],
//! [`tempo`] (with [`traceql`]) the compatibility APIs.

pub mod analysis;
pub mod analytics;
pub mod api;
pub mod engine;
pub mod executor;
pub mod fetch;
pub mod flight;
pub mod jaeger;
pub mod params;
pub mod search;
pub mod table;
pub mod tempo;
pub mod trace;
pub mod trace_index;
pub mod traceql;
pub mod udf;
pub mod zipkin;

pub use engine::{QueryConfig, QueryEngine, QueryError};
pub use executor::{Class, ExecutorConfig};
pub use table::{LiveSnapshot, LiveSpans};
