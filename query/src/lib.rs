//! The read side of tracelake: a DataFusion session over the `spans` table
//! (the Delta table unioned with the collector's unflushed buffer) and the
//! HTTP APIs built on it.
//!
//! [`engine::QueryEngine`] owns the session and the limits; [`table`] the
//! `spans` provider; [`trace`] trace assembly; [`api`] the `/api/v1` routes.

pub mod api;
pub mod engine;
pub mod table;
pub mod trace;

pub use engine::{QueryConfig, QueryEngine, QueryError};
pub use table::{LiveSnapshot, LiveSpans};
