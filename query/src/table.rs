//! The `spans` table of every query: the Delta table unioned with the rows
//! still buffered by the collector.
//!
//! Both sides are read at one consistent point: the live source reports the
//! table version its buffered rows are not part of, and the Delta side is
//! read at exactly that version. Each side is cast to the canonical spans
//! schema, so the union (and every API reading it) sees one set of types.

use std::fmt;
use std::sync::Arc;

use arrow::array::{BinaryArray, RecordBatch, Scalar};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use tokio::sync::Mutex;
use tracelake_schema::spans::{TRACE_ID, TRACE_KEY, spans_schema, trace_key};
use url::Url;

use crate::trace_index::TraceIndex;

/// Rows accepted but not yet in the table, and the table version they are
/// not part of (`None`: read the latest version).
#[derive(Debug, Clone, Default)]
pub struct LiveSnapshot {
    pub table_version: Option<i64>,
    pub batches: Vec<RecordBatch>,
}

/// Source of not-yet-committed rows (the collector's buffer).
pub trait LiveSpans: Send + Sync {
    fn snapshot(&self) -> LiveSnapshot;
}

pub struct SpansTable {
    url: Url,
    delta: Mutex<Option<DeltaTable>>,
    live: Option<Arc<dyn LiveSpans>>,
    index: TraceIndex,
}

impl fmt::Debug for SpansTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpansTable")
            .field("url", &self.url)
            .finish()
    }
}

impl SpansTable {
    pub fn new(url: Url, live: Option<Arc<dyn LiveSpans>>) -> Self {
        Self {
            url,
            delta: Mutex::new(None),
            live,
            index: TraceIndex::default(),
        }
    }

    /// The Delta table at `version` (latest when `None`) in `guard`, or
    /// `None` while no table exists.
    async fn load<'a>(
        &self,
        guard: &'a mut Option<DeltaTable>,
        version: Option<i64>,
    ) -> Result<Option<&'a mut DeltaTable>> {
        if guard.is_none() {
            *guard = Some(
                DeltaTable::try_from_url(self.url.clone())
                    .await
                    .map_err(external)?,
            );
        }
        let table = guard.as_mut().expect("set above");
        match version {
            Some(v) if table.version() != Some(v as u64) => {
                table.load_version(v as u64).await.map_err(external)?;
            }
            Some(_) => {}
            None => {
                if let Err(error) = table.update_state().await {
                    // Not a table yet (nothing written): nothing to read.
                    if table.version().is_none() {
                        tracing::debug!(%error, "no spans table yet");
                        return Ok(None);
                    }
                    return Err(external(error));
                }
            }
        }
        Ok(table.version().is_some().then_some(table))
    }

    /// The Delta table's provider at `version` (latest when `None`), or
    /// `None` while no table exists; with `trace_keys`, also the condition
    /// on the partition columns that keeps only the partitions holding one
    /// of them ([`TraceIndex`]).
    async fn delta_provider(
        &self,
        session: &dyn Session,
        version: Option<i64>,
        trace_keys: Option<&[i64]>,
    ) -> Result<Option<(Arc<dyn TableProvider>, Option<Expr>)>> {
        let mut guard = self.delta.lock().await;
        let Some(table) = self.load(&mut guard, version).await? else {
            return Ok(None);
        };
        table.update_datafusion_session(session).map_err(external)?;
        let provider = table.table_provider().await?;
        let partitions = match trace_keys {
            Some(keys) => match self.index.partition_filter(table, keys).await {
                Ok(filter) => Some(filter),
                Err(error) => {
                    // Correct without it, only slower.
                    tracing::warn!(%error, "trace index unavailable; reading every partition");
                    None
                }
            },
            None => None,
        };
        Ok(Some((provider, partitions)))
    }

    /// Every span of `trace_id`, in the spans schema, without a query plan:
    /// the committed rows straight from the files the trace index names
    /// (the table read at the version the buffered rows are not part of, as
    /// every scan is), then the buffered rows.
    pub async fn trace_spans(&self, trace_id: &[u8; 16]) -> Result<Vec<RecordBatch>> {
        let live = self.live.as_ref().map(|l| l.snapshot()).unwrap_or_default();
        let mut out = Vec::new();
        {
            let mut guard = self.delta.lock().await;
            if let Some(table) = self.load(&mut guard, live.table_version).await? {
                let holders = self.index.holders(table, trace_key(trace_id)).await?;
                let store = table.log_store().object_store(None);
                for holder in &holders {
                    out.extend(self.index.read_trace(&store, holder, trace_id).await?);
                }
            }
        }
        let wanted = Scalar::new(BinaryArray::from(vec![trace_id.as_slice()]));
        for batch in &live.batches {
            let ids = batch.column_by_name(TRACE_ID).ok_or_else(|| {
                DataFusionError::Internal("buffered rows without trace_id".into())
            })?;
            let mask = arrow::compute::kernels::cmp::eq(ids, &wanted)?;
            if mask.true_count() > 0 {
                out.push(arrow::compute::filter_record_batch(batch, &mask)?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        spans_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for file and row-group pruning; DataFusion re-applies them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = spans_schema();
        let projected = project_schema(&schema, projection)?;
        let live = self.live.as_ref().map(|l| l.snapshot()).unwrap_or_default();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let (mut filters, trace_keys) = with_trace_keys(filters);
        if let Some((delta, partitions)) = self
            .delta_provider(state, live.table_version, trace_keys.as_deref())
            .await?
        {
            filters.extend(partitions);
            // The Delta provider orders columns by its own schema: map ours.
            let delta_schema = delta.schema();
            let delta_projection = projection
                .map(|p| {
                    p.iter()
                        .map(|&i| delta_schema.index_of(schema.field(i).name()))
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap_or_else(|| {
                    schema
                        .fields()
                        .iter()
                        .map(|f| delta_schema.index_of(f.name()))
                        .collect()
                })?;
            let plan = delta
                .scan(state, Some(&delta_projection), &filters, limit)
                .await?;
            inputs.push(cast_to(plan, &projected)?);
        }
        if !live.batches.is_empty() {
            let batches: Vec<RecordBatch> = live.batches;
            let plan = MemorySourceConfig::try_new_exec(
                &[batches],
                Arc::clone(&schema),
                projection.cloned(),
            )?;
            inputs.push(cast_to(plan, &projected)?);
        }
        if inputs.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

/// `filters` plus, for every condition that pins `trace_id` to constants
/// (`=`, `IN`), the same condition on `trace_key`, whose per-file min/max
/// the Delta log holds and whose row-group and page statistics Parquet
/// holds: so every lookup by trace id, from any API or SQL, skips the files,
/// row groups and pages that cannot hold the trace. The derived conditions
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
/// where they differ, e.g. view types read from Parquet back to `Utf8`.
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
