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
pub mod kafka;
pub mod lease;
pub mod live;
pub mod metrics;
pub mod otlp;
mod plain;
pub mod s3;
pub mod storage;
pub mod table;
#[cfg(test)]
mod test_spans;
pub mod upgrade;
pub mod wal;
pub mod writer;
pub mod zipkin;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracelake_schema::layout::Layout;
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
    #[error(
        "the write-ahead log in {dir} belongs to node {found:?}, and this node is {wanted:?}: \
         its records are committed under their node's id, so start with --node-id {found:?} \
         (or move the directory away once that node's records are in the table)"
    )]
    OtherNode {
        dir: String,
        found: String,
        wanted: String,
    },
    #[error("the write-ahead log's node file {path}: {source}")]
    NodeFile {
        path: String,
        source: std::io::Error,
    },
}

/// What this process does with a table, and under which name.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name: its WAL watermark is committed under the
    /// application id [`table::wal_app_id`] of it. `None`: the unnamed
    /// node (one process on a local disk, as before nodes had names).
    pub id: Option<String>,
    /// Receives spans: WAL, buffer and flushes.
    pub ingest: bool,
    /// Compacts, applies retention and vacuums; on an object store only
    /// while holding the table's [`lease::Lease`].
    pub compact: bool,
    /// How long a compactor lease lasts without renewal.
    pub lease_ttl: std::time::Duration,
}

impl Default for NodeConfig {
    /// One process doing everything (`--role all`).
    fn default() -> Self {
        Self {
            id: None,
            ingest: true,
            compact: true,
            lease_ttl: std::time::Duration::from_secs(30),
        }
    }
}

/// The file in a WAL directory naming the node whose records it holds.
const NODE_FILE: &str = "NODE";

/// Ties the WAL directory `dir` to node `id` (empty: the unnamed node): a
/// directory written by another node is refused, since its records would
/// be compared with the wrong watermark (and skipped as committed). Returns
/// whether `dir` held records from before WAL directories named their node
/// (written by the unnamed node, whose watermark they then go by).
fn claim_wal(dir: &std::path::Path, id: Option<&str>) -> Result<bool, Error> {
    let wanted = id.unwrap_or_default();
    let path = dir.join(NODE_FILE);
    let node_error = |source| Error::NodeFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == wanted => Ok(false),
        Ok(found) => Err(Error::OtherNode {
            dir: dir.display().to_string(),
            found: found.trim().to_string(),
            wanted: wanted.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(node_error)?;
            let older = std::fs::read_dir(dir)
                .map_err(node_error)?
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "wal"));
            // Written whole or not at all.
            let partial = dir.join(format!("{NODE_FILE}.partial"));
            std::fs::write(&partial, format!("{wanted}\n")).map_err(node_error)?;
            std::fs::rename(&partial, &path).map_err(node_error)?;
            Ok(older)
        }
        Err(e) => Err(node_error(e)),
    }
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
    /// The node's name and roles.
    pub node: NodeConfig,
    /// The Kafka receiver, on an ingest node of the tenant it feeds.
    pub kafka: Option<kafka::KafkaConfig>,
    /// Dedicated attribute columns the table gets, besides the built-in
    /// ones ([`tracelake_schema::layout`]); columns it has are kept.
    pub dedicated: Vec<tracelake_schema::layout::Configured>,
}

/// The lease's task and its stop signal, stopped when dropped.
struct LeaseTask(Option<(watch::Sender<bool>, JoinHandle<()>)>);

impl Drop for LeaseTask {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.0 {
            let _ = stop.send(true);
        }
    }
}

/// A running write side.
pub struct Collector {
    /// `None` on a node that does not ingest.
    pub ingest: Option<Arc<Ingest>>,
    pub buffer: Arc<Buffer>,
    pub table: Arc<Table>,
    pub metrics: Arc<Metrics>,
    flusher: Arc<Flusher>,
    wal: Option<Arc<Wal>>,
    compactor: Arc<Compactor>,
    shutdown: watch::Sender<bool>,
    flush_task: JoinHandle<()>,
    /// The lease's task and its stop signal, sent once the work it guards
    /// has stopped.
    lease_task: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    lease: Option<Arc<lease::Lease>>,
    kafka: Option<kafka::Kafka>,
    compaction_thread: Option<std::thread::JoinHandle<()>>,
    max_request_bytes: usize,
}

impl Collector {
    /// Opens (or creates) the table; on an ingest node replays the WAL
    /// into the buffer; starts the flush task, and on a compactor node the
    /// lease and compaction.
    pub async fn start(config: CollectorConfig, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let node = config.node.clone();
        let table = Arc::new(
            Table::open_or_create(&config.table_url, Arc::clone(&metrics))
                .await?
                .for_node(node.id.as_deref()),
        );
        // On an object store several processes may reach the table: the
        // compactor's work (and an upgrade) waits for the lease. A local
        // table has one.
        let shared = config.table_url.scheme() != "file";
        let lease = if node.compact && shared {
            let name = node
                .id
                .clone()
                .unwrap_or_else(|| format!("unnamed-{}", uuid::Uuid::new_v4().simple()));
            let store = table.object_store().await;
            Some(Arc::new(lease::Lease::new(store, name, node.lease_ttl)))
        } else {
            None
        };
        // Stopped (and the lease given up) if the start fails from here.
        let mut lease_task = LeaseTask(lease.clone().map(|lease| {
            let held = metrics
                .compactor_lease_held
                .get_or_create(&[("tenant", config.tenant.clone())])
                .clone();
            let (stop, stopped) = watch::channel(false);
            (stop, tokio::spawn(lease.run(stopped, held)))
        }));
        upgrade::bring_up_to_date(&table, shared, lease.as_deref()).await?;
        // The layout rows are built in from here on: the table's, with
        // the configured columns it lacks added (by an ingest node; the
        // others only read them).
        let layout = if node.ingest && !config.dedicated.is_empty() {
            table.add_dedicated_columns(&config.dedicated).await?
        } else {
            table.layout()
        };
        let gauges = metrics.tenant_gauges(&config.tenant);
        let (wal, replayed) = if node.ingest {
            let mut committed = table.committed_seq().await?;
            if claim_wal(&config.wal_dir, node.id.as_deref())? {
                // Records of the unnamed node, committed under its id so
                // far: those it committed are not replayed.
                committed = committed.max(table.committed_seq_of(table::WAL_APP_ID).await?);
            }
            let (wal, replayed) = Wal::open(
                &config.wal_dir,
                committed,
                config.wal_segment_bytes,
                Arc::clone(&metrics),
                gauges.clone(),
            )?;
            (Some(wal), replayed)
        } else {
            (None, Vec::new())
        };
        let committed = table.committed_seq().await?;
        let buffer = Arc::new(Buffer::new(table.version().await, gauges));
        let rows: usize = replayed.iter().map(|r| r.batch.num_rows()).sum();
        for record in &replayed {
            // Records written before an upgrade are in the older layout;
            // those written before a column was added lack it.
            let batch = if tracelake_schema::upgrade::layout_version(&record.batch.schema()) == 2 {
                tracelake_schema::upgrade::from_v2(&record.batch)
                    .map_err(|e| Error::Upgrade(e.to_string()))?
            } else {
                record.batch.clone()
            };
            let batch = Layout::conform(&batch, layout.schema())
                .map_err(|e| Error::Upgrade(format!("WAL record {}: {e}", record.seq)))?;
            buffer.insert(record.seq, &batch);
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
        let ingest = wal.as_ref().map(|wal| {
            Arc::new(Ingest::new(
                Arc::clone(wal),
                Arc::clone(&buffer),
                Arc::clone(&metrics),
                config.ingest.clone(),
                Arc::clone(&wake),
                Arc::clone(&layout),
            ))
        });
        let maintenance = if node.compact {
            flush::Maintenance::On(lease.clone())
        } else {
            flush::Maintenance::Off
        };
        let flusher = Arc::new(
            Flusher::new(
                Arc::clone(&buffer),
                Arc::clone(&table),
                wal.clone(),
                Arc::clone(&metrics),
                config.flush,
                config.retention,
                maintenance,
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
                config.flush.max_bytes,
                config.ingest.max_buffer_bytes,
            )
            .await,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let compaction_thread = (node.compact && config.compaction.enabled)
            .then(|| Arc::clone(&compactor).spawn(shutdown_rx.clone()));
        let flush_task = tokio::spawn(Arc::clone(&flusher).run(wake, shutdown_rx));
        let kafka = match (&config.kafka, &ingest) {
            (Some(settings), Some(_)) => Some(kafka::Kafka::start(
                settings.clone(),
                Arc::clone(&table),
                table.object_store().await,
                config.ingest.clone(),
                config.flush,
                config.retention.vacuum_grace,
                Arc::clone(&metrics),
            )),
            _ => None,
        };
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
            lease_task: lease_task.0.take(),
            lease,
            kafka,
            compaction_thread,
            max_request_bytes: config.max_request_bytes,
        })
    }

    /// What this node knows of the table's compactor lease, on a compactor
    /// node of a table on an object store (elsewhere there is none).
    pub fn lease_state(&self) -> Option<lease::LeaseState> {
        self.lease.as_ref().map(|lease| lease.state())
    }

    /// The Kafka receiver's partitions, when this node runs one.
    pub fn kafka(&self) -> Option<kafka::KafkaView> {
        self.kafka.as_ref().map(kafka::Kafka::view)
    }

    /// `make(ingest, max_request_bytes)`, or an empty router on a node
    /// that does not ingest.
    fn receiver(&self, make: fn(Arc<Ingest>, usize) -> axum::Router) -> axum::Router {
        match &self.ingest {
            Some(ingest) => make(Arc::clone(ingest), self.max_request_bytes),
            None => axum::Router::new(),
        }
    }

    /// OTLP/gRPC `TraceService` router.
    pub fn otlp_grpc_router(&self) -> axum::Router {
        self.receiver(otlp::grpc::router)
    }

    /// OTLP/HTTP `/v1/traces` router.
    pub fn otlp_http_router(&self) -> axum::Router {
        self.receiver(otlp::http::router)
    }

    /// Jaeger thrift-over-HTTP `POST /api/traces` router.
    pub fn jaeger_http_router(&self) -> axum::Router {
        self.receiver(jaeger::router)
    }

    /// Receives Jaeger agent datagrams on `socket` until `stop` is true
    /// (`None` on a node that does not ingest).
    pub fn jaeger_udp(
        &self,
        socket: tokio::net::UdpSocket,
        protocol: tracelake_protocols::jaeger::Protocol,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + use<>> {
        let ingest = Arc::clone(self.ingest.as_ref()?);
        Some(jaeger::serve_udp(ingest, socket, protocol, stop))
    }

    /// Zipkin `POST /api/v2/spans` router.
    pub fn zipkin_router(&self) -> axum::Router {
        self.receiver(zipkin::router)
    }

    /// `GET /api/v1/internal/buffer` router (the buffered rows, for query
    /// nodes), or an empty router on a node that does not ingest.
    pub fn live_router(&self) -> axum::Router {
        match &self.ingest {
            Some(ingest) => live::router(
                Arc::clone(&self.buffer),
                self.table.app_id(),
                self.kafka(),
                Arc::clone(ingest.layout().schema()),
            ),
            None => axum::Router::new(),
        }
    }

    /// `GET /api/v1/storage` router.
    pub fn storage_router(&self) -> axum::Router {
        storage::router(Arc::clone(&self.table))
    }

    /// Applies a tenant's limits: ingest limits and retention (`None`:
    /// keep everything), from the next request and the next check on.
    pub fn set_limits(&self, ingest: ingest::IngestLimits, retention: Option<std::time::Duration>) {
        if let Some(receiver) = &self.ingest {
            receiver.set_limits(ingest);
        }
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
        if let Some(kafka) = self.kafka {
            // Its buffered rows are committed; what is not stays on Kafka.
            kafka.shutdown().await;
        }
        self.shutdown.send_replace(true);
        let _ = self.flush_task.await;
        if let Some(thread) = self.compaction_thread {
            // A running job stops at its next batch; its files are vacuumed.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some((stop, task)) = self.lease_task {
            // Compaction and retention have stopped: the lease is given up,
            // so that another compactor takes it at once.
            stop.send_replace(true);
            let _ = task.await;
        }
        self.flusher.drain().await;
        if let Some(wal) = self.wal {
            wal.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wal_directory_keeps_the_node_it_was_written_by() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        assert!(!claim_wal(&wal, Some("a")).unwrap());
        assert!(!claim_wal(&wal, Some("a")).unwrap());
        let err = claim_wal(&wal, Some("b")).unwrap_err().to_string();
        assert!(err.contains("belongs to node \"a\""), "{err}");
        // The unnamed node's directory is not a named node's either.
        let err = claim_wal(&wal, None).unwrap_err().to_string();
        assert!(err.contains("this node is \"\""), "{err}");
        let unnamed = dir.path().join("unnamed");
        claim_wal(&unnamed, None).unwrap();
        assert!(claim_wal(&unnamed, Some("a")).is_err());
        // A directory from before NODE files holds the unnamed node's
        // records: claimed, and said so (they go by its watermark).
        let older = dir.path().join("older");
        std::fs::create_dir_all(&older).unwrap();
        std::fs::write(older.join("00000000000000000001.wal"), b"").unwrap();
        assert!(claim_wal(&older, Some("a")).unwrap());
        assert!(!claim_wal(&older, Some("a")).unwrap());
    }
}
