//! The `spans` table of every query: the Delta table unioned with the rows
//! still buffered by the collector.
//!
//! Both sides are read at one consistent point: the live rows are taken
//! first, in groups that say when they are in the table (their writer's WAL
//! watermark there reaching a sequence number); then the table's latest
//! version is read, and the groups it already holds are left out. Other
//! nodes' commits and compactions are seen at once, and no row is seen
//! twice or missed. Each side is cast to the canonical spans schema, so the
//! union (and every API reading it) sees one set of types.
//!
//! The table offers SQL's schema (its layout's
//! [`tracelake_schema::layout::Layout::sql_schema`]): the stored columns
//! plus `start_time`, computed from `start_time_unix_nano`, and the
//! configured dedicated columns the table's schema has, as of the last
//! version read; a condition on `start_time` also becomes one on
//! `start_time_unix_nano`, whose per-file and per-page statistics prune.
//! The scan applies every condition on stored columns itself, so that a
//! lookup in an attribute map is left out where a file's map lacks the key
//! ([`crate::map_keys`]); DataFusion applies those on `start_time`.

mod latest;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::{
    BinaryExpr as PhysicalBinaryExpr, CastExpr, Column, Literal,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use deltalake::table::config::TablePropertiesExt as _;
use tracelake_schema::layout::Layout;
use tracelake_schema::spans::{
    SCHEMA_VERSION, SCHEMA_VERSION_KEY, START_TIME, START_TIME_UNIX_NANO, TRACE_ID, TRACE_KEY,
    timestamp_type, trace_key,
};
use url::Url;

use crate::scan::DataFile;
use crate::trace_index::TraceIndex;
use latest::{Latest, Turn};

/// The table is in an older layout, which a compactor node is rewriting
/// (`collector::upgrade`), or one newer than this release reads; a 503.
#[derive(Debug)]
pub struct Upgrading {
    pub found: Option<u32>,
}

impl std::error::Error for Upgrading {}

impl fmt::Display for Upgrading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.found {
            Some(found) if found < SCHEMA_VERSION => write!(
                f,
                "the spans table is in layout version {found}, and the node holding the \
                 compactor lease is upgrading it to version {SCHEMA_VERSION}; queries are \
                 answered once it is done: retry"
            ),
            found => write!(
                f,
                "the spans table is in layout version {}, which this release (layout \
                 {SCHEMA_VERSION}) does not read: run the release that wrote it",
                found.map_or_else(|| "(none)".to_string(), |v| v.to_string())
            ),
        }
    }
}

/// Rows accepted but perhaps not yet in the table.
#[derive(Debug, Clone, Default)]
pub struct LiveSnapshot {
    /// The Delta application id under which the rows' writer commits its
    /// WAL watermark (`None`: rows that never reach the table).
    pub writer: Option<String>,
    /// Batches, each group with the highest WAL sequence number among its
    /// rows: the group is in the table once the writer's watermark there
    /// reaches it.
    pub groups: Vec<(u64, Vec<RecordBatch>)>,
}

impl LiveSnapshot {
    /// The rows not in a table whose watermark for the writer is
    /// `watermark`.
    fn rows_beyond(self, watermark: Option<i64>) -> Vec<RecordBatch> {
        let watermark = watermark.unwrap_or(-1);
        self.groups
            .into_iter()
            .filter(|(upto, _)| i64::try_from(*upto).map_or(true, |u| u > watermark))
            .flat_map(|(_, batches)| batches)
            .collect()
    }
}

/// Source of not-yet-committed rows: this node's buffer, or the ingest
/// nodes' ([`crate::peers`]).
#[async_trait]
pub trait LiveSpans: Send + Sync {
    /// The rows now, one snapshot per writer; with `trace_id`, rows of
    /// other traces may be left out.
    async fn snapshot(&self, trace_id: Option<&[u8; 16]>) -> Vec<LiveSnapshot>;
}

/// A table version and the writers' watermarks there.
type Watermarks = (Option<u64>, std::collections::HashMap<String, Option<i64>>);

/// The Delta table as the last refresh left it, and when the log was last
/// listed.
#[derive(Default)]
struct Loaded {
    table: Option<DeltaTable>,
    /// When the last listing began, by both clocks: the monotonic one does
    /// not count time a machine spent suspended, the wall clock may step.
    listed: Option<(Instant, SystemTime)>,
    /// Listings of the log so far (for tests).
    listings: u64,
}

impl Loaded {
    /// Whether a refresh may ask for the commit after the version held
    /// instead of listing the log ([`PROBE_WITHIN`]).
    fn may_probe(&self) -> bool {
        let Some((instant, wall)) = self.listed else {
            return false;
        };
        let recent = instant.elapsed() < PROBE_WITHIN
            && SystemTime::now()
                .duration_since(wall)
                .is_ok_and(|age| age < PROBE_WITHIN);
        // The log keeps its entries for hours (or for ever).
        let kept = self
            .table
            .as_ref()
            .and_then(|t| t.snapshot().ok())
            .is_some_and(|s| {
                let properties = s.table_config();
                !properties.enable_expired_log_cleanup()
                    || properties.log_retention_duration() >= PROBE_WITHIN * 60
            });
        recent && kept
    }
}

/// How long after a listing of the Delta log a refresh asks only for the
/// commit after its version. Delta versions follow one another, so while
/// that commit does not exist no newer one does; a commit removes expired
/// log entries only when they are older than the log's retention, and the
/// commit after a version last seen as the newest within this interval is
/// younger than that. So a probe is trusted only where the log's
/// retention is at least an hour (six hours on tables tracelake made,
/// `collector::table::LOG_RETENTION`) and the listing is this recent by
/// both clocks. One read of a missing file (a `stat` on disk, a GET on
/// S3) instead of a listing of the log, its replay, and the thread it
/// runs on: what a read pays while nothing is committed.
const PROBE_WITHIN: Duration = Duration::from_secs(60);

pub struct SpansTable {
    url: Url,
    /// The table, brought to its latest version by one refresh at a time
    /// for the reads that arrived before the refresh started; each
    /// version is shared as a copy of its own, read without a lock.
    delta: Latest<Loaded, Option<Arc<DeltaTable>>>,
    /// The writers' watermarks at one table version (read once per version).
    watermarks: parking_lot::Mutex<Watermarks>,
    live: Option<Arc<dyn LiveSpans>>,
    index: Arc<TraceIndex>,
    /// The root of the table's object store, and the table's path there.
    store: (ObjectStoreUrl, deltalake::Path),
    bounds: crate::scan::BoundsCache,
    /// The table schema's layout (its configured dedicated columns) and
    /// the table version it was read at; `None` before the first read.
    layout: parking_lot::RwLock<Option<(Option<u64>, Arc<Layout>)>>,
}

impl fmt::Debug for SpansTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpansTable")
            .field("url", &self.url)
            .finish()
    }
}

impl SpansTable {
    /// The table at `url`, with `live` the rows not yet in it, keeping the
    /// file metadata its trace lookups read in `metadata`.
    pub fn new(
        url: Url,
        live: Option<Arc<dyn LiveSpans>>,
        metadata: Arc<crate::trace_index::MetadataCache>,
    ) -> Result<Self> {
        Ok(Self {
            store: crate::scan::store_root(&url)?,
            url,
            delta: Latest::new(Loaded::default()),
            watermarks: Default::default(),
            live,
            index: Arc::new(TraceIndex::new(metadata)),
            bounds: Default::default(),
            layout: Default::default(),
        })
    }

    /// The table's layout as of the last version read (the standard one
    /// before the first read, or while no table exists).
    pub fn layout(&self) -> Arc<Layout> {
        match &*self.layout.read() {
            Some((_, layout)) => Arc::clone(layout),
            None => Arc::clone(Layout::standard()),
        }
    }

    /// Reads the table's layout if no read has yet: before the first
    /// query is planned, so that it sees the configured columns. Later
    /// versions' columns are seen from the read that meets them.
    pub async fn ensure_layout(&self) -> Result<()> {
        if self.layout.read().is_none() {
            self.latest().await?;
        }
        Ok(())
    }

    /// The table at its latest version (`None` while no table exists):
    /// loaded by a refresh that started after this call did, so every
    /// commit made before the call is in it ([`Latest`]).
    async fn latest(&self) -> Result<Option<Arc<DeltaTable>>> {
        let mut refresh = match self.delta.get().await {
            Turn::Fresh(table) => return Ok(table),
            Turn::Refresh(refresh) => refresh,
        };
        // A version already shared is shared on.
        let shared = self.delta.last().flatten();
        let table = self.load(refresh.state()).await?.map(|table| match shared {
            Some(same) if same.version() == table.version() => same,
            _ => Arc::new(table.clone()),
        });
        Ok(refresh.publish(table))
    }

    /// Keeps [`SpansTable::layout`] that of `table`'s version.
    fn note_layout(&self, table: &DeltaTable) -> Result<()> {
        use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
        let version = table.version();
        if matches!(&*self.layout.read(), Some((v, _)) if *v == version) {
            return Ok(());
        }
        let schema: arrow::datatypes::Schema = table
            .snapshot()
            .map_err(external)?
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let layout = Layout::of_schema(&schema).map_err(DataFusionError::Plan)?;
        let mut current = self.layout.write();
        // The same columns: keep the layout (and its schemas) as it is.
        let layout = match &*current {
            Some((_, have)) if have.configured() == layout.configured() => Arc::clone(have),
            _ => layout,
        };
        *current = Some((version, layout));
        Ok(())
    }

    /// The live rows not in `table` (its version as loaded), with the
    /// stored columns `schema` (the reader's layout: a writer may have
    /// started before a column was added, or be a node that adds none).
    async fn live_rows(
        &self,
        table: Option<&DeltaTable>,
        live: Vec<LiveSnapshot>,
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        let mut rows = Vec::new();
        for snapshot in live {
            rows.extend(self.rows_not_in(table, snapshot).await?);
        }
        rows.iter()
            .map(|batch| Ok(Layout::conform(batch, schema)?))
            .collect()
    }

    /// The rows of one writer's snapshot not in `table`.
    async fn rows_not_in(
        &self,
        table: Option<&DeltaTable>,
        live: LiveSnapshot,
    ) -> Result<Vec<RecordBatch>> {
        let (Some(table), Some(writer)) = (table, live.writer.as_deref()) else {
            return Ok(live.rows_beyond(None));
        };
        let version = table.version();
        if let Some(known) = {
            let cache = self.watermarks.lock();
            (cache.0 == version)
                .then(|| cache.1.get(writer).copied())
                .flatten()
        } {
            return Ok(live.rows_beyond(known));
        }
        let watermark = table
            .snapshot()
            .map_err(external)?
            .transaction_version(table.log_store().as_ref(), writer)
            .await
            .map_err(external)?;
        let mut cache = self.watermarks.lock();
        // Kept for the newest version read (reads of an older one, still
        // running, do not take it back).
        if cache.0 < version {
            *cache = (version, Default::default());
        }
        if cache.0 == version {
            cache.1.insert(writer.to_string(), watermark);
        }
        drop(cache);
        Ok(live.rows_beyond(watermark))
    }

    /// The Delta table at its latest version in `loaded`, or `None` while
    /// no table exists.
    async fn load<'a>(&self, loaded: &'a mut Loaded) -> Result<Option<&'a mut DeltaTable>> {
        let listing = (Instant::now(), SystemTime::now());
        let fresh = loaded.table.is_none();
        if fresh {
            let table = DeltaTable::try_from_url(self.url.clone())
                .await
                .map_err(external)?;
            if table.version().is_some() {
                loaded.listed = Some(listing);
                loaded.listings += 1;
            }
            loaded.table = Some(table);
        }
        let unchanged = (fresh && loaded.listed.is_some())
            || (loaded.may_probe() && {
                let table = loaded.table.as_ref().expect("set above");
                let next = table.version().map_or(0, |v| v + 1);
                match table.log_store().read_commit_entry(next).await {
                    Ok(entry) => entry.is_none(),
                    Err(error) => {
                        tracing::debug!(%error, next, "reading the next commit; listing the log");
                        false
                    }
                }
            });
        let table = loaded.table.as_mut().expect("set above");
        if !unchanged {
            if let Err(error) = table.update_state().await {
                // Not a table yet (nothing written): nothing to read.
                if table.version().is_none() {
                    tracing::debug!(%error, "no spans table yet");
                    return Ok(None);
                }
                return Err(external(error));
            }
            loaded.listed = Some(listing);
            loaded.listings += 1;
        }
        if table.version().is_none() {
            return Ok(None);
        }
        self.note_layout(table)?;
        let layout = table
            .snapshot()
            .map_err(external)?
            .metadata()
            .configuration()
            .get(SCHEMA_VERSION_KEY)
            .and_then(|v| v.parse::<u32>().ok());
        if layout != Some(SCHEMA_VERSION) {
            // Files of two layouts, a partition at a time: nothing to read
            // until the node upgrading it is done.
            return Err(DataFusionError::External(Box::new(Upgrading {
                found: layout,
            })));
        }
        Ok(Some(table))
    }

    /// The data files of the table's latest version (`None` while no
    /// table exists), with `trace_keys` only those holding one of them
    /// ([`TraceIndex`]); and the rows of `live` not in that version, with
    /// the stored columns `schema`.
    async fn committed_files(
        &self,
        live: Vec<LiveSnapshot>,
        trace_keys: Option<&[i64]>,
        schema: &SchemaRef,
    ) -> Result<(Option<Vec<DataFile>>, Vec<RecordBatch>)> {
        let Some(table) = self.latest().await? else {
            return Ok((None, self.live_rows(None, live, schema).await?));
        };
        let live = self.live_rows(Some(&table), live, schema).await?;
        // A scan of the table (SQL, a search) brings the trace index up to
        // its version ahead of the lookups.
        self.index.follow(&table);
        let mut files = crate::scan::data_files(&table, &self.store.1, &self.bounds)?;
        if let Some(keys) = trace_keys {
            match self.index.files_holding(&table, keys).await {
                Ok(holding) => files.retain(|f| holding.contains(&f.relative)),
                // Correct without it, only slower.
                Err(error) => {
                    tracing::warn!(%error, "trace index unavailable; reading every file")
                }
            }
        }
        Ok((Some(files), live))
    }

    /// Every span of `trace_ids` (of those starting within `range`, when
    /// given), with `columns` of the spans schema (all when `None`), without
    /// a query plan: the committed rows straight from the files the trace
    /// index names (the table's latest version, read after the live rows
    /// were taken, as every scan is), then the live rows not in it.
    pub async fn traces_spans(
        &self,
        trace_ids: &[[u8; 16]],
        range: Option<(i64, i64)>,
        columns: Option<&[&str]>,
        max_rows: usize,
    ) -> Result<Vec<RecordBatch>> {
        if trace_ids.is_empty() {
            return Ok(Vec::new());
        }
        let live = match &self.live {
            // One trace: a node asked may send only its rows.
            Some(live) => {
                live.snapshot(trace_ids.first().filter(|_| trace_ids.len() == 1))
                    .await
            }
            None => Vec::new(),
        };
        let rows = crate::trace_index::RowBudget::new(max_rows);
        let mut out = Vec::new();
        let (live, wanted) = {
            let table = self.latest().await?;
            // The layout as that load found it, or as a later one did:
            // configured columns added since an earlier read included (a
            // column its files lack is read as nulls).
            let schema = Arc::clone(self.layout().schema());
            let wanted = match columns {
                Some(columns) => {
                    let indices = columns
                        .iter()
                        .map(|c| schema.index_of(c))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    Arc::new(schema.project(&indices)?)
                }
                None => Arc::clone(&schema),
            };
            let live = match table.as_deref() {
                Some(table) => {
                    let holders = self.index.holders(table, trace_ids, range).await?;
                    let store = table.log_store().object_store(None);
                    for (holder, ids) in &holders {
                        out.extend(
                            self.index
                                .read_traces(&store, holder, ids, &wanted, &rows)
                                .await?,
                        );
                    }
                    self.live_rows(Some(table), live, &schema).await?
                }
                None => self.live_rows(None, live, &schema).await?,
            };
            (live, wanted)
        };
        for batch in &live {
            let ids = batch.column_by_name(TRACE_ID).ok_or_else(|| {
                DataFusionError::Internal("buffered rows without trace_id".into())
            })?;
            let mask = crate::trace_index::one_of(ids, trace_ids)?;
            if mask.true_count() > 0 {
                rows.take(mask.true_count())?;
                let kept = arrow::compute::filter_record_batch(batch, &mask)?;
                out.push(Layout::conform(&kept, &wanted)?);
            }
        }
        match range {
            Some((start, end)) => out
                .iter()
                .map(|batch| within(batch, start, end))
                .filter(|b| !matches!(b, Ok(b) if b.num_rows() == 0))
                .collect(),
            None => Ok(out),
        }
    }
}

/// The rows of `batch` whose `start_time_unix_nano` is in `start..end`.
fn within(batch: &RecordBatch, start: i64, end: i64) -> Result<RecordBatch> {
    let starts = batch.column_by_name(START_TIME_UNIX_NANO).ok_or_else(|| {
        DataFusionError::Internal(format!(
            "a time range needs {START_TIME_UNIX_NANO} among the columns read"
        ))
    })?;
    let starts = starts.as_primitive::<arrow::datatypes::Int64Type>();
    let mask: arrow::array::BooleanArray = starts
        .iter()
        .map(|t| Some(t.is_some_and(|t| start <= t && t < end)))
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &mask)?)
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.layout().sql_schema())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Every condition prunes files, row groups and pages; the scan
        // applies those on stored columns itself (those on attribute-map
        // keys file set by file set: `crate::map_keys`), DataFusion those
        // on the computed `start_time`.
        Ok(filters
            .iter()
            .map(|f| {
                if applied_by_scan(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The layout at planning or a later one: SQL's schema only grows
        // at its end, so the projection's positions are the same in both.
        let layout = self.layout();
        let sql = Arc::clone(layout.sql_schema());
        let schema = Arc::clone(layout.schema());
        // The stored columns the projection needs, each once.
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..sql.fields().len()).collect(),
        };
        let mut stored: Vec<usize> = Vec::with_capacity(wanted.len());
        for &i in &wanted {
            let j = schema.index_of(stored_name(sql.field(i).name()))?;
            if !stored.contains(&j) {
                stored.push(j);
            }
        }
        let projection = Some(&stored);
        // What the scan yields: strings as views, as SQL declares them.
        let scan = Arc::clone(layout.scan_schema());
        let projected = project_schema(&scan, projection)?;
        let live = match &self.live {
            Some(live) => live.snapshot(None).await,
            None => Vec::new(),
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        // The conditions this scan applies (DataFusion was told so).
        let applied: Vec<Expr> = filters
            .iter()
            .filter(|f| applied_by_scan(f))
            .cloned()
            .collect();
        let (filters, trace_keys) = with_trace_keys(filters);
        let filters = stored_filters(filters);
        // Both sides in the layout the plan was made with (or a later
        // one): a column added since is not read by this query.
        let (committed, live) = self
            .committed_files(live, trace_keys.as_deref(), &schema)
            .await?;
        if let Some(files) = committed {
            let sql_schema = Arc::new(DFSchema::try_from(Arc::clone(&sql))?);
            for (conditions, files) in crate::map_keys::file_sets(files, &applied, &sql_schema)? {
                let columns = with_columns_of(&stored, &conditions, &schema)?;
                let mut pruning = filters.clone();
                pruning.extend(conditions.iter().filter(|c| !filters.contains(c)).cloned());
                // The limit stops the scan only where nothing filters above
                // it.
                let plan = crate::scan::parquet_scan(
                    state,
                    self.store.0.clone(),
                    &scan,
                    files,
                    Some(&columns),
                    &pruning,
                    limit.filter(|_| conditions.is_empty()),
                )?;
                let plan = cast_to(plan, &project_schema(&scan, Some(&columns))?)?;
                inputs.push(filtered(state, plan, &conditions, &projected, limit)?);
            }
        }
        if !live.is_empty() {
            let batches: Vec<RecordBatch> = live;
            let columns = with_columns_of(&stored, &applied, &schema)?;
            let plan = MemorySourceConfig::try_new_exec(
                &[batches],
                Arc::clone(&schema),
                Some(columns.clone()),
            )?;
            let plan = cast_to(plan, &project_schema(&scan, Some(&columns))?)?;
            inputs.push(filtered(state, plan, &applied, &projected, limit)?);
        }
        let plan = if inputs.is_empty() {
            Arc::new(EmptyExec::new(Arc::clone(&projected)))
        } else {
            UnionExec::try_new(inputs)?
        };
        to_sql_columns(plan, &sql, &wanted)
    }
}

/// Whether the scan applies condition `filter` itself: it reads only
/// stored columns (`start_time` is computed above the scan).
fn applied_by_scan(filter: &Expr) -> bool {
    !filter.column_refs().iter().any(|c| c.name == START_TIME)
}

/// The stored columns `columns` (positions in `schema`) and after them
/// those `conditions` read.
fn with_columns_of(
    columns: &[usize],
    conditions: &[Expr],
    schema: &SchemaRef,
) -> Result<Vec<usize>> {
    let mut out = columns.to_vec();
    for condition in conditions {
        for column in condition.column_refs() {
            let i = schema.index_of(&column.name)?;
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    Ok(out)
}

/// The rows of `plan` meeting every condition of `conditions` (at most
/// `limit` of them), as `projected`'s columns (a prefix of `plan`'s).
fn filtered(
    state: &dyn Session,
    plan: Arc<dyn ExecutionPlan>,
    conditions: &[Expr],
    projected: &SchemaRef,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(condition) = conjunction(conditions.iter().cloned()) else {
        // Every condition holds: only the projection.
        return prefix(plan, projected);
    };
    let input = plan.schema();
    let predicate = state.create_physical_expr(condition, &DFSchema::try_from(input)?)?;
    let plan = Arc::new(
        FilterExecBuilder::new(predicate, plan)
            .with_fetch(limit)
            .build()?,
    );
    prefix(plan, projected)
}

/// The first `projected.fields().len()` columns of `plan`.
fn prefix(plan: Arc<dyn ExecutionPlan>, projected: &SchemaRef) -> Result<Arc<dyn ExecutionPlan>> {
    let input = plan.schema();
    if input.fields().len() == projected.fields().len() {
        return Ok(plan);
    }
    let exprs = projected
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                f.name().clone(),
            )
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

/// The stored column an SQL column is read from.
fn stored_name(sql_column: &str) -> &str {
    if sql_column == START_TIME {
        START_TIME_UNIX_NANO
    } else {
        sql_column
    }
}

/// `plan` (stored columns) as the SQL columns `wanted`: `start_time`
/// computed, the others as they are.
fn to_sql_columns(
    plan: Arc<dyn ExecutionPlan>,
    sql: &SchemaRef,
    wanted: &[usize],
) -> Result<Arc<dyn ExecutionPlan>> {
    let input = plan.schema();
    let same = wanted.len() == input.fields().len()
        && wanted
            .iter()
            .zip(input.fields())
            .all(|(&i, f)| sql.field(i).name() == f.name());
    if same {
        return Ok(plan);
    }
    let exprs = wanted
        .iter()
        .map(|&i| {
            let name = sql.field(i).name();
            let from = stored_name(name);
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(from, input.index_of(from)?));
            let expr: Arc<dyn PhysicalExpr> = if name == START_TIME {
                let micros = Arc::new(PhysicalBinaryExpr::new(
                    column,
                    Operator::Divide,
                    Arc::new(Literal::new(ScalarValue::Int64(Some(1000)))),
                ));
                Arc::new(CastExpr::new(micros, timestamp_type(), None))
            } else {
                column
            };
            Ok((expr, name.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

/// `filters` for the stored columns: each condition that bounds
/// `start_time` by a constant also as the bound it implies on
/// `start_time_unix_nano` (which the files' statistics prune by), and
/// every condition on `start_time` itself left out (the column is not
/// stored; DataFusion applies those conditions above the scan).
fn stored_filters(filters: Vec<Expr>) -> Vec<Expr> {
    let mut out = Vec::with_capacity(filters.len());
    for filter in filters {
        for conjunct in split_conjunction(&filter) {
            if let Some(derived) = nanos_bound(conjunct) {
                out.push(derived);
            }
        }
        if !filter.column_refs().iter().any(|c| c.name == START_TIME) {
            out.push(filter);
        }
    }
    out
}

/// For `start_time <op> t` (either side, `t` a timestamp constant), a
/// condition on `start_time_unix_nano` that every row satisfying it
/// satisfies (`start_time` is the start in whole microseconds).
fn nanos_bound(expr: &Expr) -> Option<Expr> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    let is_start = |e: &Expr| matches!(e, Expr::Column(c) if c.name == START_TIME);
    let (op, value) = if is_start(left) {
        (*op, right.as_ref())
    } else if is_start(right) {
        (op.swap()?, left.as_ref())
    } else {
        return None;
    };
    let micros = match value {
        Expr::Literal(ScalarValue::TimestampMicrosecond(Some(v), _), _) => *v,
        Expr::Literal(ScalarValue::TimestampMillisecond(Some(v), _), _) => v.checked_mul(1000)?,
        Expr::Literal(ScalarValue::TimestampSecond(Some(v), _), _) => v.checked_mul(1_000_000)?,
        _ => return None,
    };
    let ns = micros.checked_mul(1000)?;
    let nanos = col(START_TIME_UNIX_NANO);
    Some(match op {
        Operator::Eq => nanos
            .clone()
            .gt_eq(lit(ns))
            .and(nanos.lt(lit(ns.checked_add(1000)?))),
        Operator::Gt | Operator::GtEq => nanos.gt_eq(lit(ns)),
        Operator::Lt => nanos.lt(lit(ns)),
        Operator::LtEq => nanos.lt(lit(ns.checked_add(1000)?)),
        _ => return None,
    })
}

/// `filters` plus, for every condition that pins `trace_id` to constants
/// (`=`, `IN`), the same condition on `trace_key`, whose row-group and
/// page statistics Parquet holds: so every lookup by trace id, from any API
/// or SQL, skips the row groups and pages that cannot hold the trace (and
/// the [`TraceIndex`] the files). The derived conditions
/// are implied by the originals, which DataFusion still applies. Also
/// returns the keys of the first such condition (every matching row has
/// one of them), for the [`TraceIndex`].
fn with_trace_keys(filters: &[Expr]) -> (Vec<Expr>, Option<Vec<i64>>) {
    let mut out = filters.to_vec();
    let mut first = None;
    for filter in filters {
        for conjunct in split_conjunction(filter) {
            if let Some(ids) = pinned_trace_ids(conjunct) {
                let keys: Vec<i64> = ids.into_iter().map(trace_key).collect();
                // A disjunction of equalities: file pruning understands it
                // where it does not understand `IN`.
                let derived = keys
                    .iter()
                    .map(|k| col(TRACE_KEY).eq(lit(*k)))
                    .reduce(Expr::or);
                out.extend(derived);
                first.get_or_insert(keys);
            }
        }
    }
    (out, first)
}

/// The trace ids `expr` restricts `trace_id` to, if it is `trace_id = id`,
/// `trace_id IN (ids)` or a disjunction of those, with literal ids.
fn pinned_trace_ids(expr: &Expr) -> Option<Vec<&[u8]>> {
    let is_trace_id = |e: &Expr| matches!(e, Expr::Column(c) if c.name == TRACE_ID);
    fn id(e: &Expr) -> Option<&[u8]> {
        match e {
            Expr::Literal(
                ScalarValue::Binary(Some(b))
                | ScalarValue::LargeBinary(Some(b))
                | ScalarValue::BinaryView(Some(b))
                | ScalarValue::FixedSizeBinary(_, Some(b)),
                _,
            ) => Some(b.as_slice()),
            _ => None,
        }
    }
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            if is_trace_id(left) {
                id(right).map(|b| vec![b])
            } else if is_trace_id(right) {
                id(left).map(|b| vec![b])
            } else {
                None
            }
        }
        // `IN` lists short enough are planned as disjunctions.
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut ids = pinned_trace_ids(left)?;
            ids.extend(pinned_trace_ids(right)?);
            Some(ids)
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_trace_id(expr) => list.iter().map(id).collect(),
        _ => None,
    }
}

fn external(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Casts `plan`'s columns (same names and order) to the types of `schema`
/// where they differ, e.g. the buffered rows' `Utf8` to the scan's `Utf8View`.
fn cast_to(plan: Arc<dyn ExecutionPlan>, schema: &SchemaRef) -> Result<Arc<dyn ExecutionPlan>> {
    let input = plan.schema();
    if input.fields().len() != schema.fields().len() {
        return Err(DataFusionError::Internal(format!(
            "spans scan returned {} columns, expected {}",
            input.fields().len(),
            schema.fields().len()
        )));
    }
    if input
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type())
    {
        return Ok(plan);
    }
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = input
        .fields()
        .iter()
        .zip(schema.fields())
        .enumerate()
        .map(|(i, (have, want))| {
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(have.name(), i));
            let expr = if have.data_type() == want.data_type() {
                column
            } else {
                Arc::new(CastExpr::new(column, want.data_type().clone(), None))
            };
            (expr, want.name().clone())
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};
    use datafusion::scalar::ScalarValue;

    use super::*;

    /// A spans table at `url` whose log keeps entries for `retention`
    /// (a Delta interval, `interval 6 hours`).
    async fn table_keeping_its_log_for(url: &Url, retention: &str) {
        use deltalake::kernel::StructType;
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
        use tracelake_schema::spans::{
            PARTITION_COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, spans_schema,
        };
        let columns: StructType = spans_schema().as_ref().try_into_kernel().unwrap();
        deltalake::DeltaTableBuilder::from_url(url.clone())
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(columns.fields().cloned())
            .with_partition_columns(PARTITION_COLUMNS)
            .with_configuration([
                (SCHEMA_VERSION_KEY, Some(SCHEMA_VERSION.to_string())),
                ("delta.logRetentionDuration", Some(retention.to_string())),
            ])
            .with_raise_if_key_not_exists(false)
            .await
            .unwrap();
    }

    /// A commit of one (made-up) file through a handle of its own on the
    /// table at `url`, as another node makes; the table after it.
    async fn commit_elsewhere(url: &Url, file: u32) -> DeltaTable {
        let elsewhere = DeltaTable::try_from_url(url.clone()).await.unwrap();
        let path = format!("date=2024-10-01/hour=5/part-{file}.parquet");
        crate::testing::commit(url, &elsewhere, vec![crate::testing::add(&path, 1)]).await
    }

    /// Runs `change` on the state of the next refresh of `table`, which is
    /// then dropped, publishing nothing.
    async fn next_refresh<T>(table: &SpansTable, change: impl FnOnce(&mut Loaded) -> T) -> T {
        match table.delta.get().await {
            Turn::Refresh(mut refresh) => change(refresh.state()),
            Turn::Fresh(_) => unreachable!("no other read"),
        }
    }

    fn spans_table(url: &Url) -> SpansTable {
        SpansTable::new(
            url.clone(),
            None,
            Arc::new(crate::trace_index::MetadataCache::new(1 << 20)),
        )
        .unwrap()
    }

    async fn version(table: &SpansTable) -> Option<u64> {
        table.latest().await.unwrap().unwrap().version()
    }

    /// A read sees a commit another node made just before it, while reads
    /// between commits ask for the next commit's entry instead of listing
    /// the log; a refresh whose last listing is older than [`PROBE_WITHIN`]
    /// lists the log, as the commit after its version may have left it.
    #[tokio::test]
    async fn a_read_sees_a_commit_made_elsewhere_and_lists_the_log_only_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        table_keeping_its_log_for(&url, "interval 6 hours").await;
        let table = spans_table(&url);
        let listings = || next_refresh(&table, |loaded| loaded.listings);
        assert_eq!(version(&table).await, Some(0));
        for _ in 0..5 {
            assert_eq!(version(&table).await, Some(0));
        }
        assert_eq!(listings().await, 1, "reads with nothing new listed the log");
        commit_elsewhere(&url, 1).await;
        assert_eq!(
            version(&table).await,
            Some(1),
            "a commit made before the read"
        );
        assert_eq!(listings().await, 2);

        // Versions 2 and 3, a checkpoint at 3, and version 2's entry gone
        // from the log, as expired entries leave it.
        commit_elsewhere(&url, 2).await;
        let newest = commit_elsewhere(&url, 3).await;
        deltalake::checkpoints::create_checkpoint(&newest, None)
            .await
            .unwrap();
        std::fs::remove_file(dir.path().join("_delta_log/00000000000000000002.json")).unwrap();
        assert_eq!(
            version(&table).await,
            Some(1),
            "a probe within its minute trusts the missing entry"
        );
        // Last listed longer ago than a probe is trusted, by the wall
        // clock alone, then by both: the log is listed.
        let long_ago = PROBE_WITHIN * 2;
        next_refresh(&table, |loaded| {
            let (instant, _) = loaded.listed.unwrap();
            loaded.listed = Some((instant, SystemTime::now() - long_ago));
        })
        .await;
        assert_eq!(version(&table).await, Some(3));
        assert_eq!(listings().await, 3);
        // Again, last listed long ago by the monotonic clock alone.
        commit_elsewhere(&url, 4).await;
        let newest = commit_elsewhere(&url, 5).await;
        deltalake::checkpoints::create_checkpoint(&newest, None)
            .await
            .unwrap();
        std::fs::remove_file(dir.path().join("_delta_log/00000000000000000004.json")).unwrap();
        assert_eq!(version(&table).await, Some(3));
        if let Some(instant) = Instant::now().checked_sub(long_ago) {
            next_refresh(&table, |loaded| {
                loaded.listed = Some((instant, SystemTime::now()));
            })
            .await;
            assert_eq!(version(&table).await, Some(5));
        }
    }

    /// On a table whose log may lose entries within minutes (a retention
    /// someone set), every refresh lists the log.
    #[tokio::test]
    async fn a_log_kept_for_minutes_is_listed_on_every_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        table_keeping_its_log_for(&url, "interval 5 minutes").await;
        let table = spans_table(&url);
        for _ in 0..4 {
            assert_eq!(version(&table).await, Some(0));
        }
        assert_eq!(next_refresh(&table, |loaded| loaded.listings).await, 4);
    }

    #[test]
    fn live_groups_the_watermark_has_reached_are_left_out() {
        let batch = |n: i32| {
            RecordBatch::try_from_iter([(
                "n",
                Arc::new(arrow::array::Int32Array::from(vec![n])) as arrow::array::ArrayRef,
            )])
            .unwrap()
        };
        let live = || LiveSnapshot {
            writer: Some("tracelake-wal:a".into()),
            groups: vec![
                (5, vec![batch(5)]),
                (9, vec![batch(9)]),
                (u64::MAX, vec![batch(0)]),
            ],
        };
        let kept = |watermark| live().rows_beyond(watermark).len();
        assert_eq!(kept(None), 3, "nothing committed yet");
        assert_eq!(kept(Some(4)), 3);
        assert_eq!(kept(Some(5)), 2, "the group up to 5 is in the table");
        assert_eq!(kept(Some(9)), 1);
        assert_eq!(
            kept(Some(i64::MAX)),
            1,
            "a group beyond any watermark stays"
        );
    }

    fn at(micros: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(micros),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn a_bound_on_start_time_is_one_on_the_stored_nanoseconds() {
        let nanos = || col(START_TIME_UNIX_NANO);
        let cases = [
            (col(START_TIME).gt_eq(at(5)), nanos().gt_eq(lit(5000i64))),
            // start_time > 5 µs: the start is 6 µs or later.
            (col(START_TIME).gt(at(5)), nanos().gt_eq(lit(5000i64))),
            (col(START_TIME).lt(at(5)), nanos().lt(lit(5000i64))),
            (col(START_TIME).lt_eq(at(5)), nanos().lt(lit(6000i64))),
            // The constant on the left.
            (at(5).gt(col(START_TIME)), nanos().lt(lit(5000i64))),
            (
                col(START_TIME).eq(at(5)),
                nanos().gt_eq(lit(5000i64)).and(nanos().lt(lit(6000i64))),
            ),
        ];
        for (condition, bound) in cases {
            assert_eq!(nanos_bound(&condition), Some(bound), "{condition}");
        }
        assert_eq!(nanos_bound(&col(START_TIME).not_eq(at(5))), None);
        assert_eq!(nanos_bound(&col("duration_ns").gt(lit(5i64))), None);
    }

    #[test]
    fn conditions_on_start_time_are_not_passed_to_the_stored_scan() {
        let filters = vec![
            col(START_TIME).gt_eq(at(1)).and(col("name").eq(lit("x"))),
            col("name").eq(lit("y")),
        ];
        let out = stored_filters(filters);
        assert_eq!(
            out,
            vec![
                col(START_TIME_UNIX_NANO).gt_eq(lit(1000i64)),
                col("name").eq(lit("y"))
            ]
        );
    }
}
