//! Prometheus metrics of the ingest path. Counted per request or batch, never
//! per span.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `protocol` label (`otlp_grpc`, `otlp_http`, ...).
pub type ProtocolLabel = [(&'static str, &'static str); 1];
/// `protocol` and `reason` labels.
pub type ReasonLabels = [(&'static str, &'static str); 2];
/// `tenant` and `limit` labels.
pub type LimitLabels = [(&'static str, String); 2];
/// `tenant` label.
pub type TenantLabel = [(&'static str, String); 1];

/// One tenant's gauges (handles into the families of [`Metrics`]): the
/// counters are summed over tenants, but a level such as the buffer's size
/// means something only per tenant.
#[derive(Clone, Default)]
pub struct TenantGauges {
    pub wal_segments: Gauge,
    pub buffer_rows: Gauge,
    pub buffer_bytes: Gauge,
}

pub struct Metrics {
    /// The Kafka receiver's (registered by a node that runs one).
    pub kafka: std::sync::Arc<crate::kafka::KafkaMetrics>,
    pub spans_received: Family<ProtocolLabel, Counter>,
    pub spans_accepted: Family<ProtocolLabel, Counter>,
    pub spans_rejected: Family<ReasonLabels, Counter>,
    pub request_errors: Family<ReasonLabels, Counter>,
    /// Requests refused for a tenant's limit, by tenant and limit.
    pub limited: Family<LimitLabels, Counter>,
    pub wal_bytes: Counter,
    pub wal_fsync_seconds: Histogram,
    pub wal_segments: Family<TenantLabel, Gauge>,
    pub flush_seconds: Histogram,
    pub commit_seconds: Histogram,
    /// Commits tried again because another commit took their log version.
    pub commit_conflicts: Counter,
    /// Commits that reported an error but had landed (found at the next
    /// flush, which reads the table before anything is committed again).
    pub commits_landed_after_error: Counter,
    /// 1 while this node holds a tenant table's compactor lease.
    pub compactor_lease_held: Family<TenantLabel, Gauge>,
    pub files_written: Counter,
    pub files_expired: Counter,
    pub files_vacuumed: Counter,
    pub rows_written: Counter,
    pub bytes_written: Counter,
    pub buffer_rows: Family<TenantLabel, Gauge>,
    pub buffer_bytes: Family<TenantLabel, Gauge>,
    pub compactions: Counter,
    pub compactions_abandoned: Counter,
    pub compactions_failed: Counter,
    pub compaction_seconds: Histogram,
    pub compaction_paused_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub compaction_files_in: Counter,
    pub compaction_files_out: Counter,
    pub compaction_rows: Counter,
    pub compaction_bytes_read: Counter,
    pub compaction_bytes_written: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        Self {
            kafka: Default::default(),
            spans_received: Family::default(),
            spans_accepted: Family::default(),
            spans_rejected: Family::default(),
            request_errors: Family::default(),
            limited: Family::default(),
            wal_bytes: Counter::default(),
            wal_fsync_seconds: seconds(),
            wal_segments: Family::default(),
            flush_seconds: seconds(),
            commit_seconds: seconds(),
            commit_conflicts: Counter::default(),
            commits_landed_after_error: Counter::default(),
            compactor_lease_held: Family::default(),
            files_expired: Counter::default(),
            files_vacuumed: Counter::default(),
            files_written: Counter::default(),
            rows_written: Counter::default(),
            bytes_written: Counter::default(),
            buffer_rows: Family::default(),
            buffer_bytes: Family::default(),
            compactions: Counter::default(),
            compactions_abandoned: Counter::default(),
            compactions_failed: Counter::default(),
            compaction_seconds: seconds(),
            compaction_paused_seconds: Counter::default(),
            compaction_files_in: Counter::default(),
            compaction_files_out: Counter::default(),
            compaction_rows: Counter::default(),
            compaction_bytes_read: Counter::default(),
            compaction_bytes_written: Counter::default(),
        }
    }
}

impl Metrics {
    /// The gauges of `tenant`.
    pub fn tenant_gauges(&self, tenant: &str) -> TenantGauges {
        let label = [("tenant", tenant.to_string())];
        TenantGauges {
            wal_segments: self.wal_segments.get_or_create(&label).clone(),
            buffer_rows: self.buffer_rows.get_or_create(&label).clone(),
            buffer_bytes: self.buffer_bytes.get_or_create(&label).clone(),
        }
    }

    /// Registers every metric under the `tracelake_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tracelake");
        r.register(
            "spans_received",
            "Spans received, by protocol",
            self.spans_received.clone(),
        );
        r.register(
            "spans_accepted",
            "Spans accepted (durable in the write-ahead log), by protocol",
            self.spans_accepted.clone(),
        );
        r.register(
            "spans_rejected",
            "Spans rejected individually, by protocol and reason",
            self.spans_rejected.clone(),
        );
        r.register(
            "request_errors",
            "Ingest requests that failed as a whole, by protocol and reason",
            self.request_errors.clone(),
        );
        r.register(
            "limited_requests",
            "Requests refused (or spans rejected) for a tenant's limit (ingestion_rate, \
             max_spans_per_request, max_bytes_per_trace, max_concurrent_queries) or the \
             server's (max_repeated_bytes), by tenant and limit",
            self.limited.clone(),
        );
        r.register_with_unit(
            "wal_written",
            "Bytes appended to the write-ahead log",
            Unit::Bytes,
            self.wal_bytes.clone(),
        );
        r.register_with_unit(
            "wal_fsync",
            "Duration of write-ahead log fsyncs",
            Unit::Seconds,
            self.wal_fsync_seconds.clone(),
        );
        r.register(
            "wal_segments",
            "Write-ahead log segments on disk",
            self.wal_segments.clone(),
        );
        r.register_with_unit(
            "flush",
            "Duration of a buffer flush (Parquet encoding, upload and commit)",
            Unit::Seconds,
            self.flush_seconds.clone(),
        );
        r.register_with_unit(
            "commit",
            "Duration of a Delta table commit",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        r.register(
            "commit_conflicts",
            "Table commits tried again because another commit (another node's) took their \
             log version first",
            self.commit_conflicts.clone(),
        );
        r.register(
            "commits_landed_after_error",
            "Flush commits that reported an error (an answer lost) but had landed; their rows \
             were not committed again",
            self.commits_landed_after_error.clone(),
        );
        r.register(
            "compactor_lease_held",
            "1 while this node holds the tenant's compactor lease (compaction, retention and \
             vacuum run there only)",
            self.compactor_lease_held.clone(),
        );
        r.register(
            "files_written",
            "Parquet files written",
            self.files_written.clone(),
        );
        r.register(
            "files_expired",
            "Parquet files removed from the table by retention",
            self.files_expired.clone(),
        );
        r.register(
            "files_vacuumed",
            "Files deleted from storage by vacuum (expired or never committed)",
            self.files_vacuumed.clone(),
        );
        r.register(
            "rows_written",
            "Rows written to Parquet files",
            self.rows_written.clone(),
        );
        r.register_with_unit(
            "file_written",
            "Bytes of Parquet files written",
            Unit::Bytes,
            self.bytes_written.clone(),
        );
        r.register(
            "buffer_rows",
            "Rows buffered in memory, not yet committed to the table",
            self.buffer_rows.clone(),
        );
        r.register_with_unit(
            "buffer",
            "Arrow memory of buffered rows",
            Unit::Bytes,
            self.buffer_bytes.clone(),
        );
        r.register(
            "compactions",
            "Compaction jobs committed",
            self.compactions.clone(),
        );
        r.register(
            "compactions_abandoned",
            "Compaction jobs dropped because an input left the table meanwhile",
            self.compactions_abandoned.clone(),
        );
        r.register(
            "compactions_failed",
            "Compaction runs that failed (retried at the next check)",
            self.compactions_failed.clone(),
        );
        r.register_with_unit(
            "compaction",
            "Duration of a compaction job",
            Unit::Seconds,
            self.compaction_seconds.clone(),
        );
        r.register_with_unit(
            "compaction_paused",
            "Time compaction waited for the ingest buffer to drain",
            Unit::Seconds,
            self.compaction_paused_seconds.clone(),
        );
        r.register(
            "compaction_files_in",
            "Files replaced by compaction",
            self.compaction_files_in.clone(),
        );
        r.register(
            "compaction_files_out",
            "Files written by compaction",
            self.compaction_files_out.clone(),
        );
        r.register(
            "compaction_rows",
            "Rows rewritten by compaction",
            self.compaction_rows.clone(),
        );
        r.register_with_unit(
            "compaction_read",
            "Bytes of files replaced by compaction",
            Unit::Bytes,
            self.compaction_bytes_read.clone(),
        );
        r.register_with_unit(
            "compaction_written",
            "Bytes of files written by compaction",
            Unit::Bytes,
            self.compaction_bytes_written.clone(),
        );
    }
}
