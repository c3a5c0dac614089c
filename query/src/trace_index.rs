//! The trace index: which files hold which trace keys, so a lookup by trace
//! id with no time range reads only the files that hold the trace — one, as
//! compaction leaves each partition's files with disjoint `trace_key`
//! ranges — however many hours the table keeps.
//!
//! Two uses: SQL and the APIs' queries scan only those files
//! ([`TraceIndex::files_holding`]); trace by id skips query planning
//! altogether ([`TraceIndex::holders`] names the files, and
//! [`TraceIndex::read_trace`] reads from each only the row groups and pages
//! whose key range holds the trace, decoding the other columns only for the
//! rows whose `trace_id` matches).
//!
//! Data files never change, so the index is a cache: each file's distinct
//! `trace_key`s (8 bytes per trace; the column is tiny, its values repeat
//! span after span), read the first time a lookup meets the file, and its
//! footer and page index, read by the first lookup that reads the file;
//! both are dropped when the file leaves the table. The keys are persisted
//! beside the data ([`tracelake_schema::trace_keys`]): after a restart,
//! and on every node of a cluster, the first lookup reads one small object
//! per file (sixteen at a time), not the files' footers and key columns.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Date32Array, Int32Array, RecordBatch, Scalar,
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
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use deltalake::DeltaTable;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use object_store::{ObjectStore, ObjectStoreExt as _};
use tokio::sync::Mutex;
use tracelake_schema::spans::{DATE, HOUR, TRACE_ID, TRACE_KEY, trace_key};
use tracelake_schema::trace_keys;

#[derive(Default)]
pub struct TraceIndex {
    /// Data file path → what the index knows of it.
    files: Mutex<HashMap<String, Arc<IndexedFile>>>,
}

/// `date` (days since the epoch) and `hour` of a partition.
type Partition = (i32, i32);

/// One data file of the table.
struct IndexedFile {
    size: u64,
    partition: Partition,
    /// Sorted distinct trace keys.
    keys: Arc<[i64]>,
    /// Footer and page index, loaded by the first lookup that reads it.
    metadata: tokio::sync::OnceCell<ArrowReaderMetadata>,
}

/// A data file that holds a trace key.
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
    /// Brings the index up to date with `table`'s files; returns them.
    async fn refresh(&self, table: &DeltaTable) -> Result<Vec<(String, Arc<IndexedFile>)>> {
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
        let mut index = self.files.lock().await;
        let live: HashSet<&str> = files.iter().map(|f| f.0.as_str()).collect();
        index.retain(|path, _| live.contains(path.as_str()));
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
        while let Some(file) = loaded.next().await {
            let (path, size, partition, keys) = file?;
            let entry = IndexedFile {
                size,
                partition,
                keys,
                metadata: tokio::sync::OnceCell::new(),
            };
            index.insert(path, Arc::new(entry));
        }
        Ok(files
            .into_iter()
            .filter_map(|(path, ..)| {
                let entry = Arc::clone(index.get(&path)?);
                Some((path, entry))
            })
            .collect())
    }

    /// The files of `table` (paths as its log names them) holding one of
    /// `keys`.
    pub async fn files_holding(&self, table: &DeltaTable, keys: &[i64]) -> Result<HashSet<String>> {
        Ok(self
            .refresh(table)
            .await?
            .into_iter()
            .filter(|(_, file)| keys.iter().any(|k| file.keys.binary_search(k).is_ok()))
            .map(|(path, _)| path)
            .collect())
    }

    /// The files of `table` holding `key`.
    pub async fn holders(&self, table: &DeltaTable, key: i64) -> Result<Vec<Holder>> {
        Ok(self
            .refresh(table)
            .await?
            .into_iter()
            .filter(|(_, f)| f.keys.binary_search(&key).is_ok())
            .map(|(path, file)| Holder { path, file })
            .collect())
    }

    /// The rows of `trace_id` in `holder`, in the spans schema: only the row
    /// groups and pages whose `trace_key` range holds the key are read, and
    /// of those only the rows whose `trace_id` matches are decoded beyond
    /// that column.
    pub async fn read_trace(
        &self,
        store: &Arc<dyn ObjectStore>,
        holder: &Holder,
        trace_id: &[u8],
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        let key = trace_key(trace_id);
        let open = || -> Result<SendReader> {
            Ok(SendReader(
                DefaultParquetFileReaderFactory::new(Arc::clone(store)).create_reader(
                    0,
                    PartitionedFile::new(holder.path.as_str(), holder.file.size),
                    None,
                    &ExecutionPlanMetricsSet::new(),
                )?,
            ))
        };
        let metadata = holder
            .file
            .metadata
            .get_or_try_init(|| async {
                let mut reader = open()?;
                ArrowReaderMetadata::load_async(
                    &mut reader,
                    ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
                )
                .await
                .map_err(DataFusionError::from)
            })
            .await?
            .clone();
        let parquet = metadata.metadata();
        let stats = StatisticsConverter::try_new(
            TRACE_KEY,
            metadata.schema(),
            parquet.file_metadata().schema_descr(),
        )?;
        let holds = |min: &ArrayRef, max: &ArrayRef, i: usize| {
            let (min, max) = (
                min.as_primitive::<Int64Type>(),
                max.as_primitive::<Int64Type>(),
            );
            (min.is_null(i) || min.value(i) <= key) && (max.is_null(i) || key <= max.value(i))
        };
        let (mins, maxes) = (
            stats.row_group_mins(parquet.row_groups())?,
            stats.row_group_maxes(parquet.row_groups())?,
        );
        let row_groups: Vec<usize> = (0..parquet.num_row_groups())
            .filter(|&i| holds(&mins, &maxes, i))
            .collect();
        if row_groups.is_empty() {
            return Ok(Vec::new());
        }
        // Columns null in every row group read (most dedicated attribute
        // columns, in a file of spans that never set their key) are not
        // read: their nulls are made here.
        let descr = parquet.file_metadata().schema_descr();
        let all_null = |root: usize| {
            (0..descr.num_columns())
                .filter(|&leaf| descr.get_column_root_idx(leaf) == root)
                .all(|leaf| {
                    row_groups.iter().all(|&rg| {
                        let rg = parquet.row_group(rg);
                        rg.column(leaf)
                            .statistics()
                            .and_then(|s| s.null_count_opt())
                            .is_some_and(|n| n as i64 == rg.num_rows())
                    })
                })
        };
        let read: Vec<usize> = (0..descr.root_schema().get_fields().len())
            .filter(|&root| !all_null(root))
            .collect();
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(open()?, metadata.clone())
                .with_row_groups(row_groups.clone())
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
                    if holds(&mins, &maxes, page) {
                        RowSelector::select(rows)
                    } else {
                        RowSelector::skip(rows)
                    }
                })
                .collect();
            builder = builder.with_row_selection(RowSelection::from(selectors));
        }
        let wanted = Scalar::new(BinaryArray::from(vec![trace_id]));
        let id_column = ProjectionMask::columns(builder.parquet_schema(), [TRACE_ID]);
        let filter = ArrowPredicateFn::new(id_column, move |batch: RecordBatch| {
            arrow::compute::kernels::cmp::eq(batch.column(0), &wanted)
        });
        let mut stream = builder
            .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
            .build()?;
        let (date, hour) = holder.file.partition;
        let mut out = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let rows = batch.num_rows();
            let mut columns: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .filter(|f| f.name() != DATE && f.name() != HOUR)
                .map(|f| match batch.column_by_name(f.name()) {
                    Some(c) => Arc::clone(c),
                    None => arrow::array::new_null_array(f.data_type(), rows),
                })
                .collect();
            columns.push(Arc::new(Date32Array::from(vec![date; rows])));
            columns.push(Arc::new(Int32Array::from(vec![hour; rows])));
            out.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
        }
        Ok(out)
    }
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
