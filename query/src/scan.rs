//! The committed rows of the spans table as a plain Parquet scan.
//!
//! The table's files are read with DataFusion's own Parquet source, built
//! from the Delta snapshot's file list: each file with its `date`/`hour`
//! partition values, addressed from the root of its object store
//! (`s3://bucket`, `file:///`). delta-rs' own scan node does the same work
//! but cannot be sent to another process; this plan is made only of
//! DataFusion's nodes, so the distributed engine ([`crate::distributed`])
//! can hand its files out to other query nodes, which find the store by the
//! URL alone ([`TableStores`]). One scan serves both: a single node runs
//! the same plan.
//!
//! Files are pruned at planning by what is known without opening them:
//! the `date` and `hour` partition values, the hour's bounds as the file's
//! `start_time_unix_nano` range (a span's partition is the hour of its
//! start), and the Delta log's min/max of `start_time_unix_nano`,
//! `duration_ns` and `trace_key`; inside a file, the row-group and page
//! statistics prune by every condition.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Date32Array, Int32Array, Int64Array, UInt64Array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::config::TableParquetOptions;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::tree_node::{Transformed, TreeNode as _};
use datafusion::common::{Column, DFSchema, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::{
    DefaultObjectStoreRegistry, ObjectStoreRegistry, ObjectStoreUrl,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use deltalake::{ObjectMeta, ObjectStore, Path};
use tracelake_schema::layout::Layout;
use tracelake_schema::spans::{
    DATE, DURATION_NS, HOUR, PARTITION_COLUMNS, START_TIME_UNIX_NANO, TRACE_KEY,
};
use url::Url;

use crate::map_keys::{FileKeys, file_keys};

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// One data file of the table's snapshot.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    /// Location from the object store's root.
    pub path: Path,
    /// Path as the table's log names it (from the table's root).
    pub relative: String,
    pub size: u64,
    /// Days since the epoch.
    pub date: i32,
    pub hour: i32,
    /// (min, max) of the columns the Delta log keeps statistics for and
    /// queries prune by ([`PRUNED_BY_STATS`]), where the log has them.
    pub bounds: Bounds,
    /// The keys of its attribute maps, where its tags list them.
    pub keys: Arc<FileKeys>,
}

/// The integer columns whose per-file min/max from the Delta log prune
/// files at planning: lookups by `trace_key`, duration and time ranges
/// within an hour.
const PRUNED_BY_STATS: [&str; 3] = [START_TIME_UNIX_NANO, DURATION_NS, TRACE_KEY];

/// The bounds of [`PRUNED_BY_STATS`] in a file's Delta statistics (JSON:
/// `minValues`, `maxValues`).
fn stats_bounds(stats: Option<&str>) -> Bounds {
    let parsed: Option<serde_json::Value> = stats.and_then(|s| serde_json::from_str(s).ok());
    PRUNED_BY_STATS.map(|column| {
        let parsed = parsed.as_ref()?;
        let min = parsed.get("minValues")?.get(column)?.as_i64()?;
        let max = parsed.get("maxValues")?.get(column)?.as_i64()?;
        Some((min, max))
    })
}

impl DataFile {
    /// First nanosecond of the file's hour.
    fn hour_start(&self) -> i64 {
        (i64::from(self.date) * 24 + i64::from(self.hour)).saturating_mul(NANOS_PER_HOUR)
    }

    /// Last nanosecond of the file's hour.
    fn hour_end(&self) -> i64 {
        self.hour_start().saturating_add(NANOS_PER_HOUR - 1)
    }
}

/// The store root (`s3://bucket`, `file:///`) of a table at `table_url`,
/// and the table's location from there.
pub(crate) fn store_root(table_url: &Url) -> Result<(ObjectStoreUrl, Path)> {
    let root = format!("{}://{}", table_url.scheme(), table_url.authority());
    let base = Path::from_url_path(table_url.path())
        .map_err(|e| DataFusionError::Configuration(format!("table location {table_url}: {e}")))?;
    Ok((ObjectStoreUrl::parse(root)?, base))
}

/// The [`PRUNED_BY_STATS`] bounds and the attribute-map keys
/// ([`FileKeys`]) of each data file, by path: parsed from the log's JSON
/// and tags once per file (files never change), not at every query.
#[derive(Debug, Default)]
pub(crate) struct BoundsCache(
    parking_lot::Mutex<std::collections::HashMap<String, (Bounds, Arc<FileKeys>)>>,
);

type Bounds = [Option<(i64, i64)>; 3];

/// The data files of `table`'s loaded version, their locations from the
/// store root (`base` is the table's own location there).
pub(crate) fn data_files(
    table: &DeltaTable,
    base: &Path,
    cache: &BoundsCache,
) -> Result<Vec<DataFile>> {
    let snapshot = table.snapshot().map_err(external)?;
    let mut known = cache.0.lock();
    let files = snapshot
        .log_data()
        .iter()
        .map(|f| {
            let partition = crate::trace_index::file_partition(&f);
            let relative = f.path();
            let (date, hour) = partition.ok_or_else(|| {
                DataFusionError::Internal(format!("{relative}: no date/hour partition values"))
            })?;
            // Files whose rows need more than reading (deletion vectors):
            // tracelake never writes them; refuse rather than misread.
            if f.deletion_vector_descriptor().is_some() {
                return Err(DataFusionError::NotImplemented(format!(
                    "{relative} has a deletion vector, which tracelake does not read"
                )));
            }
            if Url::parse(&relative).is_ok() {
                // An absolute location (Delta allows them; we write none).
                return Err(DataFusionError::NotImplemented(format!(
                    "{relative}: data files outside the table's directory are not read"
                )));
            }
            let path: Path = base.parts().chain(f.object_store_path().parts()).collect();
            let (bounds, keys) = match known.get(relative.as_ref()) {
                Some((bounds, keys)) => (*bounds, Arc::clone(keys)),
                None => {
                    let bounds = stats_bounds(f.stats().as_deref());
                    // The tags are read only through the `Add` action.
                    #[allow(deprecated)]
                    let add = f.add_action();
                    let keys = Arc::new(file_keys(add.tags.as_ref()));
                    known.insert(relative.to_string(), (bounds, Arc::clone(&keys)));
                    (bounds, keys)
                }
            };
            Ok(DataFile {
                path,
                bounds,
                keys,
                relative: relative.to_string(),
                size: f.size().max(0) as u64,
                date,
                hour,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Forget the files the table no longer has.
    if known.len() > files.len() {
        let live: std::collections::HashSet<&str> =
            files.iter().map(|f| f.relative.as_str()).collect();
        known.retain(|path, _| live.contains(path.as_str()));
    }
    Ok(files)
}

/// A Parquet scan of `files` in the store at `store`: `schema` is the
/// stored schema (partition columns last), `projection` indexes it,
/// `filters` prune files, row groups and pages (DataFusion applies them
/// again above the scan).
pub(crate) fn parquet_scan(
    state: &dyn Session,
    store: ObjectStoreUrl,
    schema: &SchemaRef,
    files: Vec<DataFile>,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let partitions = PARTITION_COLUMNS.len();
    let split = schema.fields().len() - partitions;
    let partition_fields: Vec<Arc<Field>> = schema.fields()[split..].to_vec();
    debug_assert!(
        partition_fields
            .iter()
            .map(|f| f.name().as_str())
            .eq(PARTITION_COLUMNS)
    );
    let file_schema = Arc::new(Schema::new(schema.fields()[..split].to_vec()));

    let predicate = match conjunction(filters.iter().cloned()) {
        Some(expr) => {
            let df_schema = DFSchema::try_from(Arc::clone(schema))?;
            Some(state.create_physical_expr(expr, &df_schema)?)
        }
        None => None,
    };
    let files = match &predicate {
        Some(predicate) => match PruningPredicateBuilder::new()
            .with_file_schema(Arc::clone(schema))
            .build(Arc::clone(predicate))
        {
            Some(pruning) => {
                let keep = pruning.prune(&FileStatistics(&files))?;
                files
                    .into_iter()
                    .zip(keep)
                    .filter_map(|(f, keep)| keep.then_some(f))
                    .collect()
            }
            None => files,
        },
        None => files,
    };
    if files.is_empty() {
        let projected = datafusion::common::project_schema(schema, projection)?;
        return Ok(Arc::new(EmptyExec::new(projected)));
    }

    // As many groups as the session runs partitions; DataFusion splits
    // large files further by byte range.
    let groups = state.config().target_partitions().max(1).min(files.len());
    let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
    for (i, file) in files.into_iter().enumerate() {
        let mut partitioned = PartitionedFile::new_from_meta(ObjectMeta {
            location: file.path,
            last_modified: chrono::DateTime::UNIX_EPOCH,
            size: file.size,
            e_tag: None,
            version: None,
        });
        partitioned.partition_values = vec![
            ScalarValue::Date32(Some(file.date)),
            ScalarValue::Int32(Some(file.hour)),
        ];
        file_groups[i % groups].push(partitioned);
    }

    let runtime = state.runtime_env();
    let mut source = ParquetSource::new(
        TableSchema::builder(file_schema)
            .with_table_partition_cols(partition_fields)
            .build(),
    )
    .with_table_parquet_options(parquet_options(state, &store, schema, filters));
    if let Some(predicate) = predicate {
        source = source.with_predicate(predicate);
    }
    let source = cached_footers(source, runtime, &store)?;
    let config = FileScanConfigBuilder::new(store, Arc::new(source))
        .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// The session's Parquet options for a scan of the store `store` with
/// `filters`. Bloom filters are read only on local disk, and only when a
/// filter names a dedicated string column (the columns the writer gives
/// them): DataFusion reads each row group's filter with a request of its
/// own, one after the other, which on an object store cost more than the
/// row groups they skip (BENCHMARKS.md, "Bloom filters on dedicated
/// columns"), and which a trace lookup's `trace_id` condition would spend
/// on the filters files written before 2026-12-06 have on `trace_id`,
/// never skipping a row group the trace index and the sorted `trace_key`
/// have not skipped already.
fn parquet_options(
    state: &dyn Session,
    store: &ObjectStoreUrl,
    schema: &SchemaRef,
    filters: &[Expr],
) -> TableParquetOptions {
    let mut options = state.table_options().parquet.clone();
    if !store.as_str().starts_with("file:") {
        options.global.bloom_filter_on_read = false;
    }
    if options.global.bloom_filter_on_read {
        let dedicated: HashSet<&str> = match Layout::of_schema(schema) {
            Ok(layout) => layout.text_columns().collect(),
            Err(_) => HashSet::new(),
        };
        options.global.bloom_filter_on_read = filters.iter().any(|f| {
            f.column_refs()
                .iter()
                .any(|c| dedicated.contains(c.name.as_str()))
        });
    }
    options
}

/// `source` reading footers and page indexes through the runtime's
/// metadata cache (files never change): a query reads only the footers of
/// files it has not read before, which on an object store is a request per
/// file saved. (The cache is not part of a plan sent to a SQL worker; the
/// worker sets its own: [`with_cached_footers`].)
fn cached_footers(
    source: ParquetSource,
    runtime: &Arc<RuntimeEnv>,
    store: &ObjectStoreUrl,
) -> Result<ParquetSource> {
    let factory = CachedParquetFileReaderFactory::new(
        runtime.object_store(store)?,
        runtime.cache_manager.get_file_metadata_cache(),
    );
    Ok(source.with_parquet_file_reader_factory(Arc::new(factory)))
}

/// `plan` (a SQL worker's) with each Parquet scan reading footers through
/// `runtime`'s metadata cache.
pub(crate) fn with_cached_footers(
    plan: Arc<dyn ExecutionPlan>,
    runtime: &Arc<RuntimeEnv>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(config) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        else {
            return Ok(Transformed::no(node));
        };
        let Some(source) = config.file_source().downcast_ref::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        let source = cached_footers(source.clone(), runtime, &config.object_store_url)?;
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(source))
            .build();
        Ok(Transformed::yes(DataSourceExec::from_data_source(config)))
    })
    .map(|t| t.data)
}

/// What the planner knows of each file before opening it: its partition
/// values, and its hour as the range of `start_time_unix_nano`.
struct FileStatistics<'a>(&'a [DataFile]);

impl PruningStatistics for FileStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }

    fn num_containers(&self) -> usize {
        self.0.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        // Partition values are never null; nothing is known of the rest.
        (column.name == DATE || column.name == HOUR)
            .then(|| Arc::new(UInt64Array::from(vec![0u64; self.0.len()])) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        None
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

impl FileStatistics<'_> {
    fn bound(&self, column: &Column, max: bool) -> Option<ArrayRef> {
        let files = self.0;
        let stats = PRUNED_BY_STATS.iter().position(|c| *c == column.name);
        let logged = |f: &DataFile| {
            let (lo, hi) = f.bounds[stats?]?;
            Some(if max { hi } else { lo })
        };
        Some(match column.name.as_str() {
            DATE => Arc::new(Date32Array::from_iter_values(files.iter().map(|f| f.date))),
            HOUR => Arc::new(Int32Array::from_iter_values(files.iter().map(|f| f.hour))),
            // The hour's bounds, narrowed by the log's where it has them.
            START_TIME_UNIX_NANO => Arc::new(Int64Array::from_iter_values(files.iter().map(|f| {
                match (max, logged(f)) {
                    (true, Some(hi)) => hi.min(f.hour_end()),
                    (true, None) => f.hour_end(),
                    (false, Some(lo)) => lo.max(f.hour_start()),
                    (false, None) => f.hour_start(),
                }
            }))),
            // Unknown (null) where the log has no statistics: kept.
            _ if stats.is_some() => Arc::new(Int64Array::from_iter(files.iter().map(logged))),
            _ => return None,
        })
    }
}

/// The object stores of every query session, by root URL: those
/// registered, and, the first time a table's store root is asked for, the
/// one delta-rs' factories make for it (`s3://bucket` with the server's S3
/// settings, `file:///`). So a query node that receives a plan from another
/// reads its files with no setup beyond its own storage settings.
#[derive(Debug, Default)]
pub struct TableStores {
    known: DefaultObjectStoreRegistry,
    made: parking_lot::Mutex<std::collections::HashMap<String, Arc<dyn ObjectStore>>>,
}

impl ObjectStoreRegistry for TableStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        if !matches!(url.scheme(), "s3" | "s3a" | "file" | "memory") {
            return self.known.get_store(url);
        }
        let root = format!("{}://{}/", url.scheme(), url.authority());
        let mut made = self.made.lock();
        if let Some(store) = made.get(&root) {
            return Ok(Arc::clone(store));
        }
        let parsed = Url::parse(&root).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let store = deltalake::logstore::store_for(&parsed, std::iter::empty::<(&str, &str)>())
            .map_err(external)?;
        made.insert(root, Arc::clone(&store));
        Ok(store)
    }
}

fn external(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(date: i32, hour: i32) -> DataFile {
        DataFile {
            path: Path::from(format!("d{date}h{hour}.parquet")),
            relative: String::new(),
            size: 1,
            date,
            hour,
            bounds: [None; 3],
            keys: Arc::new(file_keys(None)),
        }
    }

    #[test]
    fn files_are_pruned_by_the_bounds_the_delta_log_keeps() {
        use datafusion::prelude::{SessionContext, col, lit};
        let stats = |lo: i64, hi: i64| {
            format!(
                r#"{{"numRecords":3,"minValues":{{"trace_key":{lo},"duration_ns":{lo},"service_name":"a"}},"maxValues":{{"trace_key":{hi},"duration_ns":{hi}}}}}"#
            )
        };
        assert_eq!(
            stats_bounds(Some(&stats(-5, 9))),
            [None, Some((-5, 9)), Some((-5, 9))]
        );
        assert_eq!(stats_bounds(None), [None; 3]);
        assert_eq!(stats_bounds(Some("not json")), [None; 3]);
        let mut files = vec![file(20_000, 0), file(20_000, 0), file(20_000, 0)];
        files[0].bounds = stats_bounds(Some(&stats(0, 10)));
        files[1].bounds = stats_bounds(Some(&stats(20, 30)));
        // files[2]: no statistics, always read.
        let hour = 20_000i64 * 24 * NANOS_PER_HOUR;
        files[0].bounds[0] = Some((hour, hour + 100));
        files[1].bounds[0] = Some((hour + 200, hour + 300));
        let ctx = SessionContext::new();
        let state = ctx.state();
        let schema = tracelake_schema::spans::spans_schema();
        let kept = |filter: Expr| {
            let plan = parquet_scan(
                &state,
                ObjectStoreUrl::parse("file://").unwrap(),
                &schema,
                files.clone(),
                None,
                &[filter],
                None,
            )
            .unwrap();
            datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string()
                .matches("d20000h0.parquet")
                .count()
        };
        assert_eq!(kept(col(TRACE_KEY).eq(lit(25i64))), 2);
        assert_eq!(kept(col(DURATION_NS).gt(lit(40i64))), 1);
        assert_eq!(kept(col(START_TIME_UNIX_NANO).gt_eq(lit(hour + 150))), 2);
        assert_eq!(kept(col(START_TIME_UNIX_NANO).lt(lit(hour + 150))), 2);
        assert_eq!(kept(col(TRACE_KEY).is_null()), 3);
    }

    /// Bloom filters are read on local disk for a condition on a column
    /// that has them; not for other columns, not on an object store.
    #[test]
    fn bloom_filters_are_read_for_dedicated_columns_on_local_disk() {
        use datafusion::prelude::{SessionContext, col, lit};
        let mut config = datafusion::prelude::SessionConfig::new();
        config.options_mut().execution.parquet.bloom_filter_on_read = true;
        let state = SessionContext::new_with_config(config).state();
        let schema = tracelake_schema::spans::spans_schema();
        let reads = |store: &str, filter: Expr| {
            parquet_options(
                &state,
                &ObjectStoreUrl::parse(store).unwrap(),
                &schema,
                &[filter],
            )
            .global
            .bloom_filter_on_read
        };
        let path = col("url_path").eq(lit("/a/1"));
        assert!(reads("file://", path.clone()));
        assert!(!reads("s3://bucket", path));
        assert!(!reads("file://", col("trace_id").eq(lit(vec![1u8; 16]))));
        assert!(!reads(
            "file://",
            col("http_response_status_code").eq(lit(200i64))
        ));
    }

    #[test]
    fn a_table_location_is_decoded_once() {
        let url = Url::parse("s3://bucket/my%20tables/t/spans/").unwrap();
        let (root, base) = store_root(&url).unwrap();
        assert_eq!(root.as_str(), "s3://bucket/");
        assert_eq!(
            base,
            Path::from_iter(["my tables", "t", "spans"]),
            "{base:?}"
        );
        let file: Path = base
            .parts()
            .chain(
                Path::parse("date=2026-12-04/hour=09/part-1.parquet")
                    .unwrap()
                    .parts(),
            )
            .collect();
        assert_eq!(
            file.as_ref(),
            "my tables/t/spans/date=2026-12-04/hour=09/part-1.parquet"
        );
    }

    #[test]
    fn files_outside_a_time_range_or_partition_condition_are_pruned() {
        use datafusion::prelude::{SessionContext, col, lit};
        let schema = tracelake_schema::spans::spans_schema();
        let ctx = SessionContext::new();
        let state = ctx.state();
        let day = 20_000;
        let files = vec![file(day, 0), file(day, 1), file(day, 2), file(day + 1, 1)];
        // The last hour representable in nanoseconds does not overflow.
        assert_eq!(file(106_751, 23).hour_end(), i64::MAX);
        let hour = |d: i64, h: i64| (d * 24 + h) * NANOS_PER_HOUR;
        let kept = |filters: Vec<Expr>| {
            let plan = parquet_scan(
                &state,
                ObjectStoreUrl::parse("file://").unwrap(),
                &schema,
                files.clone(),
                None,
                &filters,
                None,
            )
            .unwrap();
            let shown = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string();
            let mut names: Vec<String> = files
                .iter()
                .map(|f| f.path.to_string())
                .filter(|p| shown.contains(p.as_str()))
                .collect();
            names.sort();
            names
        };
        // Hour 1 of `day` up to the middle of hour 2.
        let range = col(START_TIME_UNIX_NANO)
            .gt_eq(lit(hour(day.into(), 1)))
            .and(col(START_TIME_UNIX_NANO).lt(lit(hour(day.into(), 2) + 5)));
        assert_eq!(kept(vec![range]), ["d20000h1.parquet", "d20000h2.parquet"]);
        // A range ending exactly where an hour starts does not read it.
        let before = col(START_TIME_UNIX_NANO).lt(lit(hour(day.into(), 1)));
        assert_eq!(kept(vec![before]), ["d20000h0.parquet"]);
        let partition = col(HOUR)
            .eq(lit(1))
            .and(col(DATE).gt(lit(ScalarValue::Date32(Some(day)))));
        assert_eq!(kept(vec![partition]), ["d20001h1.parquet"]);
        // Conditions on other columns prune nothing here.
        assert_eq!(kept(vec![col("duration_ns").gt(lit(5i64))]).len(), 4);
        assert_eq!(kept(vec![]).len(), 4);
    }
}
