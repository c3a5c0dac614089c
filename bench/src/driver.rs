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
    /// Most bytes of pre-encoded requests kept; beyond, the pool repeats,
    /// each repetition with other trace ids and later times, so every span
    /// sent is distinct.
    pub pool_bytes: usize,
    /// Start of the first trace, Unix ns (default: ten minutes ago).
    pub start_unix_ns: Option<u64>,
    /// Mean time between traces, ns (default: 1.5 ms).
    pub trace_interval_ns: Option<u64>,
    /// Body encoding over OTLP/HTTP.
    pub encoding: Encoding,
    /// Sent as `Authorization: Bearer <token>` (HTTP header or gRPC
    /// metadata) when the server requires tokens.
    pub token: Option<String>,
    /// PEM CA certificates an `https://` endpoint's certificate must chain
    /// to (OTLP/HTTP only: the gRPC client is built without TLS).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The body encoding of OTLP/HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    /// OTLP/JSON as SDK exporters write it (proto3 JSON: hex ids, 64-bit
    /// integers as strings).
    Json,
}

impl std::str::FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "protobuf" => Ok(Self::Protobuf),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown encoding {s:?} (protobuf or json)")),
        }
    }
}

impl Config {
    /// Sends to `endpoint` with defaults for everything else.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            streams: 4,
            spans: None,
            duration: None,
            batch: 1000,
            seed: 1,
            pool_bytes: 512 << 20,
            start_unix_ns: None,
            trace_interval_ns: None,
            encoding: Encoding::Protobuf,
            token: None,
            ca_file: None,
        }
    }
}

/// One pre-generated request.
pub(crate) struct Item {
    pub(crate) request: ExportTraceServiceRequest,
    pub(crate) body: Vec<u8>,
    pub(crate) spans: u64,
    /// Offsets in `body` of every trace id (16 bytes).
    trace_ids: Vec<usize>,
    /// Offsets in `body` of every timestamp (fixed64, little-endian).
    times: Vec<usize>,
    /// The OTLP/JSON body, when the run sends JSON.
    pub(crate) json: Option<JsonBody>,
}

/// An OTLP/JSON body with the offsets of what a repetition changes: the
/// 32 hex digits of every trace id and the 19 digits of every time.
pub(crate) struct JsonBody {
    pub(crate) body: Vec<u8>,
    trace_ids: Vec<usize>,
    times: Vec<usize>,
}

impl JsonBody {
    pub(crate) fn new(request: &ExportTraceServiceRequest) -> Self {
        let body = serde_json::to_vec(&tracelake_protocols::otlp_json::traces_data(request))
            .expect("a request encodes");
        let find = |prefix: &[u8], len: usize| -> Vec<usize> {
            let mut out = Vec::new();
            let mut i = 0;
            while let Some(at) = body[i..].windows(prefix.len()).position(|w| w == prefix) {
                let start = i + at + prefix.len();
                if body.get(start + len) == Some(&b'"') {
                    out.push(start);
                }
                i = start;
            }
            out
        };
        let trace_ids = find(b"\"traceId\":\"", 32);
        // "startTimeUnixNano", "endTimeUnixNano" and events' "timeUnixNano".
        let times = find(b"imeUnixNano\":\"", 19);
        Self {
            body,
            trace_ids,
            times,
        }
    }

    /// The body of repetition `round`.
    fn body(&self, round: Round) -> std::borrow::Cow<'_, [u8]> {
        if round.mask == 0 && round.shift_ns == 0 {
            return std::borrow::Cow::Borrowed(&self.body);
        }
        let mut body = self.body.clone();
        for &at in &self.trace_ids {
            let digits = &mut body[at + 16..at + 32];
            let low = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u64::from_str_radix(d, 16).ok())
                .expect("hex trace id");
            digits.copy_from_slice(format!("{:016x}", low ^ round.mask).as_bytes());
        }
        for &at in &self.times {
            let digits = &mut body[at..at + 19];
            let t: u64 = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .expect("decimal time");
            let shifted = format!("{:019}", t + round.shift_ns);
            assert_eq!(shifted.len(), 19, "times stay 19 digits");
            digits.copy_from_slice(shifted.as_bytes());
        }
        std::borrow::Cow::Owned(body)
    }
}

/// How repetition `round` of the pool differs from the pool: the last 8
/// bytes of every trace id are XORed with a value of the round, and every
/// time moves `round * shift_ns` later.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Round {
    mask: u64,
    shift_ns: u64,
}

impl Round {
    fn new(round: u64, shift_ns: u64) -> Self {
        // splitmix64: distinct, well-spread masks; round 0 is the pool itself.
        let mut z = round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mask = if round == 0 { 0 } else { (z ^ (z >> 31)) | 1 };
        Self {
            mask,
            shift_ns: round * shift_ns,
        }
    }

    fn id(&self, id: &mut [u8]) {
        if id.len() == 16 {
            let low = u64::from_be_bytes(id[8..].try_into().expect("8 bytes")) ^ self.mask;
            id[8..].copy_from_slice(&low.to_be_bytes());
        }
    }
}

impl Item {
    fn new(request: ExportTraceServiceRequest, spans: u64, encoding: Encoding) -> Self {
        let body = request.encode_to_vec();
        let json = (encoding == Encoding::Json).then(|| JsonBody::new(&request));
        let mut ids = std::collections::HashSet::new();
        let mut times = std::collections::HashSet::new();
        for rs in &request.resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    ids.insert(span.trace_id.as_slice());
                    times.insert(span.start_time_unix_nano);
                    times.insert(span.end_time_unix_nano);
                    times.extend(span.events.iter().map(|e| e.time_unix_nano));
                    ids.extend(span.links.iter().map(|l| l.trace_id.as_slice()));
                }
            }
        }
        // Field keys: trace_id is field 1 (length-delimited, 16 bytes) of
        // Span and Link; times are fixed64 fields 7 and 8 of Span and 1 of
        // Event. A key followed by a value of this request is taken as the
        // field (16 random bytes or a nanosecond time matching by chance is
        // vanishingly unlikely).
        let (mut trace_ids, mut time_offsets) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i + 9 <= body.len() {
            if body[i] == 0x0a && body[i + 1] == 16 && body.len() >= i + 18 {
                if ids.contains(&body[i + 2..i + 18]) {
                    trace_ids.push(i + 2);
                    i += 18;
                    continue;
                }
            } else if matches!(body[i], 0x39 | 0x41 | 0x09) {
                let value = u64::from_le_bytes(body[i + 1..i + 9].try_into().expect("8 bytes"));
                if times.contains(&value) {
                    time_offsets.push(i + 1);
                    i += 9;
                    continue;
                }
            }
            i += 1;
        }
        Self {
            request,
            body,
            spans,
            trace_ids,
            times: time_offsets,
            json,
        }
    }

    /// Bytes sent per request.
    fn sent_len(&self) -> usize {
        self.json.as_ref().map_or(self.body.len(), |j| j.body.len())
    }

    /// The body of repetition `round`.
    fn body(&self, round: Round) -> std::borrow::Cow<'_, [u8]> {
        if round.mask == 0 && round.shift_ns == 0 {
            return std::borrow::Cow::Borrowed(&self.body);
        }
        let mut body = self.body.clone();
        for &at in &self.trace_ids {
            round.id(&mut body[at..at + 16]);
        }
        for &at in &self.times {
            let t = u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
            body[at..at + 8].copy_from_slice(&(t + round.shift_ns).to_le_bytes());
        }
        std::borrow::Cow::Owned(body)
    }

    /// The request of repetition `round`.
    fn request(&self, round: Round) -> ExportTraceServiceRequest {
        let mut request = self.request.clone();
        if round.mask == 0 && round.shift_ns == 0 {
            return request;
        }
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    round.id(&mut span.trace_id);
                    span.start_time_unix_nano += round.shift_ns;
                    span.end_time_unix_nano += round.shift_ns;
                    for e in &mut span.events {
                        e.time_unix_nano += round.shift_ns;
                    }
                    for l in &mut span.links {
                        round.id(&mut l.trace_id);
                    }
                }
            }
        }
        request
    }
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
    /// What the first failed request failed with.
    pub first_error: Option<String>,
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
            "first_error": self.first_error,
        })
    }

    pub fn table(&self) -> String {
        format!(
            "spans acknowledged   {}\nspans rejected       {}\nrequests (failed)    {} ({})\nthrottled, retried   {}\nseconds              {:.2}\nspans/s              {:.0}\nMB/s (bodies)        {:.1}\nack latency p50/p99  {:.1} ms / {:.1} ms\nOTLP bytes/span      {:.0}\n",
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

/// The pre-generated requests of a run, and the time one pass over them
/// covers (the shift between repetitions).
pub(crate) fn pool(config: &Config) -> (Vec<Item>, u64) {
    let needed = config.spans.unwrap_or(u64::MAX);
    // By default traces end within the last minutes: inside any server's
    // accepted window.
    let start = config
        .start_unix_ns
        .unwrap_or_else(|| now_ns() - 600_000_000_000);
    let mut generator = Generator::new(Topology::new(config.seed), config.seed, start);
    if let Some(interval) = config.trace_interval_ns {
        generator = generator.with_trace_interval(interval);
    }
    let mut items = Vec::new();
    let (mut bytes, mut spans) = (0usize, 0u64);
    while spans < needed && bytes < config.pool_bytes {
        let (request, n) = generator.request(config.batch);
        let item = Item::new(request, n as u64, config.encoding);
        bytes += item.sent_len();
        spans += n as u64;
        items.push(item);
    }
    (items, generator.clock() - start)
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
    authorization: Option<&reqwest::header::HeaderValue>,
    item: &Item,
    round: Round,
) -> Attempt {
    match grpc {
        Some(c) => {
            let mut request = tonic::Request::new(item.request(round));
            if let Some(value) = authorization {
                let value = tonic::metadata::MetadataValue::try_from(value.as_bytes())
                    .expect("a header value is a metadata value");
                request.metadata_mut().insert("authorization", value);
            }
            grpc_outcome(c.export(request).await)
        }
        None => {
            let (content_type, body) = match &item.json {
                Some(json) => ("application/json", json.body(round).into_owned()),
                None => ("application/x-protobuf", item.body(round).into_owned()),
            };
            let mut request = http.post(url).header("content-type", content_type);
            if let Some(value) = authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value.clone());
            }
            http_outcome(request.body(body).send().await, item.json.is_some()).await
        }
    }
}

fn grpc_outcome(
    result: Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status>,
) -> Attempt {
    match result {
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
    }
}

async fn http_outcome(result: reqwest::Result<reqwest::Response>, json: bool) -> Attempt {
    let response = match result {
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
        let text = String::from_utf8_lossy(&body);
        return Attempt::Done(Err(anyhow::anyhow!("HTTP {status}: {text:.300}")));
    }
    if json {
        return Attempt::Done(json_response(&body));
    }
    Attempt::Done(ExportTraceServiceResponse::decode(body).map_err(Into::into))
}

/// An OTLP/JSON `ExportTraceServiceResponse` (only the rejected count is
/// read).
fn json_response(body: &[u8]) -> anyhow::Result<ExportTraceServiceResponse> {
    let value: Value = serde_json::from_slice(body)?;
    let rejected = &value["partialSuccess"]["rejectedSpans"];
    let rejected = rejected
        .as_i64()
        .or_else(|| rejected.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    Ok(ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| {
            opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: String::new(),
            }
        }),
    })
}

/// The HTTP client: plain, or trusting the CA certificates of `ca_file`
/// (rustls with aws-lc-rs, as the server).
fn http_client(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let Some(path) = ca_file else {
        return Ok(reqwest::Client::new());
    };
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
    {
        roots.add(cert.with_context(|| format!("invalid PEM in {}", path.display()))?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()?)
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
    let (items, pool_ns) = pool(&config);
    let items = Arc::new(items);
    let bytes_per_span = items.iter().map(|i| i.sent_len() as f64).sum::<f64>()
        / items.iter().map(|i| i.spans as f64).sum::<f64>();
    let grpc = config
        .endpoint
        .strip_prefix("grpc://")
        .map(|h| format!("http://{h}"));
    let http_url = format!("{}/v1/traces", config.endpoint.trim_end_matches('/'));
    if grpc.is_some() && config.ca_file.is_some() {
        bail!("TLS is for OTLP/HTTP endpoints (https://): the gRPC client has no TLS");
    }
    let authorization = config
        .token
        .as_ref()
        .map(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")))
        .transpose()
        .context("the token is not a header value")?;
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
        // A client (and its connections) per stream, as separate exporters.
        let http = http_client(config.ca_file.as_deref())?;
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
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
            let mut first_error: Option<String> = None;
            let (mut acked, mut rejected, mut requests, mut failed, mut bytes, mut throttled) =
                (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
            loop {
                if config.duration.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                let item = &items[index % items.len()];
                let round = Round::new((index / items.len()) as u64, pool_ns);
                let before = sent_spans.fetch_add(item.spans, Ordering::Relaxed);
                if config.spans.is_some_and(|limit| before >= limit) {
                    break;
                }
                let t = Instant::now();
                let outcome = loop {
                    let attempt = send(
                        client.as_mut(),
                        &http,
                        http_url,
                        authorization.as_ref(),
                        item,
                        round,
                    )
                    .await;
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
                        bytes += item.sent_len() as u64;
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            anyhow::Ok((
                latencies,
                acked,
                rejected,
                requests,
                failed,
                bytes,
                throttled,
                first_error,
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
        first_error: None,
    };
    for task in tasks {
        let (l, acked, rejected, requests, failed, bytes, throttled, error) = task.await??;
        if report.first_error.is_none() {
            report.first_error = error;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_repetitions_are_the_patched_requests() {
        let config = Config {
            spans: Some(1_000),
            seed: 5,
            encoding: Encoding::Json,
            ..Config::new("")
        };
        let (items, pool_ns) = pool(&config);
        for item in &items {
            let json = item.json.as_ref().unwrap();
            assert!(json.trace_ids.len() as u64 >= item.spans);
            assert!(json.times.len() as u64 >= 2 * item.spans);
            let round = Round::new(4, pool_ns);
            let decoded =
                tracelake_protocols::otlp_json::decode_request(&json.body(round)).unwrap();
            assert_eq!(decoded, item.request(round));
        }
    }

    #[test]
    fn repetitions_are_other_traces_later_in_both_encodings() {
        let config = Config {
            spans: Some(2_000),
            seed: 11,
            ..Config::new("")
        };
        let (items, pool_ns) = pool(&config);
        assert!(pool_ns > 0);
        for item in &items {
            assert!(item.trace_ids.len() as u64 >= item.spans);
            assert!(item.times.len() as u64 >= 2 * item.spans);
            assert_eq!(
                ExportTraceServiceRequest::decode(&*item.body(Round::new(0, pool_ns))).unwrap(),
                item.request
            );
            let round = Round::new(3, pool_ns);
            let patched = ExportTraceServiceRequest::decode(&*item.body(round)).unwrap();
            assert_eq!(patched, item.request(round));
            let spans = |r: &ExportTraceServiceRequest| -> Vec<_> {
                r.resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .flat_map(|ss| ss.spans.clone())
                    .collect()
            };
            for (a, b) in spans(&item.request).iter().zip(spans(&patched)) {
                assert_ne!(a.trace_id[8..], b.trace_id[8..]);
                assert_eq!(a.trace_id[..8], b.trace_id[..8]);
                assert_eq!(a.span_id, b.span_id);
                assert_eq!(b.start_time_unix_nano, a.start_time_unix_nano + 3 * pool_ns);
                assert_eq!(
                    b.end_time_unix_nano - b.start_time_unix_nano,
                    a.end_time_unix_nano - a.start_time_unix_nano
                );
            }
        }
    }
}
