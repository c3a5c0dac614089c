//! Compaction: the many small files that flushes leave in an hour partition
//! become a few large ones, sorted by [`SORT_COLUMNS`] with disjoint
//! `trace_key` ranges, so a lookup by trace id opens one file per partition
//! and reads one page per column of it.
//!
//! # How
//! A partition is due once its hour ended [`CompactionConfig::delay`] ago
//! and it holds files of more than one generation (a flushed file is its own
//! generation; the files of one full compaction share one). Every data file
//! is already sorted, so a job is a streaming k-way merge: each input is read
//! a row group at a time, rows are interleaved in key order into batches and
//! written to the output, which rolls over to a new file at
//! [`CompactionConfig::target_file_bytes`], always between two traces. At
//! most [`MAX_INPUTS`] files are merged at once, so memory stays bounded
//! by the inputs' row groups, never by the partition: a partition with
//! more is first merged in part, the smallest files into one, as few as
//! leave it whole merges of `MAX_INPUTS` (`job_inputs`), so that rows
//! are written again as few times as any order of merges allows.
//!
//! The outputs replace the inputs in one Delta commit (`Remove` + `Add` with
//! `dataChange: false`, operation `OPTIMIZE`), taken between flushes, so a
//! query reads either the old files or the new ones, never both or neither.
//! If any input left the table meanwhile (retention), the job is dropped and
//! its outputs, never committed, are vacuumed like the replaced inputs, after
//! the vacuum grace period.
//!
//! # Cost
//! Jobs run one at a time on one thread of their own, so compaction never
//! takes more than one core from ingest and queries. It pauses while the
//! ingest buffer holds more than a flush's worth of rows (or half its
//! limit): while a flush that the buffer's size started runs, and so all
//! the time while such flushes follow one another. Ingest then needs the
//! machine, and a lower priority did not keep compaction out of its way
//! (BENCHMARKS.md, "Compaction waits for a busy flush"). A job waits at
//! most four times as long as it has worked (plus two seconds), so under
//! ingest that never lets up compaction goes on at a fifth of its pace or
//! more, and catches up when ingest slows; a node that ingests at its
//! limit around the clock is better split into `ingest` and `compactor`
//! roles. The pause sees this node's request buffer for the tenant, not
//! the Kafka receiver's buffers nor other tenants'. Everything it does is
//! counted in `/metrics` (`tracelake_compaction_*`, the waits in
//! `tracelake_compaction_paused_seconds_total` as they pass).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, BinaryArray, Int64Array, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{Int64Type, SchemaRef};
use bytes::Bytes;
use deltalake::kernel::Add;
use deltalake::{ObjectStore, Path};
use futures::StreamExt as _;
use futures::future::{BoxFuture, FutureExt as _};
use object_store::ObjectStoreExt as _;
use object_store::buffered::BufWriter;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tokio::sync::watch;
use tracelake_schema::layout::Layout;
use tracelake_schema::spans::{START_TIME_UNIX_NANO, TRACE_ID, TRACE_KEY, empty_columns};

use crate::buffer::Buffer;
use crate::flush::Flusher;
use crate::metrics::Metrics;
use crate::table::{PartitionFile, Table};
use crate::writer::{Stats, add_action, batch_keys, interleave_in_batches, writer_properties};
use tracelake_schema::trace_keys::{self, KeysBuilder};

/// Most files merged by one job.
pub const MAX_INPUTS: usize = 32;
/// Rows per row group of a compacted file.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// zstd level of compacted files: level 9 saved 4% of the bytes but made
/// compaction 3-4x slower (BENCHMARKS.md), taking CPU from ingest.
const ZSTD_LEVEL: i32 = 3;
/// Rows read from an input at a time.
const READ_BATCH_ROWS: usize = 4096;
/// Rows per batch handed to the writer.
const WRITE_BATCH_ROWS: usize = 2048;
/// File name prefix of compacted files; the job id follows.
const COMPACTED_PREFIX: &str = "compacted-";

/// When and how partitions are compacted.
#[derive(Debug, Clone, Copy)]
pub struct CompactionConfig {
    /// `false` turns compaction off.
    pub enabled: bool,
    /// How often due partitions are looked for.
    pub check_every: Duration,
    /// A partition is compacted once its hour ended this long ago, so late
    /// spans have settled.
    pub delay: Duration,
    /// Size at which a compacted file is closed and the next one started
    /// (a partial merge's, [`MAX_INPUTS`] times this).
    pub target_file_bytes: u64,
    /// Nice value of the compaction thread (0 keeps the server's), so that
    /// ingest wins the CPU when both want it, applied by `lower_priority`
    /// on the thread when it starts (the binary passes the query
    /// executor's; the collector makes no system calls of that kind).
    pub nice: i32,
    pub lower_priority: fn(i32),
}

/// Error of a compaction job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("reading the size of {path}: {source}")]
    Stat {
        path: String,
        source: object_store::Error,
    },
    #[error("writing {path}: {source}")]
    Upload {
        path: String,
        source: object_store::Error,
    },
    #[error("merging rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{path}: unexpected columns")]
    Columns { path: String },
    #[error("upgrading {path}: {message}")]
    Upgrade { path: String, message: String },
    #[error(transparent)]
    Table(#[from] crate::table::Error),
    #[error("stopped")]
    Stopped,
    /// This node no longer holds the compactor lease: another one carries
    /// on.
    #[error("the compactor lease was lost")]
    LostLease,
    /// Files to replace were replaced first by another commit.
    #[error("{0} changed meanwhile (another node's commit)")]
    Changed(String),
}

/// What one job did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    pub partition: String,
    pub files_in: usize,
    pub files_out: usize,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `false` when an input left the table before the commit.
    pub committed: bool,
}

pub struct Compactor {
    table: Arc<Table>,
    flusher: Arc<Flusher>,
    buffer: Arc<Buffer>,
    store: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
    config: CompactionConfig,
    /// Compaction pauses while the buffer holds more than this many bytes
    /// ([`pause_above_bytes`]).
    pause_above_bytes: usize,
}

impl Compactor {
    pub async fn new(
        table: Arc<Table>,
        flusher: Arc<Flusher>,
        buffer: Arc<Buffer>,
        metrics: Arc<Metrics>,
        config: CompactionConfig,
        flush_max_bytes: usize,
        max_buffer_bytes: usize,
    ) -> Self {
        let store = table.object_store().await;
        Self {
            table,
            flusher,
            buffer,
            store,
            metrics,
            config,
            pause_above_bytes: pause_above_bytes(flush_max_bytes, max_buffer_bytes),
        }
    }

    /// Runs jobs until no partition is due; returns what each did.
    pub async fn compact_due(&self, stop: &watch::Receiver<bool>) -> Result<Vec<JobReport>, Error> {
        let mut reports = Vec::new();
        if !self.flusher.maintains() {
            // Another node compacts (it holds the lease).
            return Ok(reports);
        }
        while let Some((inputs, full)) = self.next_job(now_ns()).await? {
            if *stop.borrow() {
                return Err(Error::Stopped);
            }
            let report = self.run_job(inputs, full, stop).await?;
            let committed = report.committed;
            reports.push(report);
            if !committed {
                // The table changed under the job; look again next time.
                break;
            }
        }
        Ok(reports)
    }

    /// The files of the next job and whether they are all of their
    /// partition, or `None` when nothing is due.
    async fn next_job(&self, now_ns: i64) -> Result<Option<(Vec<PartitionFile>, bool)>, Error> {
        let delay = i64::try_from(self.config.delay.as_nanos()).unwrap_or(i64::MAX);
        let mut partitions: BTreeMap<String, Vec<PartitionFile>> = BTreeMap::new();
        for file in self.table.files().await? {
            if file.partition_end_ns <= now_ns.saturating_sub(delay) {
                partitions
                    .entry(file.partition.clone())
                    .or_default()
                    .push(file);
            }
        }
        // Oldest partition first.
        for (_, mut files) in partitions {
            if generations(&files) < 2 {
                continue;
            }
            let inputs = job_inputs(files.len(), MAX_INPUTS);
            let full = inputs == files.len();
            if !full {
                // Merge the smallest first: they are the flushed files.
                files.sort_by_key(|f| f.size);
                files.truncate(inputs);
            }
            return Ok(Some((files, full)));
        }
        Ok(None)
    }

    async fn run_job(
        &self,
        inputs: Vec<PartitionFile>,
        full: bool,
        stop: &watch::Receiver<bool>,
    ) -> Result<JobReport, Error> {
        let started = Instant::now();
        let partition = inputs[0].partition.clone();
        let job = uuid::Uuid::new_v4().simple().to_string();
        // The table's layout as of the listing that chose the inputs: the
        // output has every column any input (or the table) has.
        let schema = Arc::clone(self.table.layout().file_schema());
        let mut merge = Merge::open(&self.store, &inputs, &schema).await?;
        let mut outputs: Vec<Add> = Vec::new();
        let mut report = JobReport {
            partition: partition.clone(),
            files_in: inputs.len(),
            bytes_in: inputs.iter().map(|f| f.size).sum(),
            ..JobReport::default()
        };
        let mut out: Option<Output> = None;
        let mut pacing = Pacing::new(started);
        loop {
            // A partial merge writes one file up to what a full merge of
            // MAX_INPUTS files of the target size writes: the full merge
            // rewrites it, and the next job's inputs are then those
            // `job_inputs` counted on (it counts again at every job).
            let limit = if full {
                self.config.target_file_bytes
            } else {
                self.config
                    .target_file_bytes
                    .saturating_mul(MAX_INPUTS as u64)
            };
            if let Some(o) = out.as_mut().filter(|o| o.size() >= limit) {
                // Full: finish the trace key being written, then start anew.
                if let Some(batches) = merge.take(true).await? {
                    report.rows += o.write_all(&batches).await?;
                    continue;
                }
                if let Some(done) = out.take() {
                    outputs.push(done.close().await?);
                }
            }
            let Some(batches) = merge.take(false).await? else {
                break;
            };
            self.wait_for_ingest(&mut pacing, stop).await?;
            let o = match &mut out {
                Some(o) => o,
                None => out.insert(Output::create(
                    &self.store,
                    &partition,
                    full.then_some(job.as_str()),
                    outputs.len(),
                    &schema,
                    &merge.empty,
                )?),
            };
            report.rows += o.write_all(&batches).await?;
        }
        if let Some(done) = out.take() {
            outputs.push(done.close().await?);
        }
        report.files_out = outputs.len();
        report.bytes_out = outputs.iter().map(|a| a.size as u64).sum();
        let removed: Vec<String> = inputs.iter().map(|f| f.path.clone()).collect();
        report.committed = self
            .flusher
            .replace_files(&removed, outputs, started)
            .await?;
        let m = &self.metrics;
        m.compaction_seconds
            .observe(started.elapsed().as_secs_f64());
        if report.committed {
            m.compactions.inc();
            m.compaction_files_in.inc_by(report.files_in as u64);
            m.compaction_files_out.inc_by(report.files_out as u64);
            m.compaction_rows.inc_by(report.rows);
            m.compaction_bytes_read.inc_by(report.bytes_in);
            m.compaction_bytes_written.inc_by(report.bytes_out);
        } else {
            m.compactions_abandoned.inc();
        }
        tracing::info!(
            partition = %report.partition,
            files_in = report.files_in,
            files_out = report.files_out,
            rows = report.rows,
            bytes_in = report.bytes_in,
            bytes_out = report.bytes_out,
            committed = report.committed,
            seconds = started.elapsed().as_secs_f64(),
            "compaction job"
        );
        Ok(report)
    }

    /// Waits while ingest needs the machine more (the buffer holds a
    /// flush's worth), as long as `pacing` lets the job wait.
    async fn wait_for_ingest(
        &self,
        pacing: &mut Pacing,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Error> {
        pacing.work_until(Instant::now());
        while self.buffer.bytes() > self.pause_above_bytes && pacing.may_wait() {
            if *stop.borrow() {
                return Err(Error::Stopped);
            }
            let since = Instant::now();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let waited = since.elapsed();
            pacing.paused += waited;
            // Counted as it goes, so a long wait shows while it lasts.
            self.metrics
                .compaction_paused_seconds
                .inc_by(waited.as_secs_f64());
        }
        pacing.resumed = Instant::now();
        Ok(())
    }

    /// Compacts due partitions every `check_every` until `stop` turns true.
    /// Runs on a thread of its own (one core at most).
    pub fn spawn(self: Arc<Self>, stop: watch::Receiver<bool>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("tracelake-compaction".into())
            .spawn(move || {
                (self.config.lower_priority)(self.config.nice);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("compaction runtime");
                runtime.block_on(self.run(stop));
            })
            .expect("spawn compaction thread")
    }

    async fn run(&self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.check_every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.compact_due(&stop).await {
                Ok(_) | Err(Error::Stopped) => {}
                Err(error) => {
                    self.metrics.compactions_failed.inc();
                    tracing::error!(%error, "compaction failed; it is retried at the next check");
                }
            }
        }
    }
}

/// Buffered bytes above which compaction waits: a flush's worth
/// (`flush_max_bytes`, at which a flush is due), or half the buffer's
/// limit if that is less. During a flush the buffer holds the rows being
/// written and those arriving meanwhile, so it is above this while a
/// flush that the buffer's size started runs, and all the time while such
/// flushes follow one another; flushes that age starts (light ingest)
/// hold less.
///
/// Half the limit alone let compaction run through ingest at full rate:
/// in the benchmark runner's shape it took 0.31-0.35 of a core, at nice 10
/// or under SCHED_IDLE alike, and ingest lost 28 % of its rate (median of
/// three rounds).
fn pause_above_bytes(flush_max_bytes: usize, max_buffer_bytes: usize) -> usize {
    flush_max_bytes.min(max_buffer_bytes / 2)
}

/// A job waits for a busy flush at most this many times as long as it
/// has worked, plus [`PAUSE_GRACE`]: under ingest that keeps the flush
/// busy without a break (or flushes kept small, whose fixed cost makes
/// them follow one another at modest rates) compaction still goes on, at
/// a fifth of its pace or more.
const PAUSE_PER_WORK: u32 = 4;
/// What a job may wait before it has worked.
const PAUSE_GRACE: Duration = Duration::from_secs(2);

/// A job's time at work and waiting for ingest.
#[derive(Debug)]
struct Pacing {
    worked: Duration,
    paused: Duration,
    /// When the job last went to work (it started, or a wait ended).
    resumed: Instant,
}

impl Pacing {
    fn new(started: Instant) -> Self {
        Self {
            worked: Duration::ZERO,
            paused: Duration::ZERO,
            resumed: started,
        }
    }

    /// The job stopped working at `now`, to see whether it should wait.
    fn work_until(&mut self, now: Instant) {
        self.worked += now.saturating_duration_since(self.resumed);
        self.resumed = now;
    }

    /// Whether the job may wait longer: it has waited less than
    /// [`PAUSE_PER_WORK`] times its work plus [`PAUSE_GRACE`].
    fn may_wait(&self) -> bool {
        self.paused < self.worked * PAUSE_PER_WORK + PAUSE_GRACE
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// How many of a partition's `files` its next job merges, at most
/// `max_inputs` at once: all of them when they fit in one job; otherwise
/// the fewest of the smallest that leave a number of files which jobs of
/// `max_inputs` bring down to exactly one full job.
///
/// Every merge before the last rewrites its inputs once more, so the
/// order that rewrites the fewest rows is Huffman's for trees of
/// `max_inputs` children: one first merge of
/// `(files - 2) % (max_inputs - 1) + 2` files, then merges of
/// `max_inputs`, always of the smallest files. Merging `max_inputs`
/// first instead wrote the rows of an hour of 70 flushed files 1.85
/// times; this writes them 1.38 times (BENCHMARKS.md, "Compaction's
/// partial merges").
fn job_inputs(files: usize, max_inputs: usize) -> usize {
    debug_assert!(max_inputs >= 2);
    if files <= max_inputs {
        files
    } else {
        (files - 2) % (max_inputs - 1) + 2
    }
}

/// The job id of a file written by a full compaction.
fn compaction_job(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    let rest = name.strip_prefix(COMPACTED_PREFIX)?;
    rest.split_once('-').map(|(job, _)| job)
}

/// Generations among a partition's files: each job's files count once,
/// every other file once. One generation is a compacted partition.
pub fn generations(files: &[PartitionFile]) -> usize {
    let mut jobs: Vec<&str> = files
        .iter()
        .filter_map(|f| compaction_job(&f.path))
        .collect();
    let others = files.len() - jobs.len();
    jobs.sort_unstable();
    jobs.dedup();
    jobs.len() + others
}

/// Reads a Parquet file from the table's object store. Our own
/// `AsyncFileReader`, as parquet 59 asks: its `ParquetObjectReader` is
/// deprecated in favour of exactly this (apache/arrow-rs#10308).
#[derive(Clone)]
pub(crate) struct StoreReader {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: Path,
    pub(crate) size: u64,
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A Parquet file's rows in file order, a batch at a time: what
/// compaction and the upgrade read.
///
/// The reader decodes a batch's values of a column into one array, whose
/// 32-bit offsets address 2 GiB: rows averaging over 512 KiB in one column
/// fill that at compaction's [`READ_BATCH_ROWS`]. The reader then fails
/// ("index overflow decoding byte array", "would overflow list array"),
/// and the rest of the file is read again in batches of half the rows,
/// down to a row a batch, so a file of rows of any size is read whole.
pub(crate) struct FileBatches {
    stream: ParquetRecordBatchStream<StoreReader>,
    /// What the stream is built from, again when its batches are too large.
    reader: StoreReader,
    metadata: ArrowReaderMetadata,
    mask: ProjectionMask,
    /// Rows a batch is read in, halved each time a batch's rows were too
    /// large for one array.
    batch_rows: usize,
    /// Rows of the file read so far.
    read: usize,
}

impl FileBatches {
    /// The file of `reader`, whose metadata is `metadata`: the columns of
    /// `mask`, `batch_rows` rows a batch.
    pub(crate) fn new(
        reader: StoreReader,
        metadata: ArrowReaderMetadata,
        mask: ProjectionMask,
        batch_rows: usize,
    ) -> parquet::errors::Result<Self> {
        let stream = Self::stream(&reader, &metadata, &mask, batch_rows, 0)?;
        Ok(Self {
            stream,
            reader,
            metadata,
            mask,
            batch_rows,
            read: 0,
        })
    }

    /// The file's rows from row `read` on, in batches of `batch_rows`.
    fn stream(
        reader: &StoreReader,
        metadata: &ArrowReaderMetadata,
        mask: &ProjectionMask,
        batch_rows: usize,
        read: usize,
    ) -> parquet::errors::Result<ParquetRecordBatchStream<StoreReader>> {
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader.clone(), metadata.clone())
                .with_projection(mask.clone())
                .with_batch_size(batch_rows);
        if read > 0 {
            let rows: i64 = metadata
                .metadata()
                .row_groups()
                .iter()
                .map(|g| g.num_rows())
                .sum();
            let rows = rows as usize;
            builder = builder.with_row_selection(RowSelection::from(vec![
                RowSelector::skip(read),
                RowSelector::select(rows.saturating_sub(read)),
            ]));
        }
        builder.build()
    }

    /// The next batch; `None` at the end.
    pub(crate) async fn next(&mut self) -> Option<parquet::errors::Result<RecordBatch>> {
        loop {
            match self.stream.next().await? {
                Err(e) if overflowed(&e) && self.batch_rows > 1 => {
                    self.batch_rows /= 2;
                    tracing::info!(
                        path = %self.reader.path,
                        rows = self.batch_rows,
                        "a Parquet file read in smaller batches: {e}"
                    );
                    self.stream = match Self::stream(
                        &self.reader,
                        &self.metadata,
                        &self.mask,
                        self.batch_rows,
                        self.read,
                    ) {
                        Ok(stream) => stream,
                        Err(e) => return Some(Err(e)),
                    };
                }
                Ok(batch) => {
                    self.read += batch.num_rows();
                    return Some(Ok(batch));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Whether the reader failed for a batch too large for one array
/// ([`tracelake_schema::spans::batch_too_large_for_one_array`]).
fn overflowed(e: &parquet::errors::ParquetError) -> bool {
    use parquet::errors::ParquetError;
    matches!(
        e,
        ParquetError::General(m) | ParquetError::ArrowError(m)
            if tracelake_schema::spans::batch_too_large_for_one_array(m)
    )
}

/// One input being read in order.
struct Input {
    rows: FileBatches,
    path: String,
    /// The merge's schema, which every batch is given.
    schema: SchemaRef,
    batch: RecordBatch,
    keys: Int64Array,
    ids: BinaryArray,
    starts: Int64Array,
    row: usize,
    /// Index of `batch` among the batches of the pending output rows.
    slot: usize,
}

/// A row's position in [`crate::writer::SORT_COLUMNS`] order.
type SortKey = (i64, [u8; 16], i64);

impl Input {
    fn key(&self) -> SortKey {
        let id: [u8; 16] = self.ids.value(self.row).try_into().unwrap_or_default();
        (self.keys.value(self.row), id, self.starts.value(self.row))
    }

    /// Reads the next non-empty batch; `false` at the end.
    async fn advance(&mut self) -> Result<bool, Error> {
        while let Some(batch) = self.rows.next().await {
            let batch = batch.map_err(|source| Error::Read {
                path: self.path.clone(),
                source,
            })?;
            if batch.num_rows() == 0 {
                continue;
            }
            let columns = |name: &str| batch.column_by_name(name).cloned();
            let wrong = || Error::Columns {
                path: self.path.clone(),
            };
            self.keys = columns(TRACE_KEY)
                .and_then(|a| a.as_primitive_opt::<Int64Type>().cloned())
                .ok_or_else(wrong)?;
            self.ids = columns(TRACE_ID)
                .and_then(|a| a.as_binary_opt::<i32>().cloned())
                .ok_or_else(wrong)?;
            self.starts = columns(START_TIME_UNIX_NANO)
                .and_then(|a| a.as_primitive_opt::<Int64Type>().cloned())
                .ok_or_else(wrong)?;
            if self.keys.null_count() + self.starts.null_count() > 0 {
                return Err(wrong());
            }
            self.batch = Layout::conform(&batch, &self.schema).map_err(|source| Error::Read {
                path: self.path.clone(),
                source: source.into(),
            })?;
            self.row = 0;
            return Ok(true);
        }
        Ok(false)
    }
}

/// The k-way merge of sorted inputs.
struct Merge {
    inputs: Vec<Input>,
    /// Each input's next row: (sort key, input).
    heap: BinaryHeap<Reverse<(SortKey, usize)>>,
    /// Batches the pending rows point into.
    batches: Vec<RecordBatch>,
    /// Pending output rows: (batch, row).
    pending: Vec<(usize, usize)>,
    last_key: Option<i64>,
    /// The columns of the schema that no input holds a value in, by the
    /// inputs' metadata: each input lacks the column, lists it under
    /// `tracelake.empty.columns`, or counts it all null in every row group
    /// (a file an older build wrote lists nothing).
    empty: HashSet<String>,
}

impl Merge {
    /// The merge of `files` into rows of `schema` (a layout's file schema;
    /// a column an input lacks is null there).
    async fn open(
        store: &Arc<dyn ObjectStore>,
        files: &[PartitionFile],
        schema: &SchemaRef,
    ) -> Result<Self, Error> {
        let mut merge = Self {
            inputs: Vec::with_capacity(files.len()),
            heap: BinaryHeap::with_capacity(files.len()),
            batches: Vec::new(),
            pending: Vec::with_capacity(WRITE_BATCH_ROWS),
            last_key: None,
            empty: schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        for file in files {
            let read = |source| Error::Read {
                path: file.path.clone(),
                source,
            };
            let mut reader = StoreReader {
                store: Arc::clone(store),
                path: Path::from(file.path.as_str()),
                size: file.size,
            };
            let file_metadata = ArrowReaderMetadata::load_async(&mut reader, Default::default())
                .await
                .map_err(read)?;
            let metadata = file_metadata.metadata();
            let listed = empty_columns(
                metadata
                    .file_metadata()
                    .key_value_metadata()
                    .into_iter()
                    .flatten()
                    .map(|kv| (kv.key.as_str(), kv.value.as_deref())),
            );
            for group in metadata.row_groups() {
                for chunk in group.columns() {
                    let all_null = chunk
                        .statistics()
                        .and_then(|s| s.null_count_opt())
                        .is_some_and(|nulls| nulls == group.num_rows() as u64);
                    if let Some(column) = chunk.column_path().parts().first()
                        && !all_null
                        && !listed.contains(column.as_str())
                    {
                        merge.empty.remove(column);
                    }
                }
            }
            // Read the columns of today's schema, in its order.
            let mask = ProjectionMask::columns(
                file_metadata.parquet_schema(),
                schema.fields().iter().map(|f| f.name().as_str()),
            );
            let mut input = Input {
                rows: FileBatches::new(reader, file_metadata, mask, READ_BATCH_ROWS)
                    .map_err(read)?,
                path: file.path.clone(),
                schema: Arc::clone(schema),
                batch: RecordBatch::new_empty(Arc::clone(schema)),
                keys: Int64Array::from(Vec::<i64>::new()),
                ids: BinaryArray::from(Vec::<&[u8]>::new()),
                starts: Int64Array::from(Vec::<i64>::new()),
                row: 0,
                slot: 0,
            };
            if input.advance().await? {
                input.slot = merge.batches.len();
                merge.batches.push(input.batch.clone());
                merge.heap.push(Reverse((input.key(), merge.inputs.len())));
                merge.inputs.push(input);
            }
        }
        Ok(merge)
    }

    /// The next rows in order, at most [`WRITE_BATCH_ROWS`]; with
    /// `same_key`, only rows with the trace key of the last row taken (so a
    /// file can end between two traces). One batch, or more when the rows
    /// are too large for one ([`interleave_in_batches`]).
    async fn take(&mut self, same_key: bool) -> Result<Option<Vec<RecordBatch>>, Error> {
        while self.pending.len() < WRITE_BATCH_ROWS {
            let Some(Reverse((key, i))) = self.heap.peek().copied() else {
                break;
            };
            if same_key && self.last_key != Some(key.0) {
                break;
            }
            self.heap.pop();
            self.last_key = Some(key.0);
            let input = &mut self.inputs[i];
            self.pending.push((input.slot, input.row));
            input.row += 1;
            if input.row == input.batch.num_rows() {
                if !input.advance().await? {
                    continue;
                }
                input.slot = self.batches.len();
                self.batches.push(input.batch.clone());
            }
            self.heap.push(Reverse((input.key(), i)));
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let batches = interleave_in_batches(&self.pending, &mut |rows| {
            interleave_record_batch(&refs, rows)
        })?;
        self.pending.clear();
        // Keep only the batches the inputs still read from.
        self.batches.clear();
        for input in &mut self.inputs {
            input.slot = self.batches.len();
            self.batches.push(input.batch.clone());
        }
        Ok(Some(batches))
    }
}

/// A compacted file being written.
pub(crate) struct Output {
    store: Arc<dyn ObjectStore>,
    path: String,
    writer: AsyncArrowWriter<BufWriter>,
    stats: Stats,
    keys: KeysBuilder,
}

impl Output {
    pub(crate) fn create(
        store: &Arc<dyn ObjectStore>,
        partition: &str,
        job: Option<&str>,
        index: usize,
        schema: &SchemaRef,
        empty: &HashSet<String>,
    ) -> Result<Self, Error> {
        let name = match job {
            Some(job) => format!("{COMPACTED_PREFIX}{job}-{index:05}.zstd.parquet"),
            None => format!("part-{}.zstd.parquet", uuid::Uuid::new_v4()),
        };
        let path = format!("{partition}/{name}");
        let sink = BufWriter::new(Arc::clone(store), Path::from(path.as_str()));
        let props = writer_properties(schema, ROW_GROUP_ROWS, ZSTD_LEVEL, empty);
        let writer =
            AsyncArrowWriter::try_new(sink, Arc::clone(schema), Some(props)).map_err(|source| {
                Error::Write {
                    path: path.clone(),
                    source,
                }
            })?;
        Ok(Self {
            store: Arc::clone(store),
            path,
            writer,
            stats: Stats::default(),
            keys: KeysBuilder::new(),
        })
    }

    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Writes `batches` in order; the rows written.
    async fn write_all(&mut self, batches: &[RecordBatch]) -> Result<u64, Error> {
        for batch in batches {
            self.write(batch).await?;
        }
        Ok(batches.iter().map(|b| b.num_rows() as u64).sum())
    }

    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.stats.update(batch);
        self.keys
            .extend(batch_keys(batch).map_err(|_| Error::Columns {
                path: self.path.clone(),
            })?);
        self.writer
            .write(batch)
            .await
            .map_err(|source| Error::Write {
                path: self.path.clone(),
                source,
            })
    }

    pub(crate) async fn close(self) -> Result<Add, Error> {
        let Self {
            store,
            path,
            writer,
            stats,
            keys,
        } = self;
        writer.close().await.map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        let size = store
            .head(&Path::from(path.as_str()))
            .await
            .map_err(|source| Error::Stat {
                path: path.clone(),
                source,
            })?
            .size;
        let keys_path = trace_keys::keys_path(&path);
        store
            .put(
                &Path::from(keys_path.as_str()),
                trace_keys::encode(&keys.finish()).into(),
            )
            .await
            .map_err(|source| Error::Upload {
                path: keys_path,
                source,
            })?;
        let mut add = add_action(&path, size, &stats);
        add.data_change = false;
        Ok(add)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::Compression;
    use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use tracelake_schema::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use tracelake_schema::opentelemetry_proto::tonic::resource::v1::Resource;
    use tracelake_schema::opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span,
    };

    use super::*;
    use crate::flush::{FlushConfig, RetentionConfig};
    use crate::ingest::IngestConfig;
    use crate::{Collector, CollectorConfig};

    fn request(seed: u64, traces: u64, start: u64) -> ExportTraceServiceRequest {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let spans = (0..traces)
            .flat_map(|_| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&next().to_be_bytes());
                id[8..].copy_from_slice(&next().to_be_bytes());
                (1..=3u64).map(move |s| Span {
                    trace_id: id.to_vec(),
                    span_id: s.to_be_bytes().to_vec(),
                    name: "op".into(),
                    kind: 2,
                    start_time_unix_nano: start + s,
                    end_time_unix_nano: start + s + 1000,
                    ..Default::default()
                })
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("svc".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// (min, max) trace key of a local data file, checking it is sorted.
    fn key_range(path: &std::path::Path) -> (i64, i64, usize) {
        let file = std::fs::File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut keys = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let k = batch.column_by_name(TRACE_KEY).unwrap();
            keys.extend(k.as_primitive::<Int64Type>().values().iter().copied());
        }
        assert!(keys.is_sorted(), "{} is not sorted", path.display());
        (keys[0], keys[keys.len() - 1], keys.len())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_files_than_one_job_merges_into_one_generation_of_disjoint_files() {
        // The first job's 9 files (about 80 KB compacted) fit in one
        // partial file of up to 32 x 20,000 bytes.
        let reports = merge_forty_flushes(20_000).await;
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert_eq!(reports[0].files_out, 1, "{reports:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partial_merge_rolls_over_at_max_inputs_times_the_target_size() {
        // Up to 32 x 1,000 bytes a partial file: the 9 files' rows take
        // several, and the next job counts the files again.
        let reports = merge_forty_flushes(1_000).await;
        assert!(reports[0].files_out >= 2, "{reports:?}");
        assert_eq!(reports.len(), 3, "{reports:?}");
    }

    /// A node's settings for the tests: table and WAL under `dir`,
    /// flushes only when asked, compaction only when called, files of
    /// `target_file_bytes`.
    fn config(dir: &std::path::Path, target_file_bytes: u64) -> CollectorConfig {
        CollectorConfig {
            tenant: "test".into(),
            table_url: url::Url::from_directory_path(dir.join("table")).unwrap(),
            wal_dir: dir.join("wal"),
            wal_segment_bytes: 1 << 20,
            flush: FlushConfig {
                max_age: Duration::from_secs(3600),
                max_bytes: usize::MAX,
            },
            retention: RetentionConfig {
                max_age: None,
                check_every: Duration::from_secs(3600),
                vacuum_grace: Duration::from_secs(3600),
            },
            compaction: CompactionConfig {
                enabled: false,
                check_every: Duration::from_secs(3600),
                delay: Duration::ZERO,
                target_file_bytes,
                nice: 0,
                lower_priority: |_| {},
            },
            ingest: IngestConfig {
                max_span_age: Duration::from_secs(86_400),
                max_span_future: Duration::from_secs(3600),
                max_buffer_bytes: 1 << 30,
            },
            max_request_bytes: 1 << 20,
            node: crate::NodeConfig::default(),
            kafka: None,
            dedicated: Vec::new(),
        }
    }

    /// A buffer of `held` bytes that no flusher touches, and compactors
    /// watching it with the flush size they are given.
    async fn watching(
        dir: &std::path::Path,
    ) -> (
        Collector,
        Arc<Buffer>,
        usize,
        impl AsyncFn(usize) -> Compactor,
    ) {
        let collector = Collector::start(config(dir, 1 << 20), Arc::new(Metrics::default()))
            .await
            .unwrap();
        let buffer = Arc::new(Buffer::new(None, Default::default()));
        let start = (now_ns() as u64) - 3_600_000_000_000;
        let spans = request(1, 100, start).resource_spans[0].scope_spans[0]
            .spans
            .clone();
        buffer.insert(1, &crate::test_spans::batch(spans));
        let held = buffer.bytes();
        let max_buffer_bytes = 1 << 30;
        assert!(held < max_buffer_bytes / 2);
        let (table, flusher, metrics) = (
            Arc::clone(&collector.table),
            Arc::clone(&collector.flusher),
            Arc::clone(&collector.metrics),
        );
        let config = collector.compactor.config;
        let watched = Arc::clone(&buffer);
        let compactor = async move |flush_max_bytes| {
            Compactor::new(
                Arc::clone(&table),
                Arc::clone(&flusher),
                Arc::clone(&watched),
                Arc::clone(&metrics),
                config,
                flush_max_bytes,
                max_buffer_bytes,
            )
            .await
        };
        (collector, buffer, held, compactor)
    }

    /// Compaction waits while the buffer holds more than a flush's worth
    /// of rows, although that is far below half the buffer's limit, also
    /// while those rows are being flushed, and goes on once the flush is
    /// over; the wait is counted while it lasts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_waits_while_the_buffer_holds_a_flush_of_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (collector, buffer, held, compactor) = watching(dir.path()).await;
        let (_keep, stop) = watch::channel(false);

        // Flushes of just what the buffer holds: no wait.
        let roomy = compactor(held).await;
        let mut pacing = Pacing::new(Instant::now());
        tokio::time::timeout(
            Duration::from_millis(500),
            roomy.wait_for_ingest(&mut pacing, &stop),
        )
        .await
        .expect("no pause at a flush's worth")
        .unwrap();
        assert_eq!(pacing.paused, Duration::ZERO);

        // Flushes of a byte less: it waits, while the rows are active and
        // while they are flushing (well within the grace of a job that has
        // not worked yet).
        let busy = Arc::new(compactor(held - 1).await);
        let waiting = tokio::spawn({
            let busy = Arc::clone(&busy);
            let stop = stop.clone();
            async move {
                let mut pacing = Pacing::new(Instant::now());
                busy.wait_for_ingest(&mut pacing, &stop)
                    .await
                    .map(|()| pacing)
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "went on with a flush's worth buffered"
        );
        let counted = collector.metrics.compaction_paused_seconds.get();
        assert!(counted > 0.0, "the wait is not counted while it lasts");
        let taken = buffer.take().expect("rows to flush");
        assert_eq!(taken.rows, 300);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "went on while the rows were flushing"
        );
        buffer.committed(1);
        let pacing = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("goes on once the flush is over")
            .unwrap()
            .unwrap();
        assert!(pacing.paused < PAUSE_GRACE, "{pacing:?}");
        let counted = collector.metrics.compaction_paused_seconds.get();
        assert!(
            (counted - pacing.paused.as_secs_f64()).abs() < 1e-6,
            "{counted} s counted for {pacing:?}"
        );
        collector.shutdown().await;
    }

    /// A job waits for a flush that never ends at most PAUSE_GRACE, then
    /// PAUSE_PER_WORK times as long as it has worked; a stop ends a wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_waits_at_most_four_times_its_work() {
        let dir = tempfile::tempdir().unwrap();
        let (collector, _buffer, held, compactor) = watching(dir.path()).await;
        let busy = compactor(held - 1).await;
        let (stopping, stop) = watch::channel(false);

        let mut pacing = Pacing::new(Instant::now());
        let since = Instant::now();
        tokio::time::timeout(PAUSE_GRACE * 3, busy.wait_for_ingest(&mut pacing, &stop))
            .await
            .expect("a job that has not worked waits PAUSE_GRACE at most")
            .unwrap();
        let waited = since.elapsed();
        assert!(waited >= PAUSE_GRACE, "waited {waited:?} before working");

        // 250 ms of work earn a second more.
        let work = Duration::from_millis(250);
        pacing.resumed -= work;
        let before = pacing.paused;
        let since = Instant::now();
        tokio::time::timeout(PAUSE_GRACE * 3, busy.wait_for_ingest(&mut pacing, &stop))
            .await
            .expect("a job waits four times its work at most")
            .unwrap();
        let waited = since.elapsed();
        let allowed = PAUSE_GRACE + work * PAUSE_PER_WORK;
        assert!(
            waited >= allowed.saturating_sub(before),
            "waited {waited:?} after {work:?} of work, {before:?} before"
        );
        assert!(pacing.paused >= allowed && !pacing.may_wait(), "{pacing:?}");

        // A stop ends a wait.
        pacing.resumed -= Duration::from_secs(60);
        let waiting = busy.wait_for_ingest(&mut pacing, &stop);
        stopping.send_replace(true);
        let stopped = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(matches!(stopped, Ok(Err(Error::Stopped))), "{stopped:?}");
        collector.shutdown().await;
    }

    /// Compacts a closed hour of 40 flushed files into files of
    /// `target_file_bytes`, checks the result, and returns the jobs.
    async fn merge_forty_flushes(target_file_bytes: u64) -> Vec<JobReport> {
        let dir = tempfile::tempdir().unwrap();
        let table_dir = dir.path().join("table");
        let collector = Collector::start(
            config(dir.path(), target_file_bytes),
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap();
        // Two hours ago: a closed partition.
        let start = (now_ns() as u64) - 2 * 3_600_000_000_000;
        let flushes = MAX_INPUTS as u64 + 8;
        for f in 0..flushes {
            collector
                .ingest
                .as_ref()
                .expect("an ingest node")
                .export("test", request(f + 1, 100, start))
                .await
                .unwrap();
            collector.flush().await.unwrap();
        }
        assert_eq!(
            collector.table.files().await.unwrap().len(),
            flushes as usize
        );

        let reports = collector.compact().await.unwrap();
        // A partial merge of the 9 smallest files, which (written as one
        // file) leaves exactly MAX_INPUTS for the full merge: only 9 of the
        // 40 flushes' rows are written twice.
        let spans_per_flush = 100 * 3;
        assert_eq!(reports[0].files_in, 9);
        assert_eq!(reports[0].rows, 9 * spans_per_flush);
        let last = reports.last().unwrap();
        assert_eq!(last.files_in, MAX_INPUTS, "{reports:?}");
        assert_eq!(last.rows, flushes * spans_per_flush);
        assert!(reports.iter().all(|r| r.committed));
        let files = collector.table.files().await.unwrap();
        assert_eq!(generations(&files), 1, "{files:?}");
        assert!(files.len() >= 2, "{files:?}");
        // Nothing left to do.
        assert!(collector.compact().await.unwrap().is_empty());

        let mut ranges: Vec<(i64, i64, usize)> = files
            .iter()
            .map(|f| key_range(&table_dir.join(&f.path)))
            .collect();
        ranges.sort();
        assert!(
            ranges.windows(2).all(|w| w[0].1 < w[1].0),
            "ranges overlap: {ranges:?}"
        );
        let rows: usize = ranges.iter().map(|r| r.2).sum();
        assert_eq!(rows as u64, flushes * 100 * 3);
        let stats_rows: u64 = files.iter().filter_map(|f| f.rows).sum();
        assert_eq!(stats_rows, rows as u64);

        // Every span once.
        let mut seen = HashSet::new();
        for f in &files {
            let file = std::fs::File::open(table_dir.join(&f.path)).unwrap();
            for batch in ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
            {
                let batch = batch.unwrap();
                let ids = batch.column_by_name(TRACE_ID).unwrap().as_binary::<i32>();
                let spans = batch.column_by_name("span_id").unwrap().as_binary::<i32>();
                for i in 0..batch.num_rows() {
                    assert!(seen.insert((ids.value(i).to_vec(), spans.value(i).to_vec())));
                }
            }
        }
        assert_eq!(seen.len(), rows);

        // The columns no span set stay uncompressed through the merge; the
        // others are compressed.
        for f in &files {
            let file = std::fs::File::open(table_dir.join(&f.path)).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
            let compression = compressions(reader.metadata());
            let listed = empty_columns(
                reader
                    .metadata()
                    .file_metadata()
                    .key_value_metadata()
                    .unwrap()
                    .iter()
                    .map(|kv| (kv.key.as_str(), kv.value.as_deref())),
            );
            assert!(
                listed.contains("links") && listed.contains("http_route"),
                "{listed:?}"
            );
            assert!(!listed.contains("service_name") && !listed.contains("span_id"));
            assert_eq!(
                compression["links.list.element.span_id"],
                Compression::UNCOMPRESSED
            );
            assert_eq!(compression["http_route"], Compression::UNCOMPRESSED);
            assert!(matches!(compression["service_name"], Compression::ZSTD(_)));
            assert!(matches!(
                compression["resource_attributes.key_value.key"],
                Compression::ZSTD(_)
            ));
        }
        collector.shutdown().await;
        reports
    }

    /// Each leaf column's compression in every row group of a file.
    fn compressions(metadata: &ParquetMetaData) -> std::collections::HashMap<String, Compression> {
        let mut out = std::collections::HashMap::new();
        for group in metadata.row_groups() {
            for chunk in group.columns() {
                let path = chunk.column_path().string();
                let before = out.insert(path.clone(), chunk.compression());
                assert!(before.is_none_or(|b| b == chunk.compression()), "{path}");
            }
        }
        out
    }

    /// A merge reads which columns hold nothing from its inputs' metadata:
    /// those every input lists as such, or counts all null; not a list or
    /// map in a file of an older build, which lists nothing and counts no
    /// list's entries.
    #[tokio::test]
    async fn a_merge_finds_the_columns_its_inputs_hold_nothing_in() {
        use crate::writer::write_partition;
        use parquet::arrow::ArrowWriter;
        use tracelake_schema::otlp::{Acceptance, SpansBuilder};
        use tracelake_schema::spans::spans_schema;

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let start = (now_ns() as u64) - 2 * 3_600_000_000_000;
        let batch = |seed: u64, route: bool| {
            let mut request = request(seed, 10, start);
            if route {
                let spans = &mut request.resource_spans[0].scope_spans[0].spans;
                spans[0].attributes = vec![KeyValue {
                    key: "http.route".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("/a".into())),
                    }),
                    ..Default::default()
                }];
            }
            let mut builder = SpansBuilder::with_capacity(30);
            builder.append_request(&request, &Acceptance::ANY_TIME);
            builder.finish()
        };
        // This build's flush, with a route in one span; an older build's
        // file, every column compressed.
        let flushed = write_partition((20_000, 0), &[batch(1, true)]).unwrap();
        let older = {
            let file = write_partition((20_000, 0), &[batch(2, false)]).unwrap();
            let read: Vec<RecordBatch> =
                ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file.bytes))
                    .unwrap()
                    .build()
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
            let props = writer_properties(&read[0].schema(), 1024, 1, &HashSet::new());
            assert!(
                props
                    .key_value_metadata()
                    .unwrap()
                    .iter()
                    .all(|kv| kv.key != tracelake_schema::spans::EMPTY_COLUMNS_KEY)
            );
            let mut bytes = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut bytes, read[0].schema(), Some(props)).unwrap();
            for b in &read {
                writer.write(b).unwrap();
            }
            writer.close().unwrap();
            let path = file.path.replace("part-", "older-");
            (path, bytes)
        };
        let mut inputs = Vec::new();
        for (path, bytes) in [(flushed.path, flushed.bytes), older] {
            inputs.push(PartitionFile {
                size: bytes.len() as u64,
                path: path.clone(),
                rows: None,
                partition: "date=2024-10-04/hour=00".into(),
                partition_end_ns: 0,
            });
            store.put(&Path::from(path), bytes.into()).await.unwrap();
        }
        let schema = Arc::clone(Layout::of_schema(&spans_schema()).unwrap().file_schema());
        let flushed = Merge::open(&store, &inputs[..1], &schema)
            .await
            .unwrap()
            .empty;
        let both = Merge::open(&store, &inputs, &schema).await.unwrap().empty;
        for column in [
            "http_url",
            "db_system",
            "links",
            "events",
            "scope_attributes",
        ] {
            assert!(flushed.contains(column), "{column}: {flushed:?}");
        }
        for column in [
            "http_route",
            "service_name",
            "span_id",
            "resource_attributes",
        ] {
            assert!(!flushed.contains(column), "{column}");
        }
        // The older file counts its scalar columns' nulls, not its lists'.
        assert!(
            both.contains("http_url") && both.contains("db_system"),
            "{both:?}"
        );
        assert!(
            !both.contains("links") && !both.contains("events"),
            "{both:?}"
        );
        assert!(!both.contains("http_route"));
    }

    /// A data file of `rows` rows put in `store` at `path`, as a listing
    /// would describe it.
    async fn put(
        store: &Arc<dyn ObjectStore>,
        path: String,
        bytes: Bytes,
        rows: usize,
    ) -> PartitionFile {
        let size = bytes.len() as u64;
        store
            .put(&Path::from(path.as_str()), bytes.into())
            .await
            .unwrap();
        PartitionFile {
            path,
            size,
            rows: Some(rows as u64),
            partition: "date=2024-10-04/hour=00".into(),
            partition_end_ns: 0,
        }
    }

    #[tokio::test]
    async fn merged_rows_too_large_for_one_batch_are_written_in_several() {
        let _one_at_a_time = crate::test_spans::LARGE.lock().await;
        // Two files of 1,100 spans of just over 1 MiB each: a merge batch of
        // 2,048 rows holds over 2 GiB in one column, past what its 32-bit
        // offsets address.
        let value_bytes = (1 << 20) + 1024;
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let mut files = Vec::new();
        for trace in [1, 2] {
            let batch = crate::test_spans::large(trace, 100, value_bytes);
            let file = crate::writer::write_partition((20_000, 0), &vec![batch; 11]).unwrap();
            files.push(put(&store, file.path, file.bytes.into(), file.rows).await);
        }
        let schema = Layout::standard().file_schema();
        let column = schema
            .index_of(tracelake_schema::spans::SPAN_ATTRIBUTES)
            .unwrap();
        let mut merge = Merge::open(&store, &files, schema).await.unwrap();
        let (mut rows, mut bytes, mut most, mut order) = (0, 0, 0, Vec::new());
        while let Some(batches) = merge.take(false).await.unwrap() {
            most = most.max(batches.len());
            for batch in &batches {
                rows += batch.num_rows();
                let map = batch.column(column).as_map();
                bytes += map.values().as_string::<i32>().values().len();
                let keys = batch_keys(batch).unwrap();
                let starts = batch.column_by_name(START_TIME_UNIX_NANO).unwrap();
                let starts = starts.as_primitive::<Int64Type>().values();
                order.extend(keys.iter().copied().zip(starts.iter().copied()));
            }
        }
        assert!(most > 1, "2,048 rows of 1 MiB were not split");
        assert_eq!((rows, bytes), (2_200, 2_200 * value_bytes));
        assert!(order.is_sorted(), "the parts keep the merge's order");
    }

    #[tokio::test]
    async fn a_file_of_rows_too_large_for_a_read_batch_is_read_in_smaller_ones() {
        use tracelake_schema::spans::{SPAN_ATTRIBUTES, SPAN_ID};

        let _one_at_a_time = crate::test_spans::LARGE.lock().await;
        // One file: 4,096 small spans of one trace, then 4,200 of 540 KiB
        // of another. The first batch an input is read in is read whole;
        // the second, 4,096 rows of 540 KiB, holds 2.1 GiB of one column,
        // past what the reader's 32-bit offsets address, so the rest of the
        // file is read again from its 4,097th row. The large spans are 42
        // copies of 100 sharing their values, each with span ids of its own.
        let value_bytes = 540 << 10;
        let large = crate::test_spans::large(2, 100, value_bytes);
        let at = large.schema().index_of(SPAN_ID).unwrap();
        let mut batches = vec![crate::test_spans::large(1, 4_096, 16)];
        for copy in 0..42u64 {
            let mut columns = large.columns().to_vec();
            columns[at] = Arc::new(BinaryArray::from_iter_values(
                (0..100u64).map(|i| (copy * 100 + i + 1).to_be_bytes()),
            ));
            batches.push(RecordBatch::try_new(large.schema(), columns).unwrap());
        }
        let file = crate::writer::write_partition((20_000, 0), &batches).unwrap();
        drop(batches);
        let bytes = Bytes::from(file.bytes);
        // The file's span ids in order, read 256 rows a batch.
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
        let mask = parquet::arrow::ProjectionMask::columns(reader.parquet_schema(), [SPAN_ID]);
        let mut stored = Vec::new();
        for batch in reader
            .with_projection(mask)
            .with_batch_size(256)
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            stored.extend(
                batch
                    .column(0)
                    .as_binary::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_vec()),
            );
        }
        assert_eq!(stored.len(), 8_296);

        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let files = [put(&store, file.path, bytes, file.rows).await];
        let schema = Layout::standard().file_schema();
        let (attributes, ids) = (
            schema.index_of(SPAN_ATTRIBUTES).unwrap(),
            schema.index_of(SPAN_ID).unwrap(),
        );
        let mut merge = Merge::open(&store, &files, schema).await.unwrap();
        let (mut values, mut merged) = (0, Vec::new());
        while let Some(batches) = merge.take(false).await.unwrap() {
            for batch in &batches {
                let map = batch.column(attributes).as_map();
                values += map.values().as_string::<i32>().values().len();
                let column = batch.column(ids).as_binary::<i32>();
                merged.extend(column.iter().map(|v| v.unwrap().to_vec()));
            }
        }
        assert!(merge.inputs[0].rows.batch_rows < READ_BATCH_ROWS);
        // Every row once, in the file's order.
        assert_eq!(values, 4_096 * 16 + 4_200 * value_bytes);
        assert!(merged == stored, "rows lost, repeated or out of order");
    }

    /// Rows a partition's compaction writes when every job merges
    /// `job_inputs` of the smallest files: the partial merges' inputs, and
    /// then every row once more in the full merge.
    fn rows_written(mut files: Vec<u64>, max_inputs: usize) -> u64 {
        let mut written = 0;
        loop {
            let n = job_inputs(files.len(), max_inputs);
            files.sort_unstable();
            let merged: u64 = files.drain(..n).sum();
            written += merged;
            if files.is_empty() {
                return written;
            }
            files.push(merged);
        }
    }

    /// The fewest rows any order of merges of at most `max_inputs` files
    /// writes, by trying every one.
    fn fewest_rows_written(files: &[u64], max_inputs: usize) -> u64 {
        if files.len() <= max_inputs {
            return files.iter().sum();
        }
        let mut best = u64::MAX;
        for mask in 0u32..(1 << files.len()) {
            let picked = mask.count_ones() as usize;
            if picked < 2 || picked > max_inputs {
                continue;
            }
            let (merged, mut rest): (Vec<u64>, Vec<u64>) = (0..files.len())
                .map(|i| (mask >> i & 1 == 1, files[i]))
                .fold((Vec::new(), Vec::new()), |(mut m, mut r), (take, f)| {
                    if take {
                        m.push(f)
                    } else {
                        r.push(f)
                    }
                    (m, r)
                });
            let sum: u64 = merged.iter().sum();
            rest.push(sum);
            best = best.min(sum + fewest_rows_written(&rest, max_inputs));
        }
        best
    }

    #[test]
    fn jobs_rewrite_the_fewest_rows_that_any_order_of_merges_does() {
        for max_inputs in 2..=4 {
            for n in 1..=8u64 {
                let equal = vec![100; n as usize];
                let uneven: Vec<u64> = (1..=n).map(|i| i * i * 7 % 23 + 1).collect();
                for files in [equal, uneven] {
                    assert_eq!(
                        rows_written(files.clone(), max_inputs),
                        fewest_rows_written(&files, max_inputs),
                        "{files:?}, {max_inputs} at once"
                    );
                }
            }
        }
        // Merging MAX_INPUTS first rewrote the 33 files of an hour almost
        // twice; now the two smallest are merged, then the 32 files left.
        assert_eq!(job_inputs(33, MAX_INPUTS), 2);
        assert_eq!(rows_written(vec![1; 33], MAX_INPUTS), 2 + 33);
        assert_eq!(job_inputs(32, MAX_INPUTS), 32);
        // 71 files: 9, then 32 flushed files, then the 32 left.
        assert_eq!(rows_written(vec![1; 71], MAX_INPUTS), 9 + 32 + 71);
    }

    #[test]
    fn generations_count_jobs_once() {
        let file = |path: &str| PartitionFile {
            path: path.into(),
            size: 1,
            rows: None,
            partition: "date=2026-11-21/hour=01".into(),
            partition_end_ns: 0,
        };
        let p = "date=2026-11-21/hour=01/";
        let a = file(&format!("{p}compacted-aaa-00000.zstd.parquet"));
        let a2 = file(&format!("{p}compacted-aaa-00001.zstd.parquet"));
        let b = file(&format!("{p}compacted-bbb-00000.zstd.parquet"));
        let flushed = file(&format!("{p}part-1.zstd.parquet"));
        assert_eq!(generations(&[a.clone(), a2.clone()]), 1);
        assert_eq!(generations(&[a.clone(), a2, b]), 2);
        assert_eq!(generations(&[a, flushed.clone()]), 2);
        assert_eq!(generations(&[flushed]), 1);
    }
}
