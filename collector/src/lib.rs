//! The write side of tracelake: receivers, write-ahead log, partition
//! buffers, Parquet writer and Delta table commits.
//!
//! Data flow: a receiver ([`otlp`]) decodes a request and calls
//! [`ingest::Ingest::export`], which converts it to Arrow, appends it to the
//! [`wal`] and the [`buffer`] in one step and acknowledges after the fsync.
//! The [`flush`] task writes due rows to Parquet ([`writer`]) and commits them
//! to the Delta [`table`], after which the WAL segments are released. Queries
//! read the buffer through [`buffer::Buffer::snapshot`].

mod body;
pub mod buffer;
pub mod compact;
pub mod faults;
pub mod flush;
pub mod ingest;
pub mod jaeger;
pub mod metrics;
pub mod otlp;
mod plain;
pub mod s3;
pub mod storage;
pub mod table;
pub mod upgrade;
pub mod wal;
pub mod writer;
pub mod zipkin;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use url::Url;

use crate::buffer::Buffer;
use crate::compact::Compactor;
use crate::flush::{FlushConfig, Flusher};
use crate::ingest::{Ingest, IngestConfig};
use crate::metrics::Metrics;
use crate::table::Table;
use crate::wal::Wal;

/// Error starting the collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Table(#[from] table::Error),
    #[error(transparent)]
    Wal(#[from] wal::Error),
    #[error("upgrading the table: {0}")]
    UpgradeTable(#[from] compact::Error),
    #[error("upgrading a write-ahead log record: {0}")]
    Upgrade(String),
}

/// Settings of the write side.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The tenant, for the metrics that are levels (buffer, WAL segments).
    pub tenant: String,
    /// URL of the spans Delta table.
    pub table_url: Url,
    /// Local directory of the write-ahead log.
    pub wal_dir: PathBuf,
    /// Size at which a WAL segment is closed and a new one started.
    pub wal_segment_bytes: u64,
    pub flush: FlushConfig,
    pub retention: flush::RetentionConfig,
    pub compaction: compact::CompactionConfig,
    pub ingest: IngestConfig,
    /// Largest accepted request body, after decompression.
    pub max_request_bytes: usize,
}

/// A running write side.
pub struct Collector {
    pub ingest: Arc<Ingest>,
    pub buffer: Arc<Buffer>,
    pub table: Arc<Table>,
    pub metrics: Arc<Metrics>,
    flusher: Arc<Flusher>,
    wal: Arc<Wal>,
    compactor: Arc<Compactor>,
    shutdown: watch::Sender<bool>,
    flush_task: JoinHandle<()>,
    compaction_thread: Option<std::thread::JoinHandle<()>>,
    max_request_bytes: usize,
}

impl Collector {
    /// Opens (or creates) the table, replays the WAL into the buffer and
    /// starts the flush task.
    pub async fn start(config: CollectorConfig, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let table = Arc::new(Table::open_or_create(&config.table_url, Arc::clone(&metrics)).await?);
        upgrade::run(&table).await?;
        let committed = table.committed_seq().await?;
        let gauges = metrics.tenant_gauges(&config.tenant);
        let (wal, replayed) = Wal::open(
            &config.wal_dir,
            committed,
            config.wal_segment_bytes,
            Arc::clone(&metrics),
            gauges.clone(),
        )?;
        let buffer = Arc::new(Buffer::new(table.version().await, gauges));
        let rows: usize = replayed.iter().map(|r| r.batch.num_rows()).sum();
        for record in &replayed {
            // Records written before an upgrade are in the older layout.
            if tracelake_schema::upgrade::layout_version(&record.batch.schema()) == 2 {
                let batch = tracelake_schema::upgrade::from_v2(&record.batch)
                    .map_err(|e| Error::Upgrade(e.to_string()))?;
                buffer.insert(record.seq, &batch);
            } else {
                buffer.insert(record.seq, &record.batch);
            }
        }
        if !replayed.is_empty() {
            tracing::info!(
                records = replayed.len(),
                rows,
                committed,
                "replayed write-ahead log"
            );
        }
        let wake = Arc::new(Notify::new());
        let ingest = Arc::new(Ingest::new(
            Arc::clone(&wal),
            Arc::clone(&buffer),
            Arc::clone(&metrics),
            config.ingest.clone(),
            Arc::clone(&wake),
        ));
        let flusher = Arc::new(
            Flusher::new(
                Arc::clone(&buffer),
                Arc::clone(&table),
                Arc::clone(&wal),
                Arc::clone(&metrics),
                config.flush,
                config.retention,
            )
            .await,
        );
        let compactor = Arc::new(
            Compactor::new(
                Arc::clone(&table),
                Arc::clone(&flusher),
                Arc::clone(&buffer),
                Arc::clone(&metrics),
                config.compaction,
                config.ingest.max_buffer_bytes,
            )
            .await,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let compaction_thread = config
            .compaction
            .enabled
            .then(|| Arc::clone(&compactor).spawn(shutdown_rx.clone()));
        let flush_task = tokio::spawn(Arc::clone(&flusher).run(wake, shutdown_rx));
        Ok(Self {
            ingest,
            buffer,
            table,
            metrics,
            flusher,
            compactor,
            wal,
            shutdown,
            flush_task,
            compaction_thread,
            max_request_bytes: config.max_request_bytes,
        })
    }

    /// OTLP/gRPC `TraceService` router.
    pub fn otlp_grpc_router(&self) -> axum::Router {
        otlp::grpc::router(Arc::clone(&self.ingest), self.max_request_bytes)
    }

    /// OTLP/HTTP `/v1/traces` router.
    pub fn otlp_http_router(&self) -> axum::Router {
        otlp::http::router(Arc::clone(&self.ingest), self.max_request_bytes)
    }

    /// Jaeger thrift-over-HTTP `POST /api/traces` router.
    pub fn jaeger_http_router(&self) -> axum::Router {
        jaeger::router(Arc::clone(&self.ingest), self.max_request_bytes)
    }

    /// Receives Jaeger agent datagrams on `socket` until `stop` is true.
    pub fn jaeger_udp(
        &self,
        socket: tokio::net::UdpSocket,
        protocol: tracelake_protocols::jaeger::Protocol,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + use<> {
        jaeger::serve_udp(Arc::clone(&self.ingest), socket, protocol, stop)
    }

    /// Zipkin `POST /api/v2/spans` router.
    pub fn zipkin_router(&self) -> axum::Router {
        zipkin::router(Arc::clone(&self.ingest), self.max_request_bytes)
    }

    /// `GET /api/v1/storage` router.
    pub fn storage_router(&self) -> axum::Router {
        storage::router(Arc::clone(&self.table))
    }

    /// Applies a tenant's limits: ingest limits and retention (`None`:
    /// keep everything), from the next request and the next check on.
    pub fn set_limits(&self, ingest: ingest::IngestLimits, retention: Option<std::time::Duration>) {
        self.ingest.set_limits(ingest);
        self.flusher.set_retention(retention);
    }

    /// The retention in force.
    pub fn retention(&self) -> Option<std::time::Duration> {
        self.flusher.retention()
    }

    /// Flushes everything buffered now (tests, admin).
    pub async fn flush(&self) -> Result<usize, flush::Error> {
        self.flusher.flush().await
    }

    /// Compacts every due partition now (tests, benchmarks); returns what
    /// each job did.
    pub async fn compact(&self) -> Result<Vec<compact::JobReport>, compact::Error> {
        let (_keep, running) = watch::channel(false);
        self.compactor.compact_due(&running).await
    }

    /// Stops the flush task and compaction, commits everything buffered and
    /// closes the WAL. Call after the receivers have stopped accepting
    /// requests.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        let _ = self.flush_task.await;
        if let Some(thread) = self.compaction_thread {
            // A running job stops at its next batch; its files are vacuumed.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.flusher.drain().await;
        self.wal.close();
    }
}
