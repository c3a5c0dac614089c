//! TraceQL over the spans table: the parser is `tracelake_protocols::traceql`;
//! here span conditions become SQL ([`sql`]), the trace-level parts and the
//! spanset operators are evaluated over each candidate trace ([`eval`]),
//! and [`search`] runs a search from candidates to matching traces.

pub mod eval;
pub mod metrics;
pub mod search;
pub mod sql;

pub use tracelake_protocols::traceql::*;
