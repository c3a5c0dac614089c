//! The one ingest path every receiver ends in: validate and convert to Arrow,
//! append to the WAL (which inserts into the buffer in sequence order), wait
//! for the fsync, then let the receiver acknowledge.
//!
//! PERFORMANCE-CRITICAL: runs once per request; conversion happens on the
//! blocking pool so the async runtime never waits on it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;
use tokio::sync::Notify;
use tracelake_protocols::Sink;
use tracelake_schema::layout::Layout;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::otlp::{Acceptance, Rejections, SpansBuilder};

use crate::buffer::Buffer;
use crate::metrics::Metrics;
use crate::wal::Wal;

/// Why a whole request was not accepted; receivers map it to their protocol.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Too much is buffered: the client should retry after the delay.
    #[error("server overloaded: {buffered} bytes buffered (limit {limit}), retry later")]
    Overloaded {
        buffered: usize,
        limit: usize,
        retry_after: Duration,
    },
    /// The write-ahead log failed or is closed (shutting down).
    #[error("write-ahead log unavailable: {0}")]
    Unavailable(String),
    /// The request body did not decode: `message` names what was wrong.
    #[error("{message}")]
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// Over one of the tenant's limits ([`IngestLimits`]), or the server's
    /// on what a request may hold once decoded (`max_repeated_bytes`);
    /// `message` names it and its value. `retry_after` is `None` when the same request can
    /// never pass (more spans than a request may hold, larger than the
    /// burst): exporters must not retry it.
    #[error("{message}")]
    Limited {
        limit: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
}

impl IngestError {
    /// The HTTP status of a failed request and its `Retry-After` in
    /// seconds, for every HTTP receiver: 400 for a body that does not
    /// decode, 429 to retry later (overloaded, over the rate), 413 for a
    /// request that can never pass (not to be retried), 503 when the WAL
    /// is unavailable.
    pub fn http_status(&self) -> (axum::http::StatusCode, Option<u64>) {
        use axum::http::StatusCode;
        match self {
            Self::Invalid { .. } => (StatusCode::BAD_REQUEST, None),
            Self::Overloaded { retry_after, .. }
            | Self::Limited {
                retry_after: Some(retry_after),
                ..
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                Some(retry_after.as_secs().max(1)),
            ),
            Self::Limited {
                retry_after: None, ..
            } => (StatusCode::PAYLOAD_TOO_LARGE, None),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, Some(1)),
        }
    }

    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Overloaded { .. } => "overloaded",
            Self::Unavailable(_) => "unavailable",
            Self::Invalid { reason, .. } => reason,
            Self::Limited { limit, .. } => limit,
        }
    }
}

/// Outcome of an accepted request.
#[derive(Debug, Default)]
pub struct Accepted {
    pub spans: u64,
    pub rejections: Rejections,
}

/// Settings of the ingest path.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Spans starting longer ago than this are rejected.
    pub max_span_age: Duration,
    /// Spans starting further in the future than this are rejected.
    pub max_span_future: Duration,
    /// Buffered Arrow bytes above which requests are refused (backpressure).
    pub max_buffer_bytes: usize,
}

/// A tenant's ingest limits (`None`: no limit); changed while running with
/// [`Ingest::set_limits`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestLimits {
    /// The tenant, for the `limited_requests` metric.
    pub tenant: String,
    /// Bytes per second, as decoded spans (the bytes their Arrow columns
    /// use), refilling a bucket of `burst_bytes`.
    pub rate_bytes_per_second: Option<u64>,
    /// The bucket's size [default: one second of the rate].
    pub burst_bytes: Option<u64>,
    /// Spans in one request, accepted or not.
    pub max_spans_per_request: Option<usize>,
    /// Decoded bytes of one trace while it keeps receiving spans (it is
    /// forgotten after [`TRACE_IDLE`] without one); the spans that would
    /// take it over are rejected (OTLP partial success).
    pub max_bytes_per_trace: Option<u64>,
}

/// The bytes `batch` holds (used, not allocated: builders over-allocate, and
/// a small batch's allocations are mostly slack) — the measure of the
/// ingestion rate and of trace sizes.
fn used_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// How long a trace's size is remembered after its last span, for
/// `max_bytes_per_trace` (a trace still growing after this starts again
/// from zero).
pub const TRACE_IDLE: Duration = Duration::from_secs(300);

/// Most traces whose size is remembered; beyond, the least recently seen
/// are forgotten first.
const MAX_TRACKED_TRACES: usize = 1_000_000;

/// The sizes of recently seen traces of a tenant.
#[derive(Debug, Default)]
struct TraceSizes {
    sizes: std::collections::HashMap<[u8; 16], (u64, std::time::Instant)>,
    swept: Option<std::time::Instant>,
}

impl TraceSizes {
    /// Keeps the rows of `batch` whose traces stay within `max` bytes (each
    /// row taking an equal share of the batch's size), counting them; the
    /// number of rows left out, and what was counted for which trace (to
    /// [`forget`](Self::forget) when the batch is not stored after all).
    #[allow(clippy::type_complexity)]
    fn admit(
        &mut self,
        batch: RecordBatch,
        max: u64,
    ) -> Result<(RecordBatch, u64, Vec<([u8; 16], u64)>), IngestError> {
        use arrow::array::AsArray as _;
        let now = std::time::Instant::now();
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
            || self.sizes.len() > MAX_TRACKED_TRACES
        {
            self.sizes
                .retain(|_, (_, seen)| now.duration_since(*seen) < TRACE_IDLE);
            if self.sizes.len() > MAX_TRACKED_TRACES {
                let mut seen: Vec<std::time::Instant> = self.sizes.values().map(|v| v.1).collect();
                seen.sort_unstable();
                let cut = seen[seen.len() - MAX_TRACKED_TRACES / 2];
                self.sizes.retain(|_, (_, t)| *t >= cut);
            }
            self.swept = Some(now);
        }
        let rows = batch.num_rows();
        let per_row = (used_bytes(&batch) / rows.max(1)) as u64;
        let Some(ids) = batch.column_by_name(tracelake_schema::spans::TRACE_ID) else {
            return Ok((batch, 0, Vec::new()));
        };
        let ids = ids.as_binary::<i32>();
        let key = |row: usize| -> [u8; 16] { ids.value(row).try_into().unwrap_or([0; 16]) };
        let mut in_batch: std::collections::HashMap<[u8; 16], u64> = Default::default();
        for row in 0..rows {
            *in_batch.entry(key(row)).or_default() += per_row;
        }
        let mut over = std::collections::HashSet::new();
        let mut added = Vec::with_capacity(in_batch.len());
        for (id, bytes) in in_batch {
            let (size, seen) = self.sizes.entry(id).or_insert((0, now));
            *seen = now;
            if *size + bytes > max {
                over.insert(id);
            } else {
                *size += bytes;
                added.push((id, bytes));
            }
        }
        if over.is_empty() {
            return Ok((batch, 0, added));
        }
        let keep: arrow::array::BooleanArray = (0..rows)
            .map(|row| Some(!over.contains(&key(row))))
            .collect();
        let kept = arrow::compute::filter_record_batch(&batch, &keep)
            .map_err(|e| IngestError::Unavailable(format!("cannot filter the batch: {e}")))?;
        let left_out = (rows - kept.num_rows()) as u64;
        Ok((kept, left_out, added))
    }

    /// Takes back what [`admit`](Self::admit) counted.
    fn forget(&mut self, counted: &[([u8; 16], u64)]) {
        for (id, bytes) in counted {
            if let Some((size, _)) = self.sizes.get_mut(id) {
                *size = size.saturating_sub(*bytes);
            }
        }
    }
}

/// The token bucket of the rate limit.
#[derive(Debug)]
struct Bucket {
    limits: IngestLimits,
    tokens: f64,
    refilled: std::time::Instant,
}

impl Bucket {
    fn new(limits: IngestLimits) -> Bucket {
        let tokens = limits.burst() as f64;
        Bucket {
            limits,
            tokens,
            refilled: std::time::Instant::now(),
        }
    }

    /// Takes `bytes`, or says how long until they would be there.
    fn take(&mut self, bytes: usize) -> Result<(), IngestError> {
        let Some(rate) = self.limits.rate_bytes_per_second else {
            return Ok(());
        };
        let burst = self.limits.burst() as f64;
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst);
        let bytes = bytes as f64;
        if bytes > burst {
            return Err(IngestError::Limited {
                limit: "ingestion_rate",
                message: format!(
                    "request of {bytes:.0} bytes (decoded) is larger than tenant {:?}'s \
                     ingestion burst of {burst:.0} bytes: send smaller batches",
                    self.limits.tenant
                ),
                retry_after: None,
            });
        }
        if bytes > self.tokens {
            let wait = ((bytes - self.tokens) / rate.max(1) as f64).ceil().max(1.0);
            return Err(IngestError::Limited {
                limit: "ingestion_rate",
                message: format!(
                    "tenant {:?} is over its ingestion rate of {rate} bytes/s (burst {burst:.0}); \
                     retry after {wait:.0} s",
                    self.limits.tenant
                ),
                retry_after: Some(Duration::from_secs_f64(wait)),
            });
        }
        self.tokens -= bytes;
        Ok(())
    }
}

impl IngestLimits {
    fn burst(&self) -> u64 {
        self.burst_bytes
            .or(self.rate_bytes_per_second)
            .unwrap_or(u64::MAX)
    }
}

pub struct Ingest {
    /// The tenant's limits and rate bucket.
    bucket: parking_lot::Mutex<Bucket>,
    /// For `max_bytes_per_trace`.
    trace_sizes: parking_lot::Mutex<TraceSizes>,
    wal: Arc<Wal>,
    buffer: Arc<Buffer>,
    metrics: Arc<Metrics>,
    config: IngestConfig,
    /// Woken when the buffer may have become due for a flush.
    flush: Arc<Notify>,
    /// The table layout the rows are built in (its configured dedicated
    /// columns), fixed for the process: every buffered row has one schema.
    layout: Arc<Layout>,
}

impl IngestConfig {
    /// The span start times accepted now (every receiver's window).
    pub fn acceptance(&self) -> Acceptance {
        let now = now_unix_nano();
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Acceptance {
            min_start_unix_nano: now.saturating_sub(nanos(self.max_span_age)),
            max_start_unix_nano: now.saturating_add(nanos(self.max_span_future)),
        }
    }
}

fn now_unix_nano() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Ingest {
    pub fn new(
        wal: Arc<Wal>,
        buffer: Arc<Buffer>,
        metrics: Arc<Metrics>,
        config: IngestConfig,
        flush: Arc<Notify>,
        layout: Arc<Layout>,
    ) -> Self {
        Self {
            layout,
            bucket: parking_lot::Mutex::new(Bucket::new(IngestLimits::default())),
            trace_sizes: parking_lot::Mutex::new(TraceSizes::default()),
            wal,
            buffer,
            metrics,
            config,
            flush,
        }
    }

    /// Replaces the limits (the bucket starts full when the rate changes).
    /// The layout rows are built in.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub fn set_limits(&self, limits: IngestLimits) {
        let mut bucket = self.bucket.lock();
        if bucket.limits != limits {
            *bucket = Bucket::new(limits);
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> IngestLimits {
        self.bucket.lock().limits.clone()
    }

    fn acceptance(&self) -> Acceptance {
        self.config.acceptance()
    }

    /// Refuses new work while the buffer is over its limit.
    pub fn check_capacity(&self, protocol: &'static str) -> Result<(), IngestError> {
        let buffered = self.buffer.bytes();
        if buffered > self.config.max_buffer_bytes {
            let err = IngestError::Overloaded {
                buffered,
                limit: self.config.max_buffer_bytes,
                retry_after: Duration::from_secs(1),
            };
            self.count_error(protocol, err.reason());
            self.flush.notify_one();
            return Err(err);
        }
        Ok(())
    }

    /// Counts a request that failed before reaching [`Ingest::export`].
    pub fn count_error(&self, protocol: &'static str, reason: &'static str) {
        self.metrics
            .request_errors
            .get_or_create(&[("protocol", protocol), ("reason", reason)])
            .inc();
    }

    /// Makes the spans of `request` durable; returns once they are fsynced.
    pub async fn export(
        self: &Arc<Self>,
        protocol: &'static str,
        request: ExportTraceServiceRequest,
    ) -> Result<Accepted, IngestError> {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.export_with(protocol, spans, move |sink| {
            sink.rejections = sink.builder.append_request(&request, &sink.acceptance);
            Ok(())
        })
        .await
    }

    /// Makes the spans that `fill` writes durable (a decoder writing
    /// straight from a request body, or [`export`](Self::export)'s
    /// request); returns once they are fsynced. `fill` runs on the blocking
    /// pool, with the WAL append, never on the runtime; `capacity` is the
    /// expected number of spans, to size the builders.
    pub async fn export_with<F>(
        self: &Arc<Self>,
        protocol: &'static str,
        capacity: usize,
        fill: F,
    ) -> Result<Accepted, IngestError>
    where
        F: FnOnce(&mut Sink<'_>) -> Result<(), IngestError> + Send + 'static,
    {
        self.check_capacity(protocol)?;
        let this = Arc::clone(self);
        let (seq, accepted) = tokio::task::spawn_blocking(move || this.write(capacity, fill))
            .await
            .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))
            .and_then(|r| r)
            .inspect_err(|e| {
                self.count_error(protocol, e.reason());
                if let IngestError::Limited { limit, .. } = e {
                    let tenant = self.bucket.lock().limits.tenant.clone();
                    self.metrics
                        .limited
                        .get_or_create(&[("tenant", tenant), ("limit", (*limit).to_string())])
                        .inc();
                }
            })?;
        if let Some(seq) = seq {
            self.wal
                .synced(seq)
                .await
                .map_err(|e| IngestError::Unavailable(e.to_string()))
                .inspect_err(|e| self.count_error(protocol, e.reason()))?;
        }
        let labels = [("protocol", protocol)];
        let received = accepted.spans + accepted.rejections.count;
        self.metrics
            .spans_received
            .get_or_create(&labels)
            .inc_by(received);
        self.metrics
            .spans_accepted
            .get_or_create(&labels)
            .inc_by(accepted.spans);
        for (reason, n) in &accepted.rejections.reasons {
            self.metrics
                .spans_rejected
                .get_or_create(&[("protocol", protocol), ("reason", reason.label())])
                .inc_by(*n);
        }
        self.flush.notify_one();
        Ok(accepted)
    }

    /// Converts and appends; returns the WAL sequence number to wait for.
    fn write<F>(&self, capacity: usize, fill: F) -> Result<(Option<u64>, Accepted), IngestError>
    where
        F: FnOnce(&mut Sink<'_>) -> Result<(), IngestError>,
    {
        let mut builder = SpansBuilder::for_layout(Arc::clone(&self.layout), capacity);
        let mut sink = Sink::new(&mut builder, self.acceptance());
        fill(&mut sink)?;
        let mut rejections = sink.rejections;
        let mut batch = builder.try_finish().map_err(|e| IngestError::Limited {
            limit: "max_repeated_bytes",
            message: format!("request is {e}"),
            retry_after: None,
        })?;
        let accepted = batch.num_rows() as u64;
        let (max_spans, max_trace) = {
            let bucket = self.bucket.lock();
            (
                bucket.limits.max_spans_per_request,
                bucket.limits.max_bytes_per_trace,
            )
        };
        if let Some(max) = max_spans
            && (accepted + rejections.count) as usize > max
        {
            return Err(IngestError::Limited {
                limit: "max_spans_per_request",
                message: format!(
                    "request of {} spans is over the tenant's limit of {max} spans per request: \
                     send smaller batches",
                    accepted + rejections.count
                ),
                retry_after: None,
            });
        }
        if accepted == 0 {
            return Ok((
                None,
                Accepted {
                    spans: 0,
                    rejections,
                },
            ));
        }
        // The rate first: a request refused for it (and retried) must not
        // count towards its traces' sizes.
        self.bucket.lock().take(used_bytes(&batch))?;
        let mut accepted = accepted;
        let mut counted = Vec::new();
        if let Some(max) = max_trace {
            let (kept, left_out, added) = self.trace_sizes.lock().admit(batch, max)?;
            counted = added;
            if left_out > 0 {
                rejections.add_n(tracelake_schema::otlp::Rejection::TraceTooLarge, left_out);
                let tenant = self.bucket.lock().limits.tenant.clone();
                self.metrics
                    .limited
                    .get_or_create(&[
                        ("tenant", tenant),
                        ("limit", "max_bytes_per_trace".to_string()),
                    ])
                    .inc();
                accepted -= left_out;
                if kept.num_rows() == 0 {
                    return Ok((
                        None,
                        Accepted {
                            spans: 0,
                            rejections,
                        },
                    ));
                }
            }
            batch = kept;
        }
        let (seq, ()) = self
            .wal
            .append(&batch, |seq| self.buffer.insert(seq, &batch))
            .map_err(|e| {
                // Not stored: its traces did not grow.
                self.trace_sizes.lock().forget(&counted);
                IngestError::Unavailable(e.to_string())
            })?;
        Ok((
            Some(seq),
            Accepted {
                spans: accepted,
                rejections,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_the_rate_and_refuses_what_it_cannot_hold() {
        let mut bucket = Bucket::new(IngestLimits {
            tenant: "t".into(),
            rate_bytes_per_second: Some(1000),
            burst_bytes: Some(2000),
            ..IngestLimits::default()
        });
        bucket.take(1500).unwrap();
        match bucket.take(1000) {
            Err(IngestError::Limited {
                limit,
                retry_after,
                message,
            }) => {
                assert_eq!(limit, "ingestion_rate");
                assert!(
                    retry_after >= Some(Duration::from_secs(1)),
                    "{retry_after:?}"
                );
                assert!(message.contains("1000 bytes/s"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let Err(IngestError::Limited {
            message,
            retry_after,
            ..
        }) = bucket.take(2001)
        else {
            panic!("over the burst");
        };
        assert!(message.contains("larger than"), "{message}");
        assert_eq!(retry_after, None, "never passes: not to be retried");
        // Half a second refills 500 bytes: 1000 are there again.
        bucket.refilled -= Duration::from_millis(500);
        bucket.take(1000).unwrap();
        // No rate: no limit.
        Bucket::new(IngestLimits::default())
            .take(usize::MAX)
            .unwrap();
    }
}
