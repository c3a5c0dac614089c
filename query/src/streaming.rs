//! Tempo's streaming gRPC service, `tempopb.StreamingQuerier`, which
//! Grafana's Tempo data source calls when streaming is enabled: on the
//! query HTTP port (as Tempo serves it with `stream_over_http_enabled`;
//! Grafana dials the data source's host and port, path ignored, h2c).
//!
//! - `Search`: a TraceQL (or legacy tags) search whose matches are sent as
//!   each page of candidates is evaluated: every message holds the traces
//!   found since the previous one (Tempo's diffs; Grafana merges them by
//!   trace id) and the running metrics.
//! - `MetricsQueryRange`: a TraceQL metrics query, one message with the
//!   whole answer (it is one aggregation).
//!
//! The other methods answer `UNIMPLEMENTED`. The work runs on the query
//! executor under the same admission and deadline as the HTTP API; a
//! client that goes away stops it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tracelake_protocols::params::TimeRange;
use tracelake_protocols::tempo;

use crate::engine::{QueryEngine, QueryError};
use crate::executor::Class;
use crate::http::tempo::range_response;
use crate::traceql::metrics::{self, Window};
use crate::traceql::search::{Search, TraceMatch};
use crate::traceql::{self, Cond, Query};

const SEARCH: &str = "/tempopb.StreamingQuerier/Search";
const METRICS_QUERY_RANGE: &str = "/tempopb.StreamingQuerier/MetricsQueryRange";
const HOUR_NS: i64 = 3_600_000_000_000;

/// The service as an axum router (routes `/tempopb.StreamingQuerier/*`).
pub fn router(engine: Arc<QueryEngine>) -> axum::Router {
    tonic::service::Routes::new(Querier(engine)).into_axum_router()
}

#[derive(Clone)]
struct Querier(Arc<QueryEngine>);

impl NamedService for Querier {
    const NAME: &'static str = "tempopb.StreamingQuerier";
}

impl<B> Service<http::Request<B>> for Querier
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let engine = Arc::clone(&self.0);
        match request.uri().path() {
            SEARCH => Box::pin(async move {
                let mut grpc =
                    Grpc::new(ProstCodec::<tempo::SearchResponse, tempo::SearchRequest>::default());
                Ok(grpc.server_streaming(SearchMethod(engine), request).await)
            }),
            METRICS_QUERY_RANGE => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<
                    tempo::QueryRangeResponse,
                    tempo::QueryRangeRequest,
                >::default());
                Ok(grpc.server_streaming(MetricsMethod(engine), request).await)
            }),
            other => {
                let status = Status::unimplemented(format!(
                    "{other} is not served: tempopb.StreamingQuerier has Search and MetricsQueryRange here"
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The messages a task sends into `rx`, as a response stream.
fn stream_of<T: Send + 'static>(mut rx: mpsc::UnboundedReceiver<Result<T, Status>>) -> Messages<T> {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

fn status(e: QueryError) -> Status {
    crate::error::ApiError::from(e).into()
}

/// A search request as the search it asks for.
struct Asked {
    query: Query,
    stages: Vec<traceql::Stage>,
    range: TimeRange,
    limit: usize,
    spans_per_set: usize,
    min_duration: Option<i64>,
    max_duration: Option<i64>,
}

fn asked(r: &tempo::SearchRequest) -> Result<Asked, Status> {
    let bad = |m: String| Status::invalid_argument(m);
    let (query, stages) = if !r.query.is_empty() {
        if !r.tags.is_empty() {
            return Err(bad("give Query (TraceQL) or Tags, not both".into()));
        }
        let p = traceql::parse_pipeline(&r.query).map_err(|e| bad(e.to_string()))?;
        (p.query, p.stages)
    } else if !r.tags.is_empty() {
        let mut tags: Vec<_> = r.tags.iter().collect();
        tags.sort();
        let text: Vec<String> = tags
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('"', "")))
            .collect();
        let q = traceql::legacy_tags(&text.join(" ")).map_err(|e| bad(e.to_string()))?;
        (q, Vec::new())
    } else {
        (Query::Spanset(Cond::True), Vec::new())
    };
    let count = |name: &str, v: u32, default: usize| -> Result<usize, Status> {
        match v {
            0 => Ok(default),
            1..=10_000 => Ok(v as usize),
            _ => Err(bad(format!("{name} must be from 1 to 10000, got {v}"))),
        }
    };
    let range = match (r.start, r.end) {
        (0, 0) => {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            TimeRange {
                start: now - HOUR_NS,
                end: now + 1,
            }
        }
        (s, e) if e > s => TimeRange {
            start: i64::from(s) * 1_000_000_000,
            end: (i64::from(e) + 1) * 1_000_000_000,
        },
        _ => return Err(bad("end must be after start".into())),
    };
    let ms = |v: u32| (v > 0).then(|| i64::from(v) * 1_000_000);
    let (min_duration, max_duration) = (ms(r.min_duration_ms), ms(r.max_duration_ms));
    if let (Some(a), Some(b)) = (min_duration, max_duration)
        && b <= a
    {
        return Err(bad(
            "MaxDurationMs must be greater than MinDurationMs".into()
        ));
    }
    Ok(Asked {
        query,
        stages,
        range,
        limit: count("Limit", r.limit, 20)?,
        spans_per_set: count("SpansPerSpanSet", r.spans_per_span_set, 3)?,
        min_duration,
        max_duration,
    })
}

/// A found trace as `tempopb.TraceSearchMetadata`.
pub fn metadata(t: &TraceMatch) -> tempo::TraceSearchMetadata {
    let (root_service_name, root_trace_name) = match &t.root {
        Some((service, name)) => (service.clone(), name.clone()),
        None => (crate::http::tempo::NO_ROOT.to_string(), String::new()),
    };
    tempo::TraceSearchMetadata {
        trace_id: hex::encode(t.id).trim_start_matches('0').to_string(),
        root_service_name,
        root_trace_name,
        start_time_unix_nano: u64::try_from(t.start).unwrap_or_default(),
        duration_ms: u32::try_from(t.duration / 1_000_000).unwrap_or(u32::MAX),
        span_sets: vec![tempo::SpanSet {
            spans: t
                .spans
                .iter()
                .zip(&t.selected)
                .map(|(s, selected)| tempo::Span {
                    span_id: s.id_hex(),
                    name: s.name.to_string(),
                    start_time_unix_nano: u64::try_from(s.start).unwrap_or_default(),
                    duration_nanos: u64::try_from(s.duration).unwrap_or_default(),
                    attributes: crate::http::tempo::key_values(selected),
                })
                .collect(),
            matched: u32::try_from(t.matched).unwrap_or(u32::MAX),
        }],
        service_stats: t
            .services
            .iter()
            .map(|(name, spans, errors)| {
                (
                    name.clone(),
                    tempo::ServiceStats {
                        span_count: u32::try_from(*spans).unwrap_or(u32::MAX),
                        error_count: u32::try_from(*errors).unwrap_or(u32::MAX),
                    },
                )
            })
            .collect(),
    }
}

struct SearchMethod(Arc<QueryEngine>);

impl ServerStreamingService<tempo::SearchRequest> for SearchMethod {
    type Response = tempo::SearchResponse;
    type ResponseStream = Messages<tempo::SearchResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<tempo::SearchRequest>) -> Self::Future {
        let engine = Arc::clone(&self.0);
        Box::pin(async move {
            let asked = asked(request.get_ref())?;
            // Unbounded: a page is sent from inside the search, which
            // cannot wait; the messages hold at most `limit` traces.
            let (tx, rx) = mpsc::unbounded_channel();
            let sender = tx.clone();
            let work = {
                let engine = Arc::clone(&engine);
                async move {
                    let search = Search {
                        query: &asked.query,
                        stages: &asked.stages,
                        range: asked.range,
                        limit: asked.limit,
                        spans_per_set: asked.spans_per_set,
                        min_duration: asked.min_duration,
                        max_duration: asked.max_duration,
                    };
                    let mut pages = 0u32;
                    // A page's matches go out as soon as it is evaluated;
                    // a client that went away stops the search.
                    let mut on_page = |found: &[TraceMatch], inspected: usize| {
                        pages += 1;
                        let message = tempo::SearchResponse {
                            traces: found.iter().map(metadata).collect(),
                            metrics: Some(tempo::SearchMetrics {
                                inspected_traces: u32::try_from(inspected).unwrap_or(u32::MAX),
                                completed_jobs: pages,
                                total_jobs: pages,
                                ..Default::default()
                            }),
                        };
                        sender.send(Ok(message)).is_ok()
                    };
                    crate::traceql::search::run_paged(&engine, &search, &mut on_page)
                        .await
                        .map(|_| ())
                }
            };
            tokio::spawn(async move {
                let done = engine.executor().run(Class::Heavy, work).await;
                if let Err(e) = done.and_then(|r| r) {
                    let _ = tx.send(Err(status(e)));
                }
            });
            Ok(Response::new(stream_of(rx)))
        })
    }
}

struct MetricsMethod(Arc<QueryEngine>);

impl ServerStreamingService<tempo::QueryRangeRequest> for MetricsMethod {
    type Response = tempo::QueryRangeResponse;
    type ResponseStream = Messages<tempo::QueryRangeResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<tempo::QueryRangeRequest>) -> Self::Future {
        let engine = Arc::clone(&self.0);
        Box::pin(async move {
            let r = request.into_inner();
            let bad = |m: String| Status::invalid_argument(m);
            let query = traceql::parse_metrics(&r.query).map_err(|e| bad(e.to_string()))?;
            let as_ns = |v: u64, name: &str| {
                i64::try_from(v).map_err(|_| bad(format!("{name} is out of range")))
            };
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            let end = match as_ns(r.end, "end")? {
                0 => now,
                e => e,
            };
            let start = match as_ns(r.start, "start")? {
                0 => end.saturating_sub(HOUR_NS),
                s => s,
            };
            metrics::bounds(start, end).map_err(|e| bad(e.0))?;
            let step = match as_ns(r.step, "step")? {
                0 => crate::http::tempo::default_step(start, end),
                s => s,
            };
            let window = Window::range(start, end, step).map_err(|e| bad(e.0))?;
            let options = metrics::Options {
                exemplars: match r.exemplars {
                    0 => 100,
                    n => (n as usize).min(100_000),
                },
                max_series: match r.max_series {
                    0 => 1000,
                    n => (n as usize).min(100_000),
                },
            };
            let work = {
                let engine = Arc::clone(&engine);
                async move { metrics::run(&engine, &query, window, options).await }
            };
            let answer = engine
                .executor()
                .run(Class::Heavy, work)
                .await
                .map_err(status)?
                .map_err(|e| match e {
                    metrics::RunError::Unsupported(u) => bad(u.0),
                    metrics::RunError::Query(q) => status(q),
                })?;
            let message = range_response(&answer, window);
            Ok(Response::new(
                Box::pin(futures::stream::iter([Ok(message)])) as Messages<_>,
            ))
        })
    }
}
