//! TraceQL search over the spans table (what Tempo's `/api/search` runs).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use tracelake_protocols::params::{SpanFilter, TimeRange};

use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode as _, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::DataFrame;
use tracelake_protocols::traceql::{Aggregate, Field, Literal, Op, Stage};
use tracelake_schema::layout::Layout;

use super::Query;
use super::eval::{TraceFacts, matches};
use super::metrics::{LabelValue, label_sql, typed};
use crate::analysis::{Span, Tree};
use crate::engine::{QueryEngine, QueryError};
use crate::fetch::{self, COLUMNS, MAX_SPANS, TRACE_MARGIN_NS, TraceId};
use crate::search::{self, Cursor};
use crate::sql::Sql;

/// A TraceQL search.
#[derive(Debug, Clone, Copy)]
pub struct Search<'a> {
    pub query: &'a Query,
    /// Pipeline stages after the spanset expression, in order.
    pub stages: &'a [Stage],
    pub range: TimeRange,
    /// Traces to find at most.
    pub limit: usize,
    /// Matching spans to return per trace at most (Tempo's `spss`).
    pub spans_per_set: usize,
    /// Bounds on the trace's duration, nanoseconds.
    pub min_duration: Option<i64>,
    pub max_duration: Option<i64>,
}

/// The traces found, and how many candidates were looked at.
#[derive(Debug)]
pub struct Found {
    pub traces: Vec<TraceMatch>,
    pub inspected: usize,
}

/// A trace that matched.
#[derive(Debug)]
pub struct TraceMatch {
    pub id: TraceId,
    /// The root span's service and name; `None` when it has not arrived.
    pub root: Option<(String, String)>,
    pub start: i64,
    pub duration: i64,
    /// The first matching spans by start time, up to `spans_per_set`.
    pub spans: Vec<Span>,
    /// How many spans matched in all.
    pub matched: usize,
    /// The `select(...)` fields of each of `spans` that it has.
    pub selected: Vec<Vec<(String, LabelValue)>>,
    /// Per service: spans, errors.
    pub services: Vec<(String, u64, u64)>,
}

/// Finds up to `limit` traces matching the search, newest first: SQL finds
/// candidate traces by the spansets' span-level conditions and computes
/// each comparison per span; the query is then evaluated over each
/// candidate's tree. Pages through candidates (at most 50 pages) until
/// `limit` traces match, all within the request's one deadline.
pub async fn run(engine: &QueryEngine, search: &Search<'_>) -> Result<Found, QueryError> {
    run_paged(engine, search, &mut |_, _| true).await
}

/// [`run`], telling `on_page` after each page of candidates the traces
/// that page matched and how many candidates were looked at so far
/// (streaming search sends them as they come); `on_page` returning false
/// stops the search.
pub async fn run_paged(
    engine: &QueryEngine,
    search: &Search<'_>,
    on_page: &mut (dyn FnMut(&[TraceMatch], usize) -> bool + Send),
) -> Result<Found, QueryError> {
    let Search {
        query,
        stages,
        range,
        limit,
        spans_per_set,
        min_duration,
        max_duration,
    } = *search;
    let spansets = query.spansets();
    let prefilter: Vec<String> = spansets.iter().map(|c| c.sql()).collect();
    let filter = SpanFilter {
        sql_conditions: vec![format!("({})", prefilter.join(" OR "))],
        ..SpanFilter::default()
    };
    let mut comparisons = Vec::new();
    let mut offsets = Vec::new();
    for c in &spansets {
        offsets.push(comparisons.len());
        c.span_comparisons(&mut comparisons);
    }
    // What each candidate span is evaluated to, in the order
    // `load_with_atoms` reads it: the analysis columns, each span-level
    // comparison, then the values the stages need (the aggregated
    // attributes and the selected fields).
    let mut exprs: Vec<String> = COLUMNS.split(',').map(|c| c.trim().to_string()).collect();
    exprs.extend(
        comparisons
            .iter()
            .map(|c| format!("coalesce({}, FALSE)", c.sql())),
    );
    let mut measures = Vec::new();
    let mut selects: Vec<String> = Vec::new();
    for stage in stages {
        match stage {
            Stage::Filter { aggregate, .. } => {
                if let Some(f @ (Field::SpanAttr(_) | Field::ResourceAttr(_) | Field::AnyAttr(_))) =
                    aggregate.field()
                {
                    let (text, _) = label_sql("", f).map_err(|e| QueryError::Invalid(e.0))?;
                    exprs.push(format!("try_cast({text} AS DOUBLE)"));
                    measures.push(f.clone());
                }
            }
            Stage::Select(fields) => {
                for (name, f) in fields {
                    let (text, kind) = match f {
                        Field::Duration => {
                            ("duration_ns".to_string(), "CAST(2 AS TINYINT)".to_string())
                        }
                        _ => label_sql(name, f)
                            .map_err(|e| QueryError::Invalid(e.0.replace("by (", "select(")))?,
                    };
                    exprs.push(format!("CAST({text} AS VARCHAR)"));
                    exprs.push(format!("CAST({kind} AS TINYINT)"));
                    selects.push(name.clone());
                }
            }
        }
    }
    let extras = Extras {
        atoms: comparisons.len(),
        measures: measures.len(),
        selects: selects.len(),
    };
    let page = (limit * 2).max(20);
    let mut out = Vec::new();
    let mut inspected = 0;
    let mut cursor: Option<Cursor> = None;
    // Candidates may fail the whole query: page until `limit` traces match.
    for _ in 0..50 {
        let before = out.len();
        let (found, next) = search::find(engine, &filter, range, page, cursor).await?;
        if found.is_empty() {
            break;
        }
        let ids: Vec<TraceId> = found.iter().map(|m| m.trace_id).collect();
        let batches = evaluated_spans(engine, &ids, range.widened(TRACE_MARGIN_NS), &exprs).await?;
        let mut traces = load_with_atoms(&batches, &extras)?;
        for m in &found {
            crate::executor::checkpoint()?;
            let Some((spans, atoms)) = traces.remove(&m.trace_id) else {
                continue;
            };
            inspected += 1;
            if let Some(result) = evaluate(
                &Evaluation {
                    query,
                    stages,
                    measures: &measures,
                    selects: &selects,
                    offsets: &offsets,
                    spans_per_set,
                    min_duration,
                    max_duration,
                },
                m.trace_id,
                spans,
                &atoms,
            ) {
                out.push(result);
                if out.len() == limit {
                    on_page(&out[before..], inspected);
                    return Ok(Found {
                        traces: out,
                        inspected,
                    });
                }
            }
        }
        if !on_page(&out[before..], inspected) {
            break;
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(Found {
        traces: out,
        inspected,
    })
}

/// The spans of `ids` starting within `range`, each evaluated to `exprs`
/// (SQL over the spans table's columns): the columns those read, as the
/// analyzer rewrites them (a dedicated attribute's lookup reads its
/// column), are read as trace by id reads (the trace index, the pages
/// holding the traces: [`crate::trace::fetch_columns`]), and `exprs` are
/// evaluated over those rows in memory.
async fn evaluated_spans(
    engine: &QueryEngine,
    ids: &[TraceId],
    range: TimeRange,
    exprs: &[String],
) -> Result<Vec<RecordBatch>, QueryError> {
    // Each named by its position: two may print the same.
    let select = |df: DataFrame| -> datafusion::error::Result<DataFrame> {
        let parsed = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| Ok(df.parse_sql_expr(e)?.alias(format!("e{i}"))))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        df.select(parsed)
    };
    let ctx = engine.context();
    engine.spans().ensure_layout().await?;
    let schema = Arc::clone(engine.spans().layout().schema());
    let probe = select(ctx.read_batch(RecordBatch::new_empty(Arc::clone(&schema)))?)?
        .into_optimized_plan()?;
    let columns = scanned_columns(&probe);
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let batches =
        crate::trace::fetch_columns(engine, ids, Some(range), Some(&columns), MAX_SPANS).await?;
    if batches.is_empty() {
        return Ok(batches);
    }
    // In the stored schema's fields, whose metadata names the configured
    // columns (a read that fell back to a query may not carry it).
    let indices = columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let stored = Arc::new(
        schema
            .project(&indices)
            .map_err(|e| QueryError::Internal(e.to_string()))?,
    );
    let batches = batches
        .iter()
        .map(|b| Layout::conform(b, &stored))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let df = crate::engine::plain_strings(select(ctx.read_batches(batches)?)?)?;
    Ok(engine.collect_at_most(df, MAX_SPANS).await?.1)
}

/// The columns the scans of `plan` read, by name.
fn scanned_columns(plan: &LogicalPlan) -> Vec<String> {
    let mut columns = std::collections::BTreeSet::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            columns.extend(
                scan.projected_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone()),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("the visit never fails");
    columns.into_iter().collect()
}

/// How many columns of each kind follow [`COLUMNS`] in a search's rows.
struct Extras {
    atoms: usize,
    measures: usize,
    selects: usize,
}

/// One span's values beyond [`COLUMNS`]: its span-level comparisons, the
/// attributes aggregated by filter stages, the selected fields.
#[derive(Debug, Default, Clone)]
pub struct Row {
    atoms: Vec<bool>,
    measures: Vec<Option<f64>>,
    selected: Vec<Option<LabelValue>>,
}

type WithAtoms = HashMap<TraceId, (Vec<Span>, Vec<Row>)>;

fn load_with_atoms(batches: &[RecordBatch], extras: &Extras) -> Result<WithAtoms, QueryError> {
    let mut out: WithAtoms = HashMap::new();
    let as_type = |batch: &RecordBatch, i: usize, to: &DataType| {
        cast(batch.column(i), to).map_err(|e| QueryError::Internal(format!("search: {e}")))
    };
    for batch in batches {
        let grouped = fetch::group_by_trace(std::slice::from_ref(batch))?;
        let ids = batch.column(0).as_binary::<i32>();
        let first = fetch::COLUMN_COUNT;
        let flags: Vec<_> = (0..extras.atoms)
            .map(|a| batch.column(first + a).as_boolean())
            .collect();
        let first = first + extras.atoms;
        let measures = (0..extras.measures)
            .map(|m| as_type(batch, first + m, &DataType::Float64))
            .collect::<Result<Vec<_>, _>>()?;
        let first = first + extras.measures;
        let selects = (0..extras.selects)
            .map(|i| {
                Ok((
                    as_type(batch, first + 2 * i, &DataType::Utf8)?,
                    as_type(batch, first + 2 * i + 1, &DataType::Int64)?,
                ))
            })
            .collect::<Result<Vec<_>, QueryError>>()?;
        // group_by_trace keeps row order within a trace: walk rows again to
        // attach each row's values to its trace.
        let mut rows_of: HashMap<TraceId, Vec<Row>> = HashMap::new();
        for row in 0..batch.num_rows() {
            let measured = measures
                .iter()
                .map(|m| {
                    let m = m.as_primitive::<arrow::datatypes::Float64Type>();
                    (!m.is_null(row)).then(|| m.value(row))
                })
                .collect();
            let selected = selects
                .iter()
                .map(|(v, t)| {
                    let v = v.as_string::<i32>();
                    let t = t.as_primitive::<arrow::datatypes::Int64Type>();
                    (!v.is_null(row))
                        .then(|| typed(v.value(row), (!t.is_null(row)).then(|| t.value(row))))
                })
                .collect();
            rows_of
                .entry(fetch::trace_id(ids.value(row)))
                .or_default()
                .push(Row {
                    atoms: flags
                        .iter()
                        .map(|f| !f.is_null(row) && f.value(row))
                        .collect(),
                    measures: measured,
                    selected,
                });
        }
        for (id, spans) in grouped {
            let entry = out.entry(id).or_default();
            entry.0.extend(spans);
            entry.1.extend(rows_of.remove(&id).unwrap_or_default());
        }
    }
    Ok(out)
}

/// What evaluating a candidate trace needs of the search.
struct Evaluation<'a> {
    query: &'a Query,
    stages: &'a [Stage],
    /// The attributes filter stages aggregate, in `Row::measures` order.
    measures: &'a [Field],
    /// The selected fields' names, in `Row::selected` order.
    selects: &'a [String],
    offsets: &'a [usize],
    spans_per_set: usize,
    min_duration: Option<i64>,
    max_duration: Option<i64>,
}

/// An aggregate of the matched spans (`None` when no span has the field).
fn aggregate(
    aggregate: &Aggregate,
    hits: &[usize],
    tree: &Tree,
    rows: &[Row],
    measures: &[Field],
) -> Option<f64> {
    let Some(field) = aggregate.field() else {
        return Some(hits.len() as f64);
    };
    let values: Vec<f64> = match field {
        Field::Duration => hits
            .iter()
            .map(|&i| tree.spans[i].duration as f64)
            .collect(),
        f => {
            let m = measures.iter().position(|x| x == f)?;
            hits.iter()
                .filter_map(|&i| rows[tree.spans[i].key].measures[m])
                .collect()
        }
    };
    if values.is_empty() {
        return None;
    }
    Some(match aggregate {
        Aggregate::Count => values.len() as f64,
        Aggregate::Avg(_) => values.iter().sum::<f64>() / values.len() as f64,
        Aggregate::Min(_) => values.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregate::Max(_) => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregate::Sum(_) => values.iter().sum(),
    })
}

fn compares(x: f64, op: Op, value: &Literal) -> bool {
    let v = match value {
        Literal::Int(i) | Literal::Duration(i) => *i as f64,
        Literal::Float(f) => *f,
        _ => return false,
    };
    match op {
        Op::Eq => x == v,
        Op::Ne => x != v,
        Op::Gt => x > v,
        Op::Ge => x >= v,
        Op::Lt => x < v,
        Op::Le => x <= v,
        Op::Match | Op::NotMatch => false,
    }
}

fn evaluate(
    e: &Evaluation<'_>,
    id: TraceId,
    mut spans: Vec<Span>,
    atoms: &[Row],
) -> Option<TraceMatch> {
    let Evaluation {
        query,
        stages,
        measures,
        selects,
        offsets,
        spans_per_set,
        min_duration,
        max_duration,
    } = *e;
    for (i, s) in spans.iter_mut().enumerate() {
        s.key = i;
    }
    let tree = Tree::new(spans);
    let (start, end) = tree.bounds()?;
    let duration = end - start;
    if min_duration.is_some_and(|m| duration < m) || max_duration.is_some_and(|m| duration > m) {
        return None;
    }
    let root = tree.main_root()?;
    let has_root = !tree.orphan[root];
    let facts = TraceFacts {
        duration,
        root_name: if has_root {
            tree.spans[root].name.to_string()
        } else {
            String::new()
        },
        root_service: if has_root {
            tree.spans[root].service.to_string()
        } else {
            String::new()
        },
        id: hex::encode(id),
    };
    let mut leaf = 0;
    let flags: Vec<Vec<bool>> = atoms.iter().map(|r| r.atoms.clone()).collect();
    let matched = matches(query, &tree, &flags, offsets, &mut leaf, &facts);
    let mut hits: Vec<usize> = (0..tree.spans.len()).filter(|&i| matched[i]).collect();
    if hits.is_empty() {
        return None;
    }
    for stage in stages {
        if let Stage::Filter {
            aggregate: a,
            op,
            value,
        } = stage
            && !aggregate(a, &hits, &tree, atoms, measures).is_some_and(|x| compares(x, *op, value))
        {
            return None;
        }
    }
    hits.sort_by_key(|&i| tree.spans[i].start);
    let shown: Vec<usize> = hits.iter().take(spans_per_set).copied().collect();
    let selected = shown
        .iter()
        .map(|&i| {
            let row = &atoms[tree.spans[i].key];
            selects
                .iter()
                .zip(&row.selected)
                .filter_map(|(name, v)| Some((name.clone(), v.clone()?)))
                .collect()
        })
        .collect();
    let spans = shown.iter().map(|&i| tree.spans[i].clone()).collect();
    let services = tree
        .service_counts()
        .into_iter()
        .map(|(name, (spans, errors))| (name.to_string(), spans, errors))
        .collect();
    Some(TraceMatch {
        id,
        root: has_root.then_some((facts.root_service, facts.root_name)),
        start,
        duration,
        spans,
        matched: hits.len(),
        selected,
        services,
    })
}
