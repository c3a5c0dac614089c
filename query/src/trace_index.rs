//! The trace index: which files hold which trace keys, so a lookup by trace
//! id with no time range reads only the files that hold the trace — one, as
//! compaction leaves each partition's files with disjoint `trace_key`
//! ranges — however many hours the table keeps.
//!
//! Two uses: SQL and the APIs' queries scan only those files
//! ([`TraceIndex::files_holding`]); trace by id, and the spans of the traces
//! a search found, skip query planning altogether ([`TraceIndex::holders`]
//! names the files, and [`TraceIndex::read_traces`] reads from each only the
//! row groups and pages whose key range holds one of the traces, decoding
//! the other columns only for the rows whose `trace_id` is one of them).
//!
//! Data files never change, so the index is a cache: each file's distinct
//! `trace_key`s (8 bytes per trace; the column is tiny, its values repeat
//! span after span), read the first time a lookup meets the file and
//! dropped when the file leaves the table. The keys are persisted beside
//! the data ([`tracelake_schema::trace_keys`]): after a restart, and on
//! every node of a cluster, the first lookup reads one small object per
//! file (sixteen at a time), not the files' footers and key columns.
//!
//! The files' metadata is cached too ([`MetadataCache`], one budget in
//! bytes for every tenant's table, least recently used first out): each
//! file's footer without its page index, loaded ahead of the lookups when
//! the index meets new files, newest hour first, while the budget has
//! room; and the page index of the row groups a lookup read. A lookup of
//! a file opened before reads no metadata. (A compacted hour of 7.7 M spans
//! has a 2.7 MB footer in memory and an 8.9 MB page index, about 0.2 MB a
//! row group with its page index: the whole page index of every file
//! would cost four times the memory, for row groups lookups rarely read.)

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Int32Array, RecordBatch,
    Scalar,
};
use arrow::datatypes::{Int64Type, SchemaRef};
use bytes::Bytes;
use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, RowFilter, RowSelection, RowSelector,
};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::parquet::errors::Result as ParquetResult;
use datafusion::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use deltalake::DeltaTable;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use object_store::{ObjectStore, ObjectStoreExt as _};
use tokio::sync::Mutex;
use tracelake_schema::spans::{
    DATE, HOUR, TRACE_ID, TRACE_KEY, empty_column, empty_columns, trace_key,
};
use tracelake_schema::trace_keys;

pub struct TraceIndex {
    /// Data file path → what the index knows of it, the files of the
    /// newest table version met (and of none older).
    files: Mutex<Indexed>,
    cache: Arc<MetadataCache>,
    /// The newest table version [`TraceIndex::follow`] refreshed at (plus
    /// one; 0: none).
    followed: std::sync::atomic::AtomicU64,
    /// The files of the table version the last refresh was of: the next
    /// lookup at that version finds them without going over the log.
    listed: parking_lot::Mutex<Option<(Option<u64>, Files)>>,
}

/// A table version's data files (paths as its log names them).
type Files = Arc<[(String, Arc<IndexedFile>)]>;

/// The files the index holds, and the table version they are of.
#[derive(Default)]
struct Indexed {
    files: HashMap<String, Arc<IndexedFile>>,
    /// The newest version met: a read at an older one (reads of several
    /// versions run at once) neither drops the newer files nor keeps the
    /// ones they replaced.
    version: Option<u64>,
}

/// `date` (days since the epoch) and `hour` of a partition.
type Partition = (i32, i32);

/// One data file of the table.
struct IndexedFile {
    /// The file's key in [`MetadataCache`] (unique in the process: tables of
    /// several tenants share them).
    id: u64,
    size: u64,
    partition: Partition,
    /// Sorted distinct trace keys.
    keys: Arc<[i64]>,
}

impl IndexedFile {
    /// Whether the file's hour overlaps `start..end` (nanoseconds).
    fn touches(&self, (start, end): (i64, i64)) -> bool {
        const HOUR_NS: i64 = 3_600_000_000_000;
        let (date, hour) = self.partition;
        let from = (i64::from(date) * 24 + i64::from(hour)).saturating_mul(HOUR_NS);
        from < end && start < from.saturating_add(HOUR_NS)
    }

    fn new(size: u64, partition: Partition, keys: Arc<[i64]>) -> Self {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            size,
            partition,
            keys,
        }
    }
}

/// A data file that holds a trace key.
#[derive(Clone)]
pub struct Holder {
    path: String,
    file: Arc<IndexedFile>,
}

impl std::fmt::Debug for TraceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceIndex").finish_non_exhaustive()
    }
}

impl TraceIndex {
    /// An empty index keeping its files' metadata in `cache`.
    pub fn new(cache: Arc<MetadataCache>) -> Self {
        Self {
            files: Mutex::default(),
            cache,
            followed: Default::default(),
            listed: Default::default(),
        }
    }

    /// Refreshes the index in the background when `table` is at a version
    /// this has not followed yet: the first query to see a commit (a
    /// flush's, a compaction's) has the new files' keys and footers loaded
    /// before a lookup asks for them. Call it on a query runtime (the work
    /// is spawned on the current one).
    pub fn follow(self: &Arc<Self>, table: &DeltaTable) {
        let Some(version) = table.version() else {
            return;
        };
        if self
            .followed
            .fetch_max(version + 1, std::sync::atomic::Ordering::Relaxed)
            > version
        {
            return;
        }
        let (index, table) = (Arc::clone(self), table.clone());
        tokio::spawn(async move {
            if let Err(error) = index.refresh(&table).await {
                tracing::debug!(%error, "trace index not refreshed ahead");
            }
        });
    }

    /// Brings the index up to date with `table`'s files; returns them. The
    /// footers of files it had not met are loaded in the background
    /// ([`warm`]).
    async fn refresh(&self, table: &DeltaTable) -> Result<Files> {
        let version = table.version();
        if let Some((listed, files)) = &*self.listed.lock()
            && *listed == version
        {
            return Ok(Arc::clone(files));
        }
        let snapshot = table.snapshot().map_err(external)?;
        // (path, size, (date, hour))
        let files: Vec<(String, u64, Option<Partition>)> = snapshot
            .log_data()
            .iter()
            .map(|f| {
                (
                    f.path().to_string(),
                    f.size().max(0) as u64,
                    file_partition(&f),
                )
            })
            .collect();
        let mut indexed = self.files.lock().await;
        let older = indexed.version > version;
        if !older {
            indexed.version = version;
            let live: HashSet<&str> = files.iter().map(|f| f.0.as_str()).collect();
            indexed.files.retain(|path, file| {
                let keep = live.contains(path.as_str());
                if !keep {
                    self.cache.forget(file.id);
                }
                keep
            });
        }
        let index = &mut indexed.files;
        let store = table.log_store().object_store(None);
        // Files the index has not met yet, loaded a few at a time.
        let new: Vec<(String, u64, Partition)> = files
            .iter()
            .filter(|(path, ..)| !index.contains_key(path))
            .map(|(path, size, partition)| {
                let partition = partition.ok_or_else(|| {
                    DataFusionError::Internal(format!("{path}: no date/hour partition values"))
                })?;
                Ok((path.clone(), *size, partition))
            })
            .collect::<Result<_>>()?;
        let mut loaded = futures::stream::iter(new.into_iter().map(|(path, size, partition)| {
            let store = &store;
            async move {
                let keys = load_keys(store, &path, size).await?;
                Ok::<_, DataFusionError>((path, size, partition, keys))
            }
        }))
        .buffer_unordered(LOAD_CONCURRENCY);
        let mut met = Vec::new();
        // An older version's files that a newer one replaced: read for this
        // read alone.
        let mut replaced = HashMap::new();
        while let Some(file) = loaded.next().await {
            let (path, size, partition, keys) = file?;
            let entry = Arc::new(IndexedFile::new(size, partition, keys));
            if older {
                replaced.insert(path, entry);
            } else {
                met.push((path.clone(), Arc::clone(&entry)));
                index.insert(path, entry);
            }
        }
        if !met.is_empty() && self.cache.has_room() {
            tokio::spawn(warm(Arc::clone(&self.cache), Arc::clone(&store), met));
        }
        let files: Files = files
            .into_iter()
            .filter_map(|(path, ..)| {
                let entry = Arc::clone(index.get(&path).or_else(|| replaced.get(&path))?);
                Some((path, entry))
            })
            .collect();
        if !older {
            *self.listed.lock() = Some((version, Arc::clone(&files)));
        }
        Ok(files)
    }

    /// The files of `table` (paths as its log names them) holding one of
    /// `keys`.
    pub async fn files_holding(&self, table: &DeltaTable, keys: &[i64]) -> Result<HashSet<String>> {
        Ok(self
            .refresh(table)
            .await?
            .iter()
            .filter(|(_, file)| keys.iter().any(|k| file.keys.binary_search(k).is_ok()))
            .map(|(path, _)| path.clone())
            .collect())
    }

    /// The files of `table` holding one of `trace_ids`, each with those it
    /// holds; with `range` (nanoseconds), only files of the hours it
    /// touches.
    pub async fn holders(
        &self,
        table: &DeltaTable,
        trace_ids: &[[u8; 16]],
        range: Option<(i64, i64)>,
    ) -> Result<Vec<(Holder, Vec<[u8; 16]>)>> {
        let keys: Vec<i64> = trace_ids.iter().map(|id| trace_key(id)).collect();
        Ok(self
            .refresh(table)
            .await?
            .iter()
            .filter(|(_, f)| range.is_none_or(|r| f.touches(r)))
            .filter_map(|(path, file)| {
                let ids: Vec<[u8; 16]> = trace_ids
                    .iter()
                    .zip(&keys)
                    .filter(|(_, key)| file.keys.binary_search(key).is_ok())
                    .map(|(id, _)| *id)
                    .collect();
                (!ids.is_empty()).then(|| {
                    let (path, file) = (path.clone(), Arc::clone(file));
                    (Holder { path, file }, ids)
                })
            })
            .collect())
    }

    /// The rows of `trace_ids` in `holder`, with `schema`'s columns (the
    /// spans schema or some of its columns, by name): only the row groups
    /// and pages whose `trace_key` range holds one of the keys are read,
    /// and of those only the rows whose `trace_id` is one of `trace_ids`
    /// are decoded beyond that column.
    pub async fn read_traces(
        self: &Arc<Self>,
        store: &Arc<dyn ObjectStore>,
        holder: &Holder,
        trace_ids: &[[u8; 16]],
        schema: &SchemaRef,
        rows: &RowBudget,
    ) -> Result<Vec<RecordBatch>> {
        let id = holder.file.id;
        let footer = match self.cache.get(id, Part::Footer) {
            Some(footer) => footer,
            None => {
                let footer = load_footer(store, &holder.path, holder.file.size).await?;
                self.cache.insert(id, Part::Footer, footer.clone());
                footer
            }
        };
        let stats = StatisticsConverter::try_new(
            TRACE_KEY,
            footer.schema(),
            footer.metadata().file_metadata().schema_descr(),
        )?;
        let whole = footer.metadata();
        let (mins, maxes) = (
            stats.row_group_mins(whole.row_groups())?,
            stats.row_group_maxes(whole.row_groups())?,
        );
        let wanted: Vec<Wanted> = trace_ids.iter().map(|id| (*id, trace_key(id))).collect();
        // Row group by row group (a trace is in one, or two where a row
        // group ends inside it): the page index of a row group is cached
        // on its own, whichever lookups read it.
        let mut groups: Vec<(usize, Vec<Wanted>)> = (0..whole.num_row_groups())
            .map(|row_group| {
                let here = wanted
                    .iter()
                    .filter(|(_, key)| holds(&mins, &maxes, row_group, *key))
                    .copied()
                    .collect();
                (row_group, here)
            })
            .filter(|(_, here): &(usize, Vec<_>)| !here.is_empty())
            .collect();
        let read = |group: (usize, Vec<Wanted>)| {
            Arc::clone(self).read_row_group(
                Arc::clone(store),
                holder.clone(),
                footer.clone(),
                group,
                Arc::clone(schema),
                rows.clone(),
            )
        };
        if groups.len() <= 1 {
            return match groups.pop() {
                Some(group) => read(group).await,
                None => Ok(Vec::new()),
            };
        }
        // Several (a search's page of traces): decoded on the runtime's
        // threads at once; dropped with the request, the set aborts them.
        let mut reads = tokio::task::JoinSet::new();
        for (i, group) in groups.into_iter().enumerate() {
            let read = read(group);
            reads.spawn(async move { (i, read.await) });
        }
        let mut done = Vec::with_capacity(reads.len());
        while let Some(joined) = reads.join_next().await {
            let (i, batches) = joined.map_err(|e| DataFusionError::External(Box::new(e)))?;
            done.push((i, batches?));
        }
        done.sort_by_key(|(i, _)| *i);
        Ok(done.into_iter().flat_map(|(_, batches)| batches).collect())
    }

    /// The rows of `wanted` (trace ids and their keys) in `row_group` of
    /// `holder`.
    ///
    /// Read [`READ_BATCH_ROWS`] rows a batch, unless a batch's values of a
    /// column are more than one array holds (spans averaging over 2 MiB in
    /// one column): the row group is then read again in batches of half
    /// the rows, down to a row a batch, as SQL is
    /// ([`crate::QueryEngine::collect_at_most`]).
    async fn read_row_group(
        self: Arc<Self>,
        store: Arc<dyn ObjectStore>,
        holder: Holder,
        footer: ArrowReaderMetadata,
        (row_group, wanted): (usize, Vec<Wanted>),
        schema: SchemaRef,
        rows: RowBudget,
    ) -> Result<Vec<RecordBatch>> {
        let mut batch_rows = READ_BATCH_ROWS;
        loop {
            let mut taken = 0;
            let read = self
                .read_row_group_in(
                    &store,
                    &holder,
                    &footer,
                    row_group,
                    &wanted,
                    &schema,
                    &rows,
                    (batch_rows, &mut taken),
                )
                .await;
            match read {
                Err(e) if batch_rows > 1 && crate::engine::too_large_for_one_array(&e) => {
                    rows.give_back(taken);
                    batch_rows /= 2;
                    tracing::info!(
                        path = %holder.path,
                        rows = batch_rows,
                        "a trace's row group read again in smaller batches: {e}"
                    );
                }
                read => return read,
            }
        }
    }

    /// One read of [`TraceIndex::read_row_group`], `batch_rows` rows a
    /// batch, counting the rows it took from `rows` in `taken`.
    #[allow(clippy::too_many_arguments)]
    async fn read_row_group_in(
        &self,
        store: &Arc<dyn ObjectStore>,
        holder: &Holder,
        footer: &ArrowReaderMetadata,
        row_group: usize,
        wanted: &[Wanted],
        schema: &SchemaRef,
        rows: &RowBudget,
        (batch_rows, taken): (usize, &mut usize),
    ) -> Result<Vec<RecordBatch>> {
        let stats = StatisticsConverter::try_new(
            TRACE_KEY,
            footer.schema(),
            footer.metadata().file_metadata().schema_descr(),
        )?;
        let id = holder.file.id;
        let whole = footer.metadata();
        // The file as far as this read goes: the row group with its page
        // index (which the footer's row group locates).
        let mut reader = open(store, &holder.path, holder.file.size)?;
        let metadata = match self.cache.get(id, Part::RowGroups(vec![row_group])) {
            Some(metadata) => metadata,
            None => {
                let mut page_index =
                    ParquetMetaDataReader::new_with_metadata(ParquetMetaData::new(
                        whole.file_metadata().clone(),
                        vec![whole.row_group(row_group).clone()],
                    ))
                    .with_page_index_policy(PageIndexPolicy::Optional);
                page_index.load_page_index(&mut reader).await?;
                let metadata = ArrowReaderMetadata::try_new(
                    Arc::new(page_index.finish()?),
                    ArrowReaderOptions::new().with_schema(Arc::clone(footer.schema())),
                )?;
                self.cache
                    .insert(id, Part::RowGroups(vec![row_group]), metadata.clone());
                metadata
            }
        };
        let parquet = metadata.metadata();
        let row_groups = [0];
        let rg = parquet.row_group(0);
        // Of `schema`'s columns, those the file has, less those that hold
        // nothing: listed as such by the file (null, or empty lists and
        // maps, in every row), or null in every row of the row group (most
        // dedicated attribute columns, in a file of spans that never set
        // their key). They are made here, as the file holds them: empty
        // lists and maps, nulls.
        let descr = parquet.file_metadata().schema_descr();
        let listed = empty_columns(
            parquet
                .file_metadata()
                .key_value_metadata()
                .into_iter()
                .flatten()
                .map(|kv| (kv.key.as_str(), kv.value.as_deref())),
        );
        let all_null = |root: usize| {
            listed.contains(descr.root_schema().get_fields()[root].name())
                || (0..descr.num_columns())
                    .filter(|&leaf| descr.get_column_root_idx(leaf) == root)
                    .all(|leaf| {
                        rg.column(leaf)
                            .statistics()
                            .and_then(|s| s.null_count_opt())
                            .is_some_and(|n| n as i64 == rg.num_rows())
                    })
        };
        let read: Vec<usize> = descr
            .root_schema()
            .get_fields()
            .iter()
            .enumerate()
            .filter(|(root, field)| {
                schema.field_with_name(field.name()).is_ok() && !all_null(*root)
            })
            .map(|(root, _)| root)
            .collect();
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata.clone())
                .with_batch_size(batch_rows)
                .with_row_groups(row_groups.to_vec())
                .with_projection(ProjectionMask::roots(descr, read));
        if let (Some(columns), Some(offsets)) = (parquet.column_index(), parquet.offset_index())
            && let Some(counts) =
                stats.data_page_row_counts(offsets, parquet.row_groups(), &row_groups)?
        {
            let mins = stats.data_page_mins(columns, offsets, &row_groups)?;
            let maxes = stats.data_page_maxes(columns, offsets, &row_groups)?;
            let selectors: Vec<RowSelector> = (0..counts.len())
                .map(|page| {
                    let rows = counts.value(page) as usize;
                    if wanted
                        .iter()
                        .any(|(_, key)| holds(&mins, &maxes, page, *key))
                    {
                        RowSelector::select(rows)
                    } else {
                        RowSelector::skip(rows)
                    }
                })
                .collect();
            builder = builder.with_row_selection(RowSelection::from(selectors));
        }
        let ids: Vec<[u8; 16]> = wanted.iter().map(|(id, _)| *id).collect();
        let id_column = ProjectionMask::columns(builder.parquet_schema(), [TRACE_ID]);
        let filter = ArrowPredicateFn::new(id_column, move |batch: RecordBatch| {
            one_of(batch.column(0), &ids)
        });
        let mut stream = builder
            .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
            .build()?;
        let (date, hour) = holder.file.partition;
        let mut out = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows.take(batch.num_rows())?;
            *taken += batch.num_rows();
            let rows = batch.num_rows();
            let columns: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    DATE => Arc::new(Date32Array::from(vec![date; rows])) as ArrayRef,
                    HOUR => Arc::new(Int32Array::from(vec![hour; rows])),
                    name => match batch.column_by_name(name) {
                        Some(c) => Arc::clone(c),
                        None if listed.contains(name) => empty_column(f.data_type(), rows),
                        None => arrow::array::new_null_array(f.data_type(), rows),
                    },
                })
                .collect();
            out.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
        }
        Ok(out)
    }
}

/// Rows a trace's read decodes a batch (Parquet's default), fewer when
/// they are too large for one array ([`TraceIndex::read_row_group`]).
const READ_BATCH_ROWS: usize = 1024;

/// Most rows a read may return, shared by the row groups it decodes at
/// once: it fails as soon as they pass it, before holding more.
#[derive(Clone)]
pub struct RowBudget(Arc<std::sync::atomic::AtomicUsize>, usize);

impl RowBudget {
    pub fn new(max_rows: usize) -> Self {
        Self(Default::default(), max_rows)
    }

    /// Counts `rows` fewer: rows taken by a read that is made again.
    pub fn give_back(&self, rows: usize) {
        self.0.fetch_sub(rows, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts `rows` more; fails with `ResourcesExhausted` past the most.
    pub fn take(&self, rows: usize) -> Result<()> {
        let taken = self.0.fetch_add(rows, std::sync::atomic::Ordering::Relaxed) + rows;
        if taken > self.1 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "more than {} spans",
                self.1
            )));
        }
        Ok(())
    }
}

/// A trace id a read looks for, and its `trace_key`.
type Wanted = ([u8; 16], i64);

/// Whether row group or page `i` (of `min`'s and `max`'s `trace_key`
/// statistics) may hold `key`.
fn holds(min: &ArrayRef, max: &ArrayRef, i: usize, key: i64) -> bool {
    let (min, max) = (
        min.as_primitive::<Int64Type>(),
        max.as_primitive::<Int64Type>(),
    );
    (min.is_null(i) || min.value(i) <= key) && (max.is_null(i) || key <= max.value(i))
}

/// Which rows of `trace_id` (a `trace_id` column) are one of `ids`.
pub(crate) fn one_of(
    trace_id: &ArrayRef,
    ids: &[[u8; 16]],
) -> std::result::Result<BooleanArray, arrow::error::ArrowError> {
    if let [id] = ids {
        let wanted = Scalar::new(BinaryArray::from(vec![id.as_slice()]));
        return arrow::compute::kernels::cmp::eq(trace_id, &wanted);
    }
    let values = trace_id.as_binary_opt::<i32>().ok_or_else(|| {
        arrow::error::ArrowError::SchemaError(format!(
            "{TRACE_ID} is {}, not Binary",
            trace_id.data_type()
        ))
    })?;
    let ids: HashSet<&[u8]> = ids.iter().map(|id| id.as_slice()).collect();
    Ok(values
        .iter()
        .map(|v| Some(v.is_some_and(|v| ids.contains(v))))
        .collect())
}

/// The `date`/`hour` partition of a data file, from the log.
pub(crate) fn file_partition(file: &deltalake::kernel::LogicalFileView) -> Option<Partition> {
    let values = file.partition_values_map();
    let date = values.get(DATE).cloned().flatten()?;
    let hour = values.get(HOUR).cloned().flatten()?;
    partition_values(&date, &hour)
}

/// Days since the epoch and the hour of partition values.
fn partition_values(date: &str, hour: &str) -> Option<Partition> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    Some((
        i32::try_from((day - epoch).num_days()).ok()?,
        hour.parse().ok()?,
    ))
}

/// Files whose keys are loaded at once when the index meets many (after a
/// start).
const LOAD_CONCURRENCY: usize = 16;

/// A reader of the data file at `path`.
fn open(store: &Arc<dyn ObjectStore>, path: &str, size: u64) -> Result<SendReader> {
    Ok(SendReader(
        DefaultParquetFileReaderFactory::new(Arc::clone(store)).create_reader(
            0,
            PartitionedFile::new(path, size),
            None,
            &ExecutionPlanMetricsSet::new(),
        )?,
    ))
}

/// The footer of the data file at `path` (no page index).
async fn load_footer(
    store: &Arc<dyn ObjectStore>,
    path: &str,
    size: u64,
) -> Result<ArrowReaderMetadata> {
    let mut reader = open(store, path, size)?;
    Ok(ArrowReaderMetadata::load_async(
        &mut reader,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Skip),
    )
    .await?)
}

/// Loads the footers of `files` (just met by the index) into `cache`,
/// newest hour first, while they fit: the files a lookup is likeliest to
/// read are open before it comes. Best effort: a file whose footer cannot
/// be read is left to the lookup that needs it.
async fn warm(
    cache: Arc<MetadataCache>,
    store: Arc<dyn ObjectStore>,
    mut files: Vec<(String, Arc<IndexedFile>)>,
) {
    files.sort_by_key(|(path, file)| std::cmp::Reverse((file.partition, path.clone())));
    let mut loads = futures::stream::iter(files.into_iter().map(|(path, file)| {
        let store = &store;
        async move { (load_footer(store, &path, file.size).await, path, file) }
    }))
    .buffered(WARM_CONCURRENCY);
    while let Some((footer, path, file)) = loads.next().await {
        match footer {
            // Unless the file left the index meanwhile (only this task
            // still holds it): its footer would wait for the least
            // recently used to go.
            Ok(_) if Arc::strong_count(&file) == 1 => {}
            Ok(footer) => {
                if !cache.insert_if_room(file.id, Part::Footer, footer) {
                    return;
                }
            }
            Err(error) => tracing::debug!(%path, %error, "footer not loaded ahead"),
        }
    }
}

/// Footers loaded at once ahead of lookups (decoding one is CPU work on
/// the query threads).
const WARM_CONCURRENCY: usize = 2;

/// What [`MetadataCache`] keeps of a data file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Part {
    /// Its footer, without the page index.
    Footer,
    /// The row groups a lookup reads (their indexes in the file) with
    /// their page index: about 2 % of the footer each in a compacted hour.
    RowGroups(Vec<usize>),
}

/// The parts of data files' metadata the trace index keeps, within a
/// budget of bytes in memory: a lookup that loads one beyond it drops
/// those used least recently (loaded again when needed); loading ahead
/// ([`warm`]) only fills free room.
pub struct MetadataCache {
    budget: usize,
    state: parking_lot::Mutex<CacheState>,
    /// `tracelake_trace_metadata_bytes` and `_entries`.
    bytes: prometheus_client::metrics::gauge::Gauge,
    entries: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Default)]
struct CacheState {
    /// Bytes the entries take.
    bytes: usize,
    /// Incremented on every use: the age of the entries.
    clock: u64,
    /// By [`IndexedFile::id`] and part: the metadata, its size, its last
    /// use.
    entries: HashMap<(u64, Part), (ArrowReaderMetadata, usize, u64)>,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("MetadataCache")
            .field("budget", &self.budget)
            .field("bytes", &state.bytes)
            .field("entries", &state.entries.len())
            .finish()
    }
}

/// What [`MetadataCache`] may keep when the server is not told: the
/// footers of about 95 compacted hours of 7.7 M spans.
pub const DEFAULT_METADATA_BUDGET: usize = 256 << 20;

impl MetadataCache {
    /// Empty, holding at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Default::default(),
            bytes: Default::default(),
            entries: Default::default(),
        }
    }

    /// Registers `tracelake_trace_metadata_bytes` and `_entries`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "tracelake_trace_metadata_bytes",
            "Memory the data files' footers and page indexes kept for trace lookups take",
            self.bytes.clone(),
        );
        registry.register(
            "tracelake_trace_metadata_entries",
            "Footers and row groups' page indexes kept for trace lookups",
            self.entries.clone(),
        );
    }

    /// The gauges after a change of `state`.
    fn publish(&self, state: &CacheState) {
        self.bytes.set(state.bytes as i64);
        self.entries.set(state.entries.len() as i64);
    }

    /// `part` of file `id`, if kept.
    fn get(&self, id: u64, part: Part) -> Option<ArrowReaderMetadata> {
        let mut state = self.state.lock();
        state.clock += 1;
        let now = state.clock;
        let (metadata, _, used) = state.entries.get_mut(&(id, part))?;
        *used = now;
        Some(metadata.clone())
    }

    /// Keeps `part` of file `id`, dropping the least recently used
    /// entries while over the budget (an entry larger than the budget is
    /// not kept).
    fn insert(&self, id: u64, part: Part, metadata: ArrowReaderMetadata) {
        let size = metadata.metadata().memory_size();
        let mut state = self.state.lock();
        let key = (id, part);
        if size > self.budget || state.entries.contains_key(&key) {
            return;
        }
        while state.bytes + size > self.budget {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            state.remove(&oldest);
        }
        state.put(key, metadata, size);
        self.publish(&state);
    }

    /// Keeps `part` of file `id` if it fits beside the others; whether it
    /// did.
    fn insert_if_room(&self, id: u64, part: Part, metadata: ArrowReaderMetadata) -> bool {
        let size = metadata.metadata().memory_size();
        let mut state = self.state.lock();
        if state.bytes + size > self.budget {
            return false;
        }
        let key = (id, part);
        if !state.entries.contains_key(&key) {
            state.put(key, metadata, size);
            self.publish(&state);
        }
        true
    }

    /// Whether another entry may fit.
    fn has_room(&self) -> bool {
        self.state.lock().bytes < self.budget
    }

    /// Drops what is kept of file `id` (which left its table).
    fn forget(&self, id: u64) {
        let mut state = self.state.lock();
        let parts: Vec<(u64, Part)> = state
            .entries
            .keys()
            .filter(|(file, _)| *file == id)
            .cloned()
            .collect();
        for key in parts {
            state.remove(&key);
        }
        self.publish(&state);
    }

    /// The entries kept and the bytes they take.
    pub fn held(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.entries.len(), state.bytes)
    }
}

impl CacheState {
    fn put(&mut self, key: (u64, Part), metadata: ArrowReaderMetadata, size: usize) {
        self.clock += 1;
        self.entries.insert(key, (metadata, size, self.clock));
        self.bytes += size;
    }

    fn remove(&mut self, key: &(u64, Part)) {
        if let Some((_, size, _)) = self.entries.remove(key) {
            self.bytes -= size;
        }
    }
}

/// The sorted distinct trace keys of the data file at `path`: its persisted
/// keys, or else (a file written by an older release, or whose keys'
/// upload failed) its key column, whose keys are then persisted for the
/// next start (best effort: a failure is logged, the lookup goes on).
async fn load_keys(store: &Arc<dyn ObjectStore>, path: &str, size: u64) -> Result<Arc<[i64]>> {
    let keys_path = object_store::path::Path::from(trace_keys::keys_path(path));
    match store.get(&keys_path).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            match trace_keys::decode(&bytes) {
                Ok(keys) => return Ok(keys.into()),
                Err(error) => {
                    tracing::warn!(%keys_path, %error, "persisted trace keys unreadable; reading the data file")
                }
            }
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let keys = read_keys(store, path, size).await?;
    if let Err(error) = store
        .put(&keys_path, trace_keys::encode(&keys).into())
        .await
    {
        tracing::warn!(%keys_path, %error, "cannot persist trace keys");
    }
    Ok(keys)
}

/// The sorted distinct trace keys in the key column of the data file at
/// `path`.
async fn read_keys(store: &Arc<dyn ObjectStore>, path: &str, size: u64) -> Result<Arc<[i64]>> {
    let reader = DefaultParquetFileReaderFactory::new(Arc::clone(store)).create_reader(
        0,
        PartitionedFile::new(path, size),
        None,
        &ExecutionPlanMetricsSet::new(),
    )?;
    let builder = ParquetRecordBatchStreamBuilder::new(SendReader(reader)).await?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), [TRACE_KEY]);
    let mut stream = builder.with_projection(mask).build()?;
    let mut keys = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let column = batch
            .column_by_name(TRACE_KEY)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| DataFusionError::Internal(format!("{path}: no {TRACE_KEY} column")))?;
        keys.extend_from_slice(column.values());
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys.into())
}

/// A boxed reader that stays `Send` (parquet implements the trait for
/// `Box<dyn AsyncFileReader>` only).
struct SendReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for SendReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        self.0.get_metadata(options)
    }
}

fn external(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::properties::WriterProperties;
    use object_store::memory::InMemory;
    use object_store::path::Path as Location;
    use object_store::{GetOptions, GetResult, ListResult, ObjectMeta, PutOptions, PutPayload};

    use super::*;

    /// Rows per file (8 spans per trace), row group, page.
    const ROWS: usize = 4096;
    const SPANS_PER_TRACE: usize = 8;

    /// The trace id of trace `t` of file `file`: its key (low 8 bytes)
    /// grows with `t`, as in a compacted file.
    fn trace_id(file: u8, t: usize) -> [u8; 16] {
        let mut id = [file; 16];
        id[8..].copy_from_slice(&((file as i64) << 32 | t as i64).to_be_bytes());
        id
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(TRACE_ID, DataType::Binary, false),
            Field::new(TRACE_KEY, DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new(DATE, DataType::Date32, false),
            Field::new(HOUR, DataType::Int32, false),
        ]))
    }

    /// A data file of `ROWS` spans sorted by trace key: 4 row groups of 8
    /// pages, uncompressed 64-byte names (so that what a read skips shows
    /// in the bytes it reads).
    fn data_file(file: u8) -> Bytes {
        let ids: Vec<[u8; 16]> = (0..ROWS)
            .map(|r| trace_id(file, r / SPANS_PER_TRACE))
            .collect();
        let stored = Arc::new(Schema::new(schema().fields()[..3].to_vec()));
        let batch = RecordBatch::try_new(
            Arc::clone(&stored),
            vec![
                Arc::new(BinaryArray::from_iter_values(&ids)),
                Arc::new(Int64Array::from_iter_values(
                    ids.iter().map(|id| trace_key(id)),
                )),
                Arc::new(StringArray::from_iter_values((0..ROWS).map(|r| {
                    format!("{:064x}", (r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                }))),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_max_row_group_row_count(Some(ROWS / 4))
            .set_data_page_row_count_limit(ROWS / 32)
            .set_write_batch_size(ROWS / 64)
            .build();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, stored, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        out.into()
    }

    /// An in-memory store counting the bytes read from it.
    #[derive(Debug, Default)]
    struct Counting {
        inner: InMemory,
        read: AtomicUsize,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &Location,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Location,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Location,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            let got = self.inner.get_opts(location, options).await?;
            let range = &got.range;
            self.read
                .fetch_add((range.end - range.start) as usize, Ordering::Relaxed);
            Ok(got)
        }

        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Location>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Location>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Location>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Location>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Location,
            to: &Location,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// An in-memory store holding `bytes` as the file `part-{name}` of one
    /// trace, `id`, and the file as the index knows it.
    async fn one_file(name: &str, bytes: Vec<u8>, id: &[u8; 16]) -> (Arc<dyn ObjectStore>, Holder) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = format!("date=2024-10-01/hour=05/part-{name}.parquet");
        let size = bytes.len() as u64;
        store
            .put(&Location::from(path.as_str()), bytes.into())
            .await
            .unwrap();
        let file = IndexedFile::new(size, (20_000, 5), vec![trace_key(id)].into());
        let holder = Holder {
            path,
            file: Arc::new(file),
        };
        (store, holder)
    }

    /// `files` data files in a counting store, as the index's holders.
    async fn stored(files: u8) -> (Arc<Counting>, Vec<Holder>, usize) {
        let store = Arc::new(Counting::default());
        let mut holders = Vec::new();
        let mut size = 0;
        for file in 0..files {
            let bytes = data_file(file);
            size = bytes.len();
            let path = format!("date=2024-10-01/hour=05/part-{file}.parquet");
            store
                .put(&Location::from(path.as_str()), bytes.into())
                .await
                .unwrap();
            let keys: Vec<i64> = (0..ROWS / SPANS_PER_TRACE)
                .map(|t| trace_key(&trace_id(file, t)))
                .collect();
            let file = IndexedFile::new(size as u64, (20_000, 5), keys.into());
            holders.push(Holder {
                path,
                file: Arc::new(file),
            });
        }
        (store, holders, size)
    }

    /// The memory a footer of `holder`'s file (all files of [`stored`] are
    /// alike) takes.
    async fn footer_size(store: &Arc<dyn ObjectStore>, holder: &Holder) -> usize {
        let footer = load_footer(store, &holder.path, holder.file.size);
        footer.await.unwrap().metadata().memory_size()
    }

    /// Span count and (date, hour) of what a read returned.
    fn read(batches: &[RecordBatch], id: &[u8]) -> (usize, Vec<(i32, i32)>) {
        let mut where_ = Vec::new();
        let mut n = 0;
        for b in batches {
            let ids = b.column_by_name(TRACE_ID).unwrap().as_binary::<i32>();
            assert!(ids.iter().all(|i| i == Some(id)));
            let dates = b
                .column_by_name(DATE)
                .unwrap()
                .as_primitive::<arrow::datatypes::Date32Type>();
            let hours = b
                .column_by_name(HOUR)
                .unwrap()
                .as_primitive::<arrow::datatypes::Int32Type>();
            where_.extend((0..b.num_rows()).map(|r| (dates.value(r), hours.value(r))));
            n += b.num_rows();
        }
        where_.dedup();
        (n, where_)
    }

    /// A lookup reads its trace's spans, and of the file the footer (once),
    /// the page index of the row group that holds the key, and of that row
    /// group the pages holding the key. (The reader reads the predicate's
    /// column to batch boundaries, 1024 rows, a whole row group here, and
    /// the store coalesces nearby ranges: a trace in a row group's first
    /// pages shows the pruning best.)
    /// Columns a file lists as holding nothing are not read, and come
    /// back as the file holds them: empty lists and maps, not nulls (a
    /// TraceQL condition on an event's name, and the columns layout's
    /// resources, tell the two apart), and nulls.
    #[tokio::test]
    async fn columns_a_file_lists_as_empty_come_back_as_it_holds_them() {
        use arrow::array::{ListArray, MapArray, MapBuilder, StringBuilder};
        use datafusion::parquet::file::metadata::KeyValue;
        use tracelake_schema::spans::{EMPTY_COLUMNS_KEY, empty_column};

        let events = DataType::List(Arc::new(Field::new_list_field(
            DataType::Struct(vec![Field::new("name", DataType::Utf8, true)].into()),
            true,
        )));
        let attributes = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
            .finish()
            .data_type()
            .clone();
        let stored = Arc::new(Schema::new(vec![
            Field::new(TRACE_ID, DataType::Binary, false),
            Field::new(TRACE_KEY, DataType::Int64, false),
            Field::new("events", events.clone(), true),
            Field::new("attributes", attributes.clone(), true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let id = trace_id(0, 0);
        let rows = 3;
        let batch = RecordBatch::try_new(
            Arc::clone(&stored),
            vec![
                Arc::new(BinaryArray::from_iter_values(vec![id; rows])),
                Arc::new(Int64Array::from(vec![trace_key(&id); rows])),
                empty_column(&events, rows),
                empty_column(&attributes, rows),
                empty_column(&DataType::Utf8, rows),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                EMPTY_COLUMNS_KEY.to_string(),
                "attributes,events,note".to_string(),
            )]))
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, stored, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let (store, holder) = one_file("empty", bytes, &id).await;
        let schema = Arc::new(Schema::new(vec![
            Field::new(TRACE_ID, DataType::Binary, false),
            Field::new(TRACE_KEY, DataType::Int64, false),
            Field::new("events", events, true),
            Field::new("attributes", attributes, true),
            Field::new("note", DataType::Utf8, true),
            Field::new(DATE, DataType::Date32, false),
            Field::new(HOUR, DataType::Int32, false),
        ]));
        let index = Arc::new(TraceIndex::new(Arc::new(MetadataCache::new(
            DEFAULT_METADATA_BUDGET,
        ))));
        let got = index
            .read_traces(&store, &holder, &[id], &schema, &RowBudget::new(usize::MAX))
            .await
            .unwrap();
        assert_eq!(read(&got, &id), (rows, vec![(20_000, 5)]));
        for b in &got {
            let events: &ListArray = b.column_by_name("events").unwrap().as_list();
            assert_eq!(events.null_count(), 0);
            assert!(events.iter().all(|e| e.is_some_and(|e| e.is_empty())));
            let attributes: &MapArray = b.column_by_name("attributes").unwrap().as_map();
            assert_eq!(attributes.null_count(), 0);
            assert!((0..b.num_rows()).all(|r| attributes.value_length(r) == 0));
            assert_eq!(b.column_by_name("note").unwrap().null_count(), b.num_rows());
        }
    }

    /// A trace whose spans, a batch of [`READ_BATCH_ROWS`] together, hold
    /// more of a column's values than one array can: 1,024 small spans,
    /// then 1,100 of just over 2 MiB. The first batch is read; the second
    /// fails; the row group is read again in batches of 512, and every
    /// span and byte comes back, within a budget of exactly its spans.
    #[tokio::test]
    async fn a_trace_too_large_for_one_batch_is_read_in_smaller_ones() {
        const SMALL: usize = READ_BATCH_ROWS;
        const LARGE: usize = 1_100;
        const NAME: usize = (2 << 20) + 1024;
        let id = trace_id(0, 0);
        let stored = Arc::new(Schema::new(schema().fields()[..3].to_vec()));
        let batch = |rows: usize, name: &str| {
            RecordBatch::try_new(
                Arc::clone(&stored),
                vec![
                    Arc::new(BinaryArray::from_iter_values(std::iter::repeat_n(id, rows))),
                    Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(
                        trace_key(&id),
                        rows,
                    ))),
                    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                        name, rows,
                    ))),
                ],
            )
            .unwrap()
        };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(Default::default()))
            .set_dictionary_enabled(false)
            .build();
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, Arc::clone(&stored), Some(props)).unwrap();
        writer.write(&batch(SMALL, "small")).unwrap();
        // Two halves of 1.1 GiB each (one array holds at most 2 GiB).
        let large = batch(LARGE / 2, &"n".repeat(NAME));
        writer.write(&large).unwrap();
        writer.write(&large).unwrap();
        drop(large);
        // One row group: its first batch is read whole before one fails.
        assert_eq!(writer.close().unwrap().num_row_groups(), 1);
        let (store, holder) = one_file("large", bytes, &id).await;
        let index = Arc::new(TraceIndex::new(Arc::new(MetadataCache::new(
            DEFAULT_METADATA_BUDGET,
        ))));
        let got = index
            .read_traces(
                &store,
                &holder,
                &[id],
                &schema(),
                &RowBudget::new(SMALL + LARGE),
            )
            .await
            .unwrap();
        assert_eq!(read(&got, &id), (SMALL + LARGE, vec![(20_000, 5)]));
        let names: usize = got
            .iter()
            .map(|b| {
                b.column_by_name("name")
                    .unwrap()
                    .as_string::<i32>()
                    .values()
                    .len()
            })
            .sum();
        assert_eq!(names, SMALL * "small".len() + LARGE * NAME);
    }

    #[tokio::test]
    async fn a_lookup_reads_the_pages_holding_its_trace() {
        let (counting, holders, size) = stored(1).await;
        let store: Arc<dyn ObjectStore> = Arc::clone(&counting) as _;
        let index = Arc::new(TraceIndex::new(Arc::new(MetadataCache::new(
            DEFAULT_METADATA_BUDGET,
        ))));
        let lookup = |t: usize| {
            let (index, store, holder, counting) = (&index, &store, &holders[0], &counting);
            async move {
                let id = trace_id(0, t);
                let before = counting.read.load(Ordering::Relaxed);
                let got = index
                    .read_traces(store, holder, &[id], &schema(), &RowBudget::new(usize::MAX))
                    .await
                    .unwrap();
                assert_eq!(
                    read(&got, &id),
                    (SPANS_PER_TRACE, vec![(20_000, 5)]),
                    "trace {t}"
                );
                counting.read.load(Ordering::Relaxed) - before
            }
        };
        let first = lookup(0).await;
        assert_eq!(
            index.cache.held().0,
            2,
            "the footer and a row group's page index"
        );
        let again = lookup(1).await;
        assert!(
            first > again,
            "only the first read loads metadata: {first} {again}"
        );
        assert_eq!(lookup(1).await, again, "the same pages");
        // 128 traces a row group, 16 a page.
        for t in [1, 128, 256, 384 + 3] {
            let bytes = lookup(t).await;
            assert!(bytes < size / 8, "trace {t}: {bytes} bytes of {size} read");
        }
        for t in [100, 200, 300, 511] {
            let bytes = lookup(t).await;
            assert!(bytes < size / 4, "trace {t}: {bytes} bytes of {size} read");
        }
        assert_eq!(
            index.cache.held().0,
            5,
            "the footer, 4 row groups' page index"
        );
        // A key the file does not hold (beyond its last row group's range).
        let absent = trace_id(1, 0);
        let got = index
            .read_traces(
                &store,
                &holders[0],
                &[absent],
                &schema(),
                &RowBudget::new(usize::MAX),
            )
            .await
            .unwrap();
        assert_eq!(read(&got, &absent).0, 0);
    }

    /// One read of several traces, in several row groups and pages and
    /// one the file lacks, returns each of their spans once and no other,
    /// with the columns asked for.
    #[tokio::test]
    async fn one_read_returns_several_traces_with_the_columns_asked_for() {
        let (counting, holders, size) = stored(1).await;
        let store: Arc<dyn ObjectStore> = Arc::clone(&counting) as _;
        let index = Arc::new(TraceIndex::new(Arc::new(MetadataCache::new(
            DEFAULT_METADATA_BUDGET,
        ))));
        // Two in one page, others in other pages and row groups.
        let wanted = [3, 4, 100, 200, 511].map(|t| trace_id(0, t));
        let absent = trace_id(1, 0);
        let ids: Vec<[u8; 16]> = wanted.iter().copied().chain([absent]).collect();
        let some = Arc::new(Schema::new(vec![
            Field::new(HOUR, DataType::Int32, false),
            Field::new(TRACE_ID, DataType::Binary, false),
        ]));
        let got = index
            .read_traces(
                &store,
                &holders[0],
                &ids,
                &some,
                &RowBudget::new(usize::MAX),
            )
            .await
            .unwrap();
        let mut counts = std::collections::BTreeMap::new();
        for b in &got {
            assert_eq!(b.schema(), some);
            assert!(
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .values()
                    .iter()
                    .all(|&h| h == 5)
            );
            for id in b.column(1).as_binary::<i32>().iter() {
                *counts.entry(id.unwrap().to_vec()).or_insert(0) += 1;
            }
        }
        let expected: std::collections::BTreeMap<Vec<u8>, usize> = wanted
            .iter()
            .map(|id| (id.to_vec(), SPANS_PER_TRACE))
            .collect();
        assert_eq!(counts, expected);
        let bytes = counting.read.load(Ordering::Relaxed);
        assert!(bytes < size / 2, "{bytes} bytes of {size} read");
        // One span fewer than they hold is too few.
        let short = RowBudget::new(wanted.len() * SPANS_PER_TRACE - 1);
        let error = index
            .read_traces(&store, &holders[0], &ids, &some, &short)
            .await
            .unwrap_err();
        assert!(
            matches!(error, DataFusionError::ResourcesExhausted(_)),
            "{error}"
        );
    }

    /// With room for what one lookup reads (a footer and a row group's
    /// page index) and half a footer, lookups across three files stay
    /// within it, keep the file read last, and still find every trace.
    #[tokio::test]
    async fn the_cache_stays_within_its_budget() {
        let (counting, holders, _) = stored(3).await;
        let store: Arc<dyn ObjectStore> = counting;
        let footer = footer_size(&store, &holders[0]).await;
        let unbounded = Arc::new(TraceIndex::new(Arc::new(MetadataCache::new(usize::MAX))));
        let id = trace_id(0, 7);
        unbounded
            .read_traces(
                &store,
                &holders[0],
                &[id],
                &schema(),
                &RowBudget::new(usize::MAX),
            )
            .await
            .unwrap();
        let (parts, one_lookup) = unbounded.cache.held();
        assert_eq!(parts, 2);
        let budget = one_lookup + footer / 2;
        let index = Arc::new(TraceIndex::new(Arc::new(MetadataCache::new(budget))));
        for round in 0..2 {
            for (file, holder) in holders.iter().enumerate() {
                let id = trace_id(file as u8, 7 + 130 * round);
                let got = index
                    .read_traces(
                        &store,
                        holder,
                        &[id],
                        &schema(),
                        &RowBudget::new(usize::MAX),
                    )
                    .await
                    .unwrap();
                assert_eq!(read(&got, &id).0, SPANS_PER_TRACE);
                let (_, bytes) = index.cache.held();
                assert!(bytes <= budget, "{bytes} bytes held, budget {budget}");
                assert!(index.cache.get(holder.file.id, Part::Footer).is_some());
                for other in holders.iter().filter(|h| h.file.id != holder.file.id) {
                    assert!(index.cache.get(other.file.id, Part::Footer).is_none());
                }
            }
        }
    }

    /// The least recently used entry goes first; loading ahead fills only
    /// free room; a file that left its table takes all its parts with it.
    #[tokio::test]
    async fn the_least_recently_used_go_first() {
        let (counting, holders, _) = stored(4).await;
        let store: Arc<dyn ObjectStore> = counting;
        let mut loaded = Vec::new();
        for h in &holders {
            loaded.push(load_footer(&store, &h.path, h.file.size).await.unwrap());
        }
        let size = loaded[0].metadata().memory_size();
        let cache = MetadataCache::new(size * 5 / 2);
        let kept = |cache: &MetadataCache| -> Vec<bool> {
            (0..4)
                .map(|i| cache.get(i as u64 + 1000, Part::Footer).is_some())
                .collect()
        };
        cache.insert(1000, Part::Footer, loaded[0].clone());
        cache.insert(1001, Part::Footer, loaded[1].clone());
        assert!(cache.get(1000, Part::Footer).is_some(), "1000 used last");
        cache.insert(1002, Part::Footer, loaded[2].clone());
        assert_eq!(cache.held().0, 2);
        assert_eq!(kept(&cache), [true, false, true, false]);
        assert!(
            !cache.insert_if_room(1003, Part::Footer, loaded[3].clone()),
            "no room"
        );
        assert_eq!(kept(&cache), [true, false, true, false]);
        cache.forget(1000);
        assert_eq!(cache.held(), (1, size));
        assert!(cache.insert_if_room(1003, Part::Footer, loaded[3].clone()));
        assert_eq!(kept(&cache), [false, false, true, true]);
        // Another part of a file is another entry; forgetting the file
        // drops them all.
        let part = Part::RowGroups(vec![2]);
        cache.insert(1003, part.clone(), loaded[0].clone());
        assert!(cache.get(1003, part.clone()).is_some());
        assert!(cache.get(1003, Part::RowGroups(vec![2, 3])).is_none());
        cache.forget(1003);
        assert!(cache.get(1003, part.clone()).is_none());
        assert_eq!(kept(&cache), [false, false, false, false]);
        assert_eq!(cache.held(), (0, 0));
        // An entry larger than the whole budget is not kept.
        let tiny = MetadataCache::new(size - 1);
        tiny.insert(1, Part::Footer, loaded[0].clone());
        assert_eq!(tiny.held(), (0, 0));
    }

    /// Reads of two versions at once (a read that began before a
    /// compaction's commit, and one after): the older read finds the
    /// files of its version, the index keeps the newer version's.
    #[tokio::test]
    async fn a_read_at_an_older_version_finds_its_files_and_leaves_the_newer_ones_indexed() {
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
        use deltalake::kernel::{Action, StructType};

        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let columns: StructType = schema().as_ref().try_into_kernel().unwrap();
        let table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(columns.fields().cloned())
            .with_partition_columns([DATE, HOUR])
            .await
            .unwrap();
        let path = |file: u8| format!("{DATE}=2024-10-01/{HOUR}=5/part-{file}.parquet");
        let put = |file: u8| {
            let bytes = data_file(file);
            let at = dir.path().join(path(file));
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(&at, &bytes).unwrap();
            crate::testing::add(&path(file), bytes.len() as i64)
        };
        let commit = |table: DeltaTable, actions: Vec<Action>| {
            let url = url.clone();
            async move { crate::testing::commit(&url, &table, actions).await }
        };
        // Version 1: file 0; version 2: file 0 replaced by file 1.
        let v1 = commit(table, vec![put(0)]).await;
        let removed = v1
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| Action::Remove(f.remove_action(true)))
            .collect::<Vec<_>>();
        let v2 = commit(v1.clone(), [vec![put(1)], removed].concat()).await;
        assert_eq!((v1.version(), v2.version()), (Some(1), Some(2)));

        let index = TraceIndex::new(Arc::new(MetadataCache::new(usize::MAX)));
        let (a, b) = (trace_id(0, 3), trace_id(1, 3));
        let held = |got: Vec<(Holder, Vec<[u8; 16]>)>| {
            got.into_iter()
                .map(|(holder, ids)| (holder.path, ids))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            held(index.holders(&v2, &[a, b], None).await.unwrap()),
            [(path(1), vec![b])]
        );
        assert_eq!(
            held(index.holders(&v1, &[a, b], None).await.unwrap()),
            [(path(0), vec![a])],
            "the older read finds its version's files"
        );
        {
            let indexed = index.files.lock().await;
            assert_eq!(indexed.version, Some(2));
            assert_eq!(
                indexed.files.keys().collect::<Vec<_>>(),
                [&path(1)],
                "the older read took the index back"
            );
        }
        assert_eq!(
            held(index.holders(&v2, &[a, b], None).await.unwrap()),
            [(path(1), vec![b])]
        );
    }

    /// Loading ahead takes the newest hours first, skips files that left
    /// the index meanwhile, and stops when the budget is full.
    #[tokio::test]
    async fn loading_ahead_takes_the_newest_hours_first() {
        let (counting, holders, _) = stored(4).await;
        let store: Arc<dyn ObjectStore> = counting;
        let size = footer_size(&store, &holders[0]).await;
        let cache = Arc::new(MetadataCache::new(size * 5 / 2));
        // Files 0, 1, 2, 3 in hours 5, 7, 6, 8.
        let files: Vec<(String, Arc<IndexedFile>)> = holders
            .iter()
            .zip([5, 7, 6, 8])
            .map(|(h, hour)| {
                let file = IndexedFile::new(h.file.size, (20_000, hour), Arc::clone(&h.file.keys));
                (h.path.clone(), Arc::new(file))
            })
            .collect();
        // The index holds the first three; the fourth, the newest, left it.
        let index: Vec<Arc<IndexedFile>> = files[..3].iter().map(|(_, f)| Arc::clone(f)).collect();
        let ids: Vec<u64> = files.iter().map(|(_, f)| f.id).collect();
        warm(Arc::clone(&cache), store, files).await;
        assert_eq!(cache.held().0, 2);
        let kept = |id: u64| cache.get(id, Part::Footer).is_some();
        assert!(kept(ids[1]) && kept(ids[2]));
        assert!(!kept(ids[0]), "the oldest hour did not fit");
        assert!(!kept(ids[3]), "a file no longer in the index");
        drop(index);
    }
}
