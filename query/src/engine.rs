//! The DataFusion session every API queries through: one `spans` table,
//! read-only SQL, a memory limit, a row cap, and the request's deadline
//! (from [`crate::executor`], which runs every query).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use datafusion::common::config::ConfigNonZeroUsize;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt as _;
use url::Url;

use crate::executor::{Executor, ExecutorConfig, Scope, interruptible};
use crate::table::{LiveSpans, SpansTable};

/// Name of the spans table in SQL.
pub const SPANS: &str = "spans";

/// Error of a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is invalid, refers to something unknown, or is not read-only.
    #[error("{0}")]
    Invalid(String),
    #[error("query exceeded its time limit of {0:?}")]
    Timeout(Duration),
    /// The client went away; nobody reads this answer.
    #[error("query cancelled: the client went away")]
    Cancelled,
    /// Every query slot and the queue were taken.
    #[error("too many queries: {0}; retry later")]
    Overloaded(String),
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(String),
    #[error("query result has more than {0} rows; add a LIMIT or aggregate")]
    TooManyRows(usize),
    /// The values of one column in a batch of the rows read passed what one
    /// array holds (32-bit offsets: 2 GiB); SQL is run again in smaller
    /// batches first ([`QueryEngine::collect_at_most`]).
    #[error(
        "the rows read hold more of one column's values than one array can (2 GiB) \
         even a few at a time ({0}); read fewer columns or rows"
    )]
    RowsTooLarge(String),
    /// A node the query depended on (a SQL worker) failed or could not be
    /// reached: the query stopped, with no partial answer.
    #[error("{0}")]
    Unavailable(String),
    #[error("query failed: {0}")]
    Internal(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        if let Some(stopped) = crate::executor::stopped(&e) {
            return stopped;
        }
        if let Some(upgrading) = crate::error::find_cause::<crate::table::Upgrading>(&e) {
            return Self::Unavailable(upgrading.to_string());
        }
        if let Some(status) = crate::distributed::worker_lost(&e) {
            tracing::warn!(error = %e, "a SQL worker failed during a query");
            return Self::Unavailable(format!(
                "a SQL worker failed during the query ({}: {}); the query was stopped, \
                 with no partial answer: retry",
                status.code, status.message
            ));
        }
        if too_large_for_one_array(&e) {
            return Self::RowsTooLarge(e.strip_backtrace());
        }
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => Self::Invalid(e.strip_backtrace()),
            DataFusionError::ResourcesExhausted(m) => Self::ResourcesExhausted(m.clone()),
            // What the query asked of the values: a string that is not a
            // number, a division by zero, an overflow.
            DataFusionError::ArrowError(arrow, _)
                if matches!(
                    arrow.as_ref(),
                    ArrowError::CastError(_)
                        | ArrowError::ParseError(_)
                        | ArrowError::DivideByZero
                        | ArrowError::ArithmeticOverflow(_)
                ) =>
            {
                Self::Invalid(e.strip_backtrace())
            }
            _ => Self::Internal(e.strip_backtrace()),
        }
    }
}

/// Whether `e` is the failure of an array whose 32-bit offsets could not
/// address a batch's values: Parquet's reader decoding a column's values
/// ([`batch_too_large_for_one_array`], also as an Arrow error's text), or
/// Arrow copying rows (`OffsetOverflowError`; "offset overflow: data
/// exceeds the capacity of the offset type" for maps, lists and structs).
pub(crate) fn too_large_for_one_array(e: &DataFusionError) -> bool {
    use datafusion::parquet::errors::ParquetError;
    use tracelake_schema::spans::batch_too_large_for_one_array as overflow;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        let found = match (
            error.downcast_ref::<ArrowError>(),
            error.downcast_ref::<ParquetError>(),
        ) {
            (Some(ArrowError::OffsetOverflowError(_)), _) => true,
            (Some(ArrowError::InvalidArgumentError(m)), _) => m.starts_with("offset overflow"),
            (Some(ArrowError::ParquetError(m)), _) => overflow(m),
            (_, Some(ParquetError::General(m) | ParquetError::ArrowError(m))) => overflow(m),
            _ => false,
        };
        if found {
            return true;
        }
        cause = error.source();
    }
    false
}

/// `d` in the largest unit that divides it (`2h`, `90m`, `45s`, `1500ms`).
fn whole_units(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Limits applied to every query.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Threads, admission and the time limit of a request.
    pub executor: ExecutorConfig,
    /// Memory pool size for query execution.
    pub memory_limit_bytes: usize,
    /// Memory the data files' footers and page indexes that trace lookups
    /// read may keep ([`crate::trace_index::MetadataCache`]).
    pub trace_metadata_bytes: usize,
    /// Most rows a result may have.
    pub max_result_rows: usize,
    /// The SQL workers that users' SQL is planned across (`None`: this
    /// node alone).
    pub distributed: Option<crate::distributed::DistributedConfig>,
}

pub struct QueryEngine {
    ctx: SessionContext,
    /// The same session planning across the SQL workers, for users' SQL
    /// ([`QueryConfig::distributed`]).
    distributed: Option<SessionContext>,
    config: QueryConfig,
    spans: Arc<SpansTable>,
    /// Shared by the engines of every tenant ([`QueryEngine::for_table`]):
    /// one set of query threads, one admission control, one memory pool.
    executor: Arc<Executor>,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    /// The data files' metadata trace lookups keep, one budget for every
    /// tenant's table.
    trace_metadata: Arc<crate::trace_index::MetadataCache>,
    /// The tenant's longest search time range (`None`: any), changeable
    /// while running.
    max_search_window: parking_lot::Mutex<Option<Duration>>,
}

impl QueryEngine {
    pub fn new(
        table_url: Url,
        live: Option<Arc<dyn LiveSpans>>,
        config: QueryConfig,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_bytes, 1.0)
            .with_object_store_registry(Arc::new(crate::scan::TableStores::default()))
            .build_arc()?;
        let executor = Executor::new(config.executor.clone())
            .map_err(|e| QueryError::Internal(format!("cannot start the query threads: {e}")))?;
        let trace_metadata = Arc::new(crate::trace_index::MetadataCache::new(
            config.trace_metadata_bytes,
        ));
        Self::with_shared(
            table_url,
            live,
            config,
            Arc::new(executor),
            runtime,
            trace_metadata,
        )
    }

    /// An engine over another table (another tenant's) sharing this one's
    /// query threads, admission control and memory pool: what one tenant
    /// runs counts against the same limits as every other's, and its
    /// session knows no table but its own `spans`.
    pub fn for_table(
        &self,
        table_url: Url,
        live: Option<Arc<dyn LiveSpans>>,
    ) -> Result<Self, QueryError> {
        Self::with_shared(
            table_url,
            live,
            self.config.clone(),
            Arc::clone(&self.executor),
            Arc::clone(&self.runtime),
            Arc::clone(&self.trace_metadata),
        )
    }

    fn with_shared(
        table_url: Url,
        live: Option<Arc<dyn LiveSpans>>,
        config: QueryConfig,
        executor: Arc<Executor>,
        runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
        trace_metadata: Arc<crate::trace_index::MetadataCache>,
    ) -> Result<Self, QueryError> {
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("tracelake", "public");
        // Parquet schemas DataFusion infers keep `Utf8`; the spans table
        // declares its own types (strings as views: `Layout::scan_schema`).
        session
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
        // Bloom filters are read on local disk where a condition names a
        // column that has them (`scan::parquet_options`): the writer puts
        // them on the dedicated string columns, where an equality on a rare
        // value skips row groups that statistics cannot.
        session.options_mut().execution.parquet.bloom_filter_on_read = true;
        // Partial groupings on string columns go by the strings' views
        // (`crate::string_groups`), after DataFusion's own rules.
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::string_groups::StringGroups))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let spans = Arc::new(SpansTable::new(
            table_url,
            live,
            Arc::clone(&trace_metadata),
        )?);
        ctx.register_table(SPANS, Arc::clone(&spans) as _)?;
        ctx.register_udf(crate::udf::event_names());
        ctx.register_udf(crate::udf::date_trunc());
        ctx.add_analyzer_rule(Arc::new(crate::dedicated::DedicatedAttributes));
        let distributed = match &config.distributed {
            Some(workers) => Some(crate::distributed::distributed_context(&ctx, workers)?),
            None => None,
        };
        Ok(Self {
            ctx,
            distributed,
            config,
            spans,
            executor,
            runtime,
            trace_metadata,
            max_search_window: parking_lot::Mutex::new(None),
        })
    }

    /// Sets the longest time range a trace search may cover (the
    /// tenant's `max_search_window`; `None`: any).
    pub fn set_max_search_window(&self, window: Option<Duration>) {
        *self.max_search_window.lock() = window;
    }

    /// Refuses a search over a longer range than the tenant's
    /// `max_search_window` (an invalid request, as Tempo's
    /// `max_search_duration`: a retry would not help).
    pub fn check_search_window(
        &self,
        range: &tracelake_protocols::params::TimeRange,
    ) -> Result<(), QueryError> {
        let Some(window) = *self.max_search_window.lock() else {
            return Ok(());
        };
        let asked = Duration::from_nanos(range.end.saturating_sub(range.start).max(0) as u64);
        if asked > window {
            return Err(QueryError::Invalid(format!(
                "the search covers {}, more than this tenant's max_search_window of {}: \
                 narrow start and end",
                whole_units(asked),
                whole_units(window)
            )));
        }
        Ok(())
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The metadata cache of the trace lookups, one for every tenant's
    /// engine (for its metrics).
    pub fn trace_metadata(&self) -> &crate::trace_index::MetadataCache {
        &self.trace_metadata
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The executor every request's query work runs on.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The current request's scope (deadline and cancel flag).
    pub fn scope(&self) -> Arc<Scope> {
        Scope::current_or(self.config.executor.timeout)
    }

    /// The `spans` table itself (for reads that need no query plan).
    pub fn spans(&self) -> &SpansTable {
        &self.spans
    }

    /// Runs SQL the service wrote itself (values quoted with
    /// [`crate::sql::quote`]), reading at most `max_rows` rows.
    pub async fn internal_sql(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let df = self.plan_in(&self.ctx, sql).await?;
        Ok(self.collect_at_most(df, max_rows).await?.1)
    }

    /// Plans a user's `sql` (across the SQL workers when there are),
    /// refusing anything but queries: no DDL, DML, COPY or `SET`; external
    /// tables and URL tables are unreachable that way too.
    pub async fn plan_sql(&self, sql: &str) -> Result<DataFrame, QueryError> {
        self.plan_in(self.distributed.as_ref().unwrap_or(&self.ctx), sql)
            .await
    }

    /// The runtime (memory pool, object stores) every tenant's queries
    /// share; the SQL worker runs on it too.
    pub fn runtime(&self) -> &Arc<datafusion::execution::runtime_env::RuntimeEnv> {
        &self.runtime
    }

    async fn plan_in(&self, ctx: &SessionContext, sql: &str) -> Result<DataFrame, QueryError> {
        // The first plan sees the table's configured columns.
        self.spans.ensure_layout().await?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        Ok(plain_strings(ctx.sql_with_options(sql, options).await?)?)
    }

    /// Runs `df` to completion under the time and row limits.
    pub async fn collect(
        &self,
        df: DataFrame,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        self.collect_at_most(df, self.config.max_result_rows).await
    }

    /// Runs `df` under the request's deadline and a row limit of its own
    /// (the APIs' internal queries read more rows than they return). Every
    /// node of the plan is [`interruptible`], so the query stops at its next
    /// batch once the deadline passes or the client goes away, whichever
    /// operator it is in.
    ///
    /// A query whose batches hold more of a column's values than one array
    /// can ([`QueryError::RowsTooLarge`]: spans whose attribute values
    /// average over 256 KiB, in DataFusion's 8,192-row batches) is run
    /// again in batches of half the rows, down to a row a batch, within
    /// the same deadline. Nothing of a failed run reaches the client: the
    /// answer is collected whole before it is sent.
    pub async fn collect_at_most(
        &self,
        mut df: DataFrame,
        max_rows: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let scope = self.scope();
        loop {
            let noted = scope.warning_count();
            match self.collect_once(&scope, &df, max_rows).await {
                Err(QueryError::RowsTooLarge(message)) => {
                    let (mut state, plan) = df.into_parts();
                    let rows = state.config().batch_size();
                    if rows == 1 {
                        return Err(QueryError::RowsTooLarge(message));
                    }
                    tracing::info!(
                        rows = rows / 2,
                        "a query run again in smaller batches: {message}"
                    );
                    self.executor.count_rerun();
                    // What the failed run noted (an ingest node that did
                    // not answer) is noted again, or not, by the next.
                    scope.keep_warnings(noted);
                    let config = state.config_mut();
                    config.options_mut().execution.batch_size =
                        ConfigNonZeroUsize::try_new(rows / 2)?;
                    // The SQL workers' stages take theirs from here.
                    if let Some(workers) = config
                        .options_mut()
                        .extensions
                        .get_mut::<datafusion_distributed::DistributedConfig>()
                    {
                        workers.shuffle_batch_size = rows / 2;
                    }
                    df = DataFrame::new(state, plan);
                }
                answer => return answer,
            }
        }
    }

    /// One run of [`QueryEngine::collect_at_most`].
    async fn collect_once(
        &self,
        scope: &Arc<Scope>,
        df: &DataFrame,
        max_rows: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        // The interruptible nodes stop a running plan; the bound covers the
        // waits between batches (I/O, planning).
        scope
            .bound(async {
                let task_ctx = Arc::new(df.task_ctx());
                let plan = df.create_physical_plan().await?;
                let plan = interruptible(plan, scope)?;
                let mut stream: SendableRecordBatchStream = execute_stream(plan, task_ctx)?;
                let schema = stream.schema();
                let mut batches = Vec::new();
                let mut rows = 0;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows();
                    if rows > max_rows {
                        return Err(QueryError::TooManyRows(max_rows));
                    }
                    batches.push(batch);
                }
                Ok((schema, batches))
            })
            .await
    }

    /// Plans and runs read-only `sql`.
    pub async fn sql(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let df = self.plan_sql(sql).await?;
        self.collect(df).await
    }
}

/// `df` with its `Utf8View` columns as `Utf8`: the scan reads strings as
/// views (`Layout::scan_schema`), but answers keep the types docs/api.md
/// lists, for Flight SQL's clients, the JSON and the APIs alike. Only the
/// answer's rows are cast, after any grouping or filtering on views.
pub(crate) fn plain_strings(df: DataFrame) -> datafusion::error::Result<DataFrame> {
    use arrow::datatypes::DataType;
    use datafusion::logical_expr::{Expr, cast};
    let schema = df.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Utf8View)
    {
        return Ok(df);
    }
    let exprs: Vec<Expr> = schema
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(datafusion::common::Column::from((qualifier, field)));
            if field.data_type() == &DataType::Utf8View {
                cast(column, DataType::Utf8).alias_qualified(qualifier.cloned(), field.name())
            } else {
                column
            }
        })
        .collect();
    df.select(exprs)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn engine(
        timeout: Duration,
        memory_limit_bytes: usize,
    ) -> (tempfile::TempDir, QueryEngine) {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let config = QueryConfig {
            executor: ExecutorConfig {
                timeout,
                threads: 2,
                ..ExecutorConfig::default()
            },
            memory_limit_bytes,
            trace_metadata_bytes: crate::trace_index::DEFAULT_METADATA_BUDGET,
            max_result_rows: 10,
            distributed: None,
        };
        let engine = QueryEngine::new(url, None, config).unwrap();
        (dir, engine)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_stop_at_the_time_limit() {
        let (_dir, engine) = engine(Duration::from_millis(200), 1 << 30);
        // The outer bound turns a broken limit into a failure, not a hang.
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            engine.sql("SELECT count(*) FROM generate_series(1, 1000000000000)"),
        )
        .await
        .expect("the query limit did not stop the query")
        .unwrap_err();
        assert!(matches!(err, QueryError::Timeout(_)), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_stop_at_the_memory_limit() {
        let (_dir, engine) = engine(Duration::from_secs(60), 1 << 20);
        let err = engine
            .sql("SELECT array_agg(value) FROM generate_series(1, 10000000)")
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::ResourcesExhausted(_)), "{err}");
        // Small queries still run under the same limit.
        let (_, batches) = engine.sql("SELECT 1 AS one").await.unwrap();
        assert_eq!(batches[0].num_rows(), 1);
    }

    #[test]
    fn arrays_too_large_are_told_from_other_failures() {
        use datafusion::parquet::errors::ParquetError;
        let arrow = |e: ArrowError| DataFusionError::ArrowError(Box::new(e), None);
        let decoding = "Parquet error: index overflow decoding byte array";
        let too_large = [
            // As DataFusion's Parquet scan returns it, through a
            // repartition and with context.
            DataFusionError::Shared(Arc::new(
                arrow(ArrowError::ParquetError(decoding.into())).context("reading spans"),
            )),
            DataFusionError::ParquetError(Box::new(ParquetError::General(
                "offset of 2147483650 would overflow list array".into(),
            ))),
            arrow(ArrowError::OffsetOverflowError(2_147_483_648)),
            arrow(ArrowError::InvalidArgumentError(
                "offset overflow: data exceeds the capacity of the offset type. \
                 Try splitting into smaller batches or using a larger type"
                    .into(),
            )),
            arrow(ArrowError::ExternalError(Box::new(
                ParquetError::ArrowError(decoding.into()),
            ))),
        ];
        for e in too_large {
            let text = e.to_string();
            assert!(
                matches!(QueryError::from(e), QueryError::RowsTooLarge(_)),
                "{text}"
            );
        }
        // What the query asked of the values, or another reader failure.
        let other = [
            arrow(ArrowError::ArithmeticOverflow("1 + i64::MAX".into())),
            arrow(ArrowError::ParquetError("Parquet error: EOF".into())),
            // A corrupt page header.
            DataFusionError::ParquetError(Box::new(ParquetError::General(
                "integer overflow decoding thrift value".into(),
            ))),
            arrow(ArrowError::InvalidArgumentError(
                "column count mismatch".into(),
            )),
            DataFusionError::Execution("Overflow happened on: 1 * 2".into()),
        ];
        for e in other {
            let text = e.to_string();
            assert!(
                !matches!(QueryError::from(e), QueryError::RowsTooLarge(_)),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn results_over_the_row_cap_are_refused() {
        let (_dir, engine) = engine(Duration::from_secs(60), 1 << 30);
        let err = engine
            .sql("SELECT value FROM generate_series(1, 11)")
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::TooManyRows(10)), "{err}");
        assert!(
            engine
                .sql("SELECT value FROM generate_series(1, 10)")
                .await
                .is_ok()
        );
    }
}
