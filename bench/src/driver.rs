//! The load driver: sends a pre-generated pool of OTLP requests over HTTP
//! (protobuf) or gRPC with N concurrent streams, for a span count or a
//! duration, and measures acknowledged spans/s, MB/s, acknowledgement
//! latency and rejections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde_json::{Value, json};

use crate::workload::{Generator, Topology};

/// What to send and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// `http://host:4318` (OTLP/HTTP protobuf) or `grpc://host:4317`.
    pub endpoint: String,
    pub streams: usize,
    /// Stop after this many spans...
    pub spans: Option<u64>,
    /// ...or after this long.
    pub duration: Option<Duration>,
    /// Spans per request (whole traces, so about this many).
    pub batch: usize,
    pub seed: u64,
    /// Most bytes of pre-encoded requests kept; beyond, the pool repeats.
    pub pool_bytes: usize,
}

/// One pre-generated request.
pub(crate) struct Item {
    pub(crate) request: ExportTraceServiceRequest,
    pub(crate) body: Vec<u8>,
    pub(crate) spans: u64,
}

/// The measured outcome.
#[derive(Debug, Clone)]
pub struct Report {
    pub spans_acked: u64,
    pub spans_rejected: u64,
    pub requests: u64,
    pub failed_requests: u64,
    /// 429/503 (HTTP) or RESOURCE_EXHAUSTED/UNAVAILABLE (gRPC) answers; the
    /// request was retried after the server's delay, as exporters do.
    pub throttled: u64,
    pub bytes_sent: u64,
    pub seconds: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub pool_requests: usize,
    pub bytes_per_span: f64,
}

impl Report {
    pub fn spans_per_second(&self) -> f64 {
        self.spans_acked as f64 / self.seconds
    }

    pub fn mb_per_second(&self) -> f64 {
        self.bytes_sent as f64 / 1e6 / self.seconds
    }

    pub fn json(&self) -> Value {
        json!({
            "spans_acked": self.spans_acked,
            "spans_rejected": self.spans_rejected,
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "throttled_responses": self.throttled,
            "seconds": self.seconds,
            "spans_per_second": self.spans_per_second(),
            "mb_per_second": self.mb_per_second(),
            "ack_latency_ms": { "p50": self.ack_p50_ms, "p99": self.ack_p99_ms },
            "otlp_bytes_per_span": self.bytes_per_span,
            "distinct_requests": self.pool_requests,
        })
    }

    pub fn table(&self) -> String {
        format!(
            "spans acknowledged   {}\nspans rejected       {}\nrequests (failed)    {} ({})\nthrottled, retried   {}\nseconds              {:.2}\nspans/s              {:.0}\nMB/s (protobuf)      {:.1}\nack latency p50/p99  {:.1} ms / {:.1} ms\nOTLP bytes/span      {:.0}\n",
            self.spans_acked,
            self.spans_rejected,
            self.requests,
            self.failed_requests,
            self.throttled,
            self.seconds,
            self.spans_per_second(),
            self.mb_per_second(),
            self.ack_p50_ms,
            self.ack_p99_ms,
            self.bytes_per_span,
        )
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// The pre-generated requests of a run.
pub(crate) fn pool(config: &Config) -> Vec<Item> {
    let needed = config.spans.unwrap_or(u64::MAX);
    // Traces end within the last minutes: inside any server's accepted window.
    let mut generator = Generator::new(
        Topology::new(config.seed),
        config.seed,
        now_ns() - 600_000_000_000,
    );
    let mut items = Vec::new();
    let (mut bytes, mut spans) = (0usize, 0u64);
    while spans < needed && bytes < config.pool_bytes {
        let (request, n) = generator.request(config.batch);
        let body = request.encode_to_vec();
        bytes += body.len();
        spans += n as u64;
        items.push(Item {
            request,
            body,
            spans: n as u64,
        });
    }
    items
}

/// The outcome of one send.
enum Attempt {
    /// The server pushed back: retry after this delay.
    Throttled(Duration),
    Done(anyhow::Result<ExportTraceServiceResponse>),
}

async fn send(
    grpc: Option<&mut TraceServiceClient<tonic::transport::Channel>>,
    http: &reqwest::Client,
    url: &str,
    item: &Item,
) -> Attempt {
    match grpc {
        Some(c) => match c.export(item.request.clone()).await {
            Ok(r) => Attempt::Done(Ok(r.into_inner())),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                ) =>
            {
                Attempt::Throttled(Duration::from_secs(1))
            }
            Err(s) => Attempt::Done(Err(anyhow::anyhow!("{:?}: {}", s.code(), s.message()))),
        },
        None => {
            let response = match http
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(item.body.clone())
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return Attempt::Done(Err(e.into())),
            };
            let status = response.status();
            if status.as_u16() == 429 || status.as_u16() == 503 {
                let delay = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                return Attempt::Throttled(Duration::from_secs(delay));
            }
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(e) => return Attempt::Done(Err(e.into())),
            };
            if !status.is_success() {
                return Attempt::Done(Err(anyhow::anyhow!("HTTP {status}")));
            }
            Attempt::Done(ExportTraceServiceResponse::decode(body).map_err(Into::into))
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the load and reports.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.spans.is_none() && config.duration.is_none() {
        bail!("give a span count or a duration");
    }
    let items = Arc::new(pool(&config));
    let bytes_per_span = items.iter().map(|i| i.body.len() as f64).sum::<f64>()
        / items.iter().map(|i| i.spans as f64).sum::<f64>();
    let grpc = config
        .endpoint
        .strip_prefix("grpc://")
        .map(|h| format!("http://{h}"));
    let http_url = format!("{}/v1/traces", config.endpoint.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let sent_spans = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..config.streams.max(1) {
        let items = Arc::clone(&items);
        let next = Arc::clone(&next);
        let sent_spans = Arc::clone(&sent_spans);
        let config = config.clone();
        let grpc = grpc.clone();
        let http_url = http_url.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let http_url = http_url.as_str();
            let mut client = match &grpc {
                Some(url) => Some(
                    TraceServiceClient::connect(url.clone())
                        .await
                        .with_context(|| format!("cannot connect to {url}"))?
                        .max_encoding_message_size(64 << 20),
                ),
                None => None,
            };
            let mut latencies = Vec::new();
            let (mut acked, mut rejected, mut requests, mut failed, mut bytes, mut throttled) =
                (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
            loop {
                if config.duration.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                let item = &items[index % items.len()];
                let before = sent_spans.fetch_add(item.spans, Ordering::Relaxed);
                if config.spans.is_some_and(|limit| before >= limit) {
                    break;
                }
                let t = Instant::now();
                let outcome = loop {
                    let attempt = send(client.as_mut(), &http, http_url, item).await;
                    match attempt {
                        Attempt::Throttled(delay) => {
                            throttled += 1;
                            if config.duration.is_some_and(|d| started.elapsed() >= d) {
                                // The run is over while waiting: not a failure.
                                break None;
                            }
                            tokio::time::sleep(delay).await;
                        }
                        Attempt::Done(result) => break Some(result),
                    }
                };
                let Some(outcome) = outcome else { break };
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                requests += 1;
                match outcome {
                    Ok(response) => {
                        let r = response
                            .partial_success
                            .map_or(0, |p| p.rejected_spans as u64);
                        rejected += r;
                        acked += item.spans - r;
                        bytes += item.body.len() as u64;
                    }
                    Err(_) => failed += 1,
                }
            }
            anyhow::Ok((
                latencies, acked, rejected, requests, failed, bytes, throttled,
            ))
        }));
    }
    let mut latencies = Vec::new();
    let mut report = Report {
        spans_acked: 0,
        spans_rejected: 0,
        requests: 0,
        failed_requests: 0,
        throttled: 0,
        bytes_sent: 0,
        seconds: 0.0,
        ack_p50_ms: 0.0,
        ack_p99_ms: 0.0,
        pool_requests: items.len(),
        bytes_per_span,
    };
    for task in tasks {
        let (l, acked, rejected, requests, failed, bytes, throttled) = task.await??;
        report.throttled += throttled;
        latencies.extend(l);
        report.spans_acked += acked;
        report.spans_rejected += rejected;
        report.requests += requests;
        report.failed_requests += failed;
        report.bytes_sent += bytes;
    }
    report.seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    report.ack_p50_ms = percentile(&latencies, 0.5);
    report.ack_p99_ms = percentile(&latencies, 0.99);
    Ok(report)
}
