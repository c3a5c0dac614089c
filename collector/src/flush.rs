//! Moves buffered rows into the table: Parquet files per partition, one Delta
//! commit carrying the WAL watermark, then the WAL segments are released.
//!
//! A flush takes every active partition at once, so one commit covers a
//! contiguous prefix of the WAL and the watermark stays exact. If a step
//! before the commit fails the rows go back to the buffer (still in the
//! WAL) and are retried; if the commit itself fails, it may have landed
//! all the same, so its rows stay flushing until the next flush has read
//! the table and knows. Files uploaded by a failed flush are never
//! committed and are deleted by vacuum once older than its grace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use deltalake::ObjectStore;
use deltalake::Path;
use object_store::ObjectStoreExt as _;
use tokio::sync::{Mutex, Notify, watch};

use crate::buffer::{Buffer, PartitionKey};
use crate::lease::Lease;
use crate::metrics::Metrics;
use crate::table::Table;
use crate::wal::Wal;
use crate::writer::{DataFile, write_partition};
use tracelake_schema::trace_keys;

/// When the buffer is written to the table.
#[derive(Debug, Clone, Copy)]
pub struct FlushConfig {
    /// Flush once the oldest buffered row is this old.
    pub max_age: Duration,
    /// Flush once this many Arrow bytes are buffered.
    pub max_bytes: usize,
}

/// When data leaves the table.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Partitions whose hour ended longer ago than this are removed from the
    /// table; `None` keeps everything.
    pub max_age: Option<Duration>,
    /// How often retention and vacuum run.
    pub check_every: Duration,
    /// Files no longer in the table are deleted from storage once they are
    /// this old, so queries already reading them finish.
    pub vacuum_grace: Duration,
}

/// Error of one flush.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing parquet: {0}")]
    Write(#[from] crate::writer::Error),
    #[error("uploading {path}: {source}")]
    Upload {
        path: String,
        source: object_store::Error,
    },
    #[error(transparent)]
    Table(#[from] crate::table::Error),
    #[error(transparent)]
    Wal(#[from] crate::wal::Error),
    #[error("flush task failed: {0}")]
    Task(String),
    #[error("committing: {0}")]
    Commit(std::io::Error),
    #[error(
        "files uploaded {seconds:.0} s ago not committed: vacuum may delete files not in the \
         table once they are {grace_seconds} s old (--vacuum-grace); they are written again"
    )]
    TooSlow { seconds: f64, grace_seconds: u64 },
}

/// Whether this node keeps the table in shape: compaction's commits,
/// retention and vacuum.
#[derive(Debug, Clone)]
pub enum Maintenance {
    /// Another node's job (this one only ingests).
    Off,
    /// This node's job; with a lease (a table on an object store), only
    /// while it holds it.
    On(Option<Arc<Lease>>),
}

impl Maintenance {
    /// Whether table maintenance may run here now.
    pub fn allowed(&self) -> bool {
        match self {
            Maintenance::Off => false,
            Maintenance::On(None) => true,
            Maintenance::On(Some(lease)) => lease.held(),
        }
    }
}

pub struct Flusher {
    buffer: Arc<Buffer>,
    table: Arc<Table>,
    /// `None` on a node that does not ingest (nothing is ever buffered).
    wal: Option<Arc<Wal>>,
    maintenance: Maintenance,
    store: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
    config: FlushConfig,
    retention: RetentionConfig,
    /// `retention.max_age`, changeable while running ([`Flusher::set_retention`]).
    max_age: parking_lot::Mutex<Option<Duration>>,
    /// The WAL watermark of a flush whose commit failed in a way that may
    /// have landed ([`Flusher::settle_uncertain`]).
    uncertain: parking_lot::Mutex<Option<u64>>,
    /// When this node's last vacuum started.
    last_vacuum: parking_lot::Mutex<Option<Instant>>,
    /// One table change (flush, retention) at a time.
    running: Mutex<()>,
}

impl Flusher {
    pub async fn new(
        buffer: Arc<Buffer>,
        table: Arc<Table>,
        wal: Option<Arc<Wal>>,
        metrics: Arc<Metrics>,
        config: FlushConfig,
        retention: RetentionConfig,
        maintenance: Maintenance,
    ) -> Self {
        let store = table.object_store().await;
        Self {
            buffer,
            table,
            wal,
            maintenance,
            store,
            metrics,
            config,
            max_age: parking_lot::Mutex::new(retention.max_age),
            retention,
            last_vacuum: parking_lot::Mutex::new(None),
            uncertain: parking_lot::Mutex::new(None),
            running: Mutex::new(()),
        }
    }

    /// Whether this node may change the table's shape now (compaction,
    /// retention, vacuum).
    pub fn maintains(&self) -> bool {
        self.maintenance.allowed()
    }

    /// Replaces files by rewritten ones holding the same rows (compaction),
    /// between flushes; `false` when one of `removed` has left the table,
    /// or this node no longer holds the compactor lease.
    /// `written_since`: when the first of `adds` was written. A vacuum
    /// (this node's: only the compactor vacuums) that started more than the
    /// grace after it may have deleted them as files not in the table: then
    /// nothing is committed.
    pub async fn replace_files(
        &self,
        removed: &[String],
        adds: Vec<deltalake::kernel::Add>,
        written_since: Instant,
    ) -> Result<bool, crate::table::Error> {
        let _guard = self.running.lock().await;
        let fault = |point| {
            crate::faults::hit(point).map_err(|source| crate::table::Error::Fault { point, source })
        };
        fault("compact.commit")?;
        if !self.maintenance.allowed() {
            tracing::warn!("compaction not committed: the compactor lease is no longer held");
            return Ok(false);
        }
        if self
            .last_vacuum
            .lock()
            .is_some_and(|v| v > written_since + self.retention.vacuum_grace)
        {
            tracing::warn!(
                seconds = written_since.elapsed().as_secs_f64(),
                "compaction not committed: a vacuum ran more than the grace after its files \
                 were written"
            );
            return Ok(false);
        }
        let allowed = || self.maintenance.allowed();
        let Some(version) = self.table.replace(removed, adds, &allowed).await? else {
            return Ok(false);
        };
        fault("compact.committed")?;
        self.buffer.committed(version);
        Ok(true)
    }

    /// Changes the retention (a tenant's limits changed); the next check
    /// applies it.
    pub fn set_retention(&self, max_age: Option<Duration>) {
        *self.max_age.lock() = max_age;
    }

    /// The retention in force.
    pub fn retention(&self) -> Option<Duration> {
        *self.max_age.lock()
    }

    /// Retention and clean-up: removes partitions older than the retention
    /// from the table (one commit), then vacuums files no longer in the
    /// table (expired, compacted away, or of failed flushes) that are older
    /// than the grace period. Runs between flushes, so the buffer's table
    /// version moves with it. Returns (files removed from the table, files
    /// deleted from storage).
    pub async fn expire(&self) -> Result<(usize, usize), Error> {
        let _guard = self.running.lock().await;
        if !self.maintenance.allowed() {
            return Ok((0, 0));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut removed = 0;
        let max_age = *self.max_age.lock();
        if let Some(max_age) = max_age
            && let Some((version, files)) = self
                .table
                .expire(now.saturating_sub(i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX)))
                .await?
        {
            self.buffer.committed(version);
            self.metrics.files_expired.inc_by(files as u64);
            tracing::info!(
                files,
                version,
                "retention removed expired partitions from the table"
            );
            removed = files;
        }
        if !self.maintenance.allowed() {
            return Ok((removed, 0));
        }
        *self.last_vacuum.lock() = Some(Instant::now());
        let (version, deleted) = self.table.vacuum(self.retention.vacuum_grace).await?;
        if let Some(version) = version {
            self.buffer.committed(version);
        }
        if deleted > 0 {
            self.metrics.files_vacuumed.inc_by(deleted as u64);
            tracing::info!(
                files = deleted,
                "vacuum deleted files no longer in the table"
            );
        }
        Ok((removed, deleted))
    }

    /// Flushes every active row; returns how many rows were committed.
    pub async fn flush(&self) -> Result<usize, Error> {
        let _guard = self.running.lock().await;
        self.settle_uncertain().await?;
        let Some(set) = self.buffer.take() else {
            return Ok(0);
        };
        let started = Instant::now();
        match self.write_and_commit(set.partitions, set.upto_seq).await {
            Ok(version) => {
                self.committed(version, set.upto_seq);
                self.metrics
                    .flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(rows = set.rows, version, upto_seq = set.upto_seq, "flushed");
                Ok(set.rows)
            }
            // Another process committed this node's watermark: two nodes
            // share a node id. Nothing is dropped; every flush fails loudly
            // until one of them stops.
            Err(e @ Error::Table(crate::table::Error::Fenced { .. })) => {
                self.buffer.restore();
                Err(e)
            }
            // The commit itself failed, and may have landed all the same
            // (an answer lost on the way back). The rows stay where they
            // are, flushing, until the table says (the next flush reads it
            // first): put back into the buffer, a landed commit's rows
            // would be committed again with the next ones.
            Err(e @ Error::Table(_)) => {
                *self.uncertain.lock() = Some(set.upto_seq);
                Err(e)
            }
            // Failed before the commit: nothing landed.
            Err(e) => {
                self.buffer.restore();
                Err(e)
            }
        }
    }

    /// The flushing rows are in table version `version`, up to WAL record
    /// `upto_seq`: drop them from the buffer, release the WAL.
    fn committed(&self, version: i64, upto_seq: u64) {
        self.buffer.committed(version);
        if let Err(error) = crate::faults::hit("flush.release")
            .map_err(crate::wal::Error::from_fault)
            .and_then(|()| match &self.wal {
                Some(wal) => wal.release(upto_seq),
                None => Ok(()),
            })
        {
            // The rows are committed; the segments go at the next release.
            tracing::error!(%error, "releasing wal segments failed");
        }
    }

    /// Decides a flush whose commit failed in a way that may have landed,
    /// from the table's latest version: landed (its watermark there), or
    /// not (its rows go back to the buffer). Until the table can be read,
    /// an error, and the rows stay flushing.
    async fn settle_uncertain(&self) -> Result<(), Error> {
        let Some(upto) = *self.uncertain.lock() else {
            return Ok(());
        };
        self.table.refresh().await?;
        let committed = self.table.committed_seq().await?;
        *self.uncertain.lock() = None;
        if committed >= upto {
            tracing::warn!(
                upto_seq = upto,
                committed,
                "a commit that reported an error had landed"
            );
            self.metrics.commits_landed_after_error.inc();
            let version = self
                .table
                .version()
                .await
                .ok_or_else(|| Error::Task("table without a version".into()))?;
            self.committed(version, upto);
        } else {
            self.buffer.restore();
        }
        Ok(())
    }

    async fn write_and_commit(
        &self,
        partitions: BTreeMap<PartitionKey, Vec<RecordBatch>>,
        upto_seq: u64,
    ) -> Result<i64, Error> {
        let files: Vec<DataFile> = tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|(key, batches)| write_partition(*key, batches))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        let mut adds = Vec::with_capacity(files.len());
        let uploaded = Instant::now();
        for file in files {
            let size = file.bytes.len() as u64;
            let upload_failed = |source| Error::Upload {
                path: file.path.clone(),
                source,
            };
            crate::faults::hit("flush.put").map_err(|e| {
                upload_failed(object_store::Error::Generic {
                    store: "fault point",
                    source: Box::new(e),
                })
            })?;
            self.store
                .put(&Path::from(file.path.as_str()), file.bytes.into())
                .await
                .map_err(upload_failed)?;
            let keys = trace_keys::keys_path(&file.path);
            self.store
                .put(
                    &Path::from(keys.as_str()),
                    trace_keys::encode(&file.keys).into(),
                )
                .await
                .map_err(|source| Error::Upload { path: keys, source })?;
            self.metrics.files_written.inc();
            self.metrics.rows_written.inc_by(file.rows as u64);
            self.metrics.bytes_written.inc_by(size);
            adds.push(file.add);
        }
        crate::faults::hit("flush.commit").map_err(Error::Commit)?;
        // Files not in the table are vacuumed once older than the grace. On
        // an object store another node (the compactor) vacuums, at any
        // moment: commit only files well younger than that. (A local table
        // is vacuumed by this process, never during a flush.)
        if self.table.url().scheme() != "file"
            && uploaded.elapsed() > self.retention.vacuum_grace / 2
        {
            return Err(Error::TooSlow {
                seconds: uploaded.elapsed().as_secs_f64(),
                grace_seconds: self.retention.vacuum_grace.as_secs(),
            });
        }
        Ok(self.table.commit(adds, upto_seq).await?)
    }

    /// Flushes whenever the buffer is due, until `shutdown` turns true; then
    /// flushes what is left.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let tick = Duration::from_millis(100).min(self.config.max_age);
        let mut next_retention = Instant::now() + self.retention.check_every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let due = self.buffer.due(self.config.max_age, self.config.max_bytes)
                || self.uncertain.lock().is_some();
            if due && let Err(error) = self.flush().await {
                tracing::error!(%error, "flush failed; rows stay buffered and will be retried");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if Instant::now() >= next_retention {
                if let Err(error) = self.expire().await {
                    tracing::error!(%error, "retention failed; it runs again at the next check");
                }
                next_retention = Instant::now() + self.retention.check_every;
            }
        }
    }

    /// Final flush at shutdown: retries a few times before giving up (the
    /// rows stay in the WAL and are replayed on the next start).
    pub async fn drain(&self) {
        for attempt in 0..3 {
            match self.flush().await {
                Ok(_) if self.buffer.snapshot().is_empty() => return,
                Ok(_) => continue,
                Err(error) => {
                    tracing::error!(%error, attempt, "final flush failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
