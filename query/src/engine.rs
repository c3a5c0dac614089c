//! The DataFusion session every API queries through: one `spans` table,
//! read-only SQL, a memory limit and a timeout per query.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt as _;
use url::Url;

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
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(String),
    #[error("query result has more than {0} rows; add a LIMIT or aggregate")]
    TooManyRows(usize),
    #[error("query failed: {0}")]
    Internal(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => Self::Invalid(e.strip_backtrace()),
            DataFusionError::ResourcesExhausted(m) => Self::ResourcesExhausted(m.clone()),
            _ => Self::Internal(e.strip_backtrace()),
        }
    }
}

/// Limits applied to every query.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub timeout: Duration,
    /// Memory pool size for query execution.
    pub memory_limit_bytes: usize,
    /// Most rows a result may have.
    pub max_result_rows: usize,
}

pub struct QueryEngine {
    ctx: SessionContext,
    config: QueryConfig,
    spans: Arc<SpansTable>,
}

impl QueryEngine {
    pub fn new(
        table_url: Url,
        live: Option<Arc<dyn LiveSpans>>,
        config: QueryConfig,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_bytes, 1.0)
            .build_arc()?;
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("tracelake", "public");
        // Keep strings as Utf8 so both sides of the spans union agree.
        session
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
        let ctx = SessionContext::new_with_config_rt(session, runtime);
        let spans = Arc::new(SpansTable::new(table_url, live));
        ctx.register_table(SPANS, Arc::clone(&spans) as _)?;
        ctx.register_udf(crate::udf::event_names());
        Ok(Self { ctx, config, spans })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The `spans` table itself (for reads that need no query plan).
    pub fn spans(&self) -> &SpansTable {
        &self.spans
    }

    /// Runs SQL the service wrote itself (values quoted with
    /// [`crate::params::quote`]), reading at most `max_rows` rows.
    pub async fn internal_sql(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let df = self.plan_sql(sql).await?;
        Ok(self.collect_at_most(df, max_rows).await?.1)
    }

    /// Plans `sql`, refusing anything but queries: no DDL, DML, COPY or
    /// `SET`; external tables and URL tables are unreachable that way too.
    pub async fn plan_sql(&self, sql: &str) -> Result<DataFrame, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        Ok(self.ctx.sql_with_options(sql, options).await?)
    }

    /// Runs `df` to completion under the time and row limits.
    pub async fn collect(
        &self,
        df: DataFrame,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        self.collect_at_most(df, self.config.max_result_rows).await
    }

    /// Runs `df` under the time limit and a row limit of its own (the APIs'
    /// internal queries read more rows than they return).
    pub async fn collect_at_most(
        &self,
        df: DataFrame,
        max_rows: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let run = async {
            let stream: SendableRecordBatchStream = df.execute_stream().await?;
            let schema = stream.schema();
            let mut batches = Vec::new();
            let mut rows = 0;
            let mut stream = stream;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows();
                if rows > max_rows {
                    return Err(QueryError::TooManyRows(max_rows));
                }
                batches.push(batch);
            }
            Ok((schema, batches))
        };
        tokio::time::timeout(self.config.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(self.config.timeout))?
    }

    /// Plans and runs read-only `sql`.
    pub async fn sql(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let df = self.plan_sql(sql).await?;
        self.collect(df).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(timeout: Duration, memory_limit_bytes: usize) -> (tempfile::TempDir, QueryEngine) {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let config = QueryConfig {
            timeout,
            memory_limit_bytes,
            max_result_rows: 10,
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
