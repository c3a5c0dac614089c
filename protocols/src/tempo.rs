//! Tempo's metrics responses (`tempopb`, pkg/tempopb/tempo.proto) as
//! prost messages: what `/api/metrics/query_range` and `/api/metrics/query`
//! answer to `Accept: application/protobuf`, and what their JSON form
//! mirrors. `tempopb.common.v1.KeyValue` is OTLP's `KeyValue` on the wire.

use opentelemetry_proto::tonic::common::v1::KeyValue;

/// `tempopb.QueryRangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRangeResponse {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<TimeSeries>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
    /// `PartialStatus`: 0 complete, 1 partial.
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `tempopb.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    /// Oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
}

/// `tempopb.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp_ms: i64,
}

/// `tempopb.Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp_ms: i64,
}

/// `tempopb.SearchMetrics` (the fields tracelake fills).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchMetrics {
    #[prost(uint32, tag = "1")]
    pub inspected_traces: u32,
    #[prost(uint64, tag = "2")]
    pub inspected_bytes: u64,
    #[prost(uint32, tag = "3")]
    pub total_blocks: u32,
    #[prost(uint32, tag = "4")]
    pub completed_jobs: u32,
    #[prost(uint32, tag = "5")]
    pub total_jobs: u32,
    #[prost(uint64, tag = "7")]
    pub inspected_spans: u64,
}

/// `tempopb.QueryInstantResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryInstantResponse {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<InstantSeries>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `tempopb.InstantSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstantSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<KeyValue>,
    #[prost(double, tag = "2")]
    pub value: f64,
}
