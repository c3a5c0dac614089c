//! The HTTP API surfaces, each a router over the read model (`search`,
//! `trace`, `analytics`) and the engine: [`v1`] the native `/api/v1` routes
//! (and the error envelopes the others share), [`zipkin`] Zipkin's v2 API,
//! [`jaeger`] Jaeger's v1 and api_v3, [`tempo`] Tempo's API with TraceQL
//! search.

pub mod error;
pub mod jaeger;
pub mod tempo;
pub mod v1;
pub mod zipkin;

#[cfg(test)]
mod tests;
