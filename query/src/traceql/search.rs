//! TraceQL search over the spans table (what Tempo's `/api/search` runs).

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use tracelake_protocols::params::{SpanFilter, TimeRange};

use super::Query;
use super::eval::{TraceFacts, matches};
use crate::analysis::{Span, Tree};
use crate::engine::{QueryEngine, QueryError};
use crate::fetch::{self, COLUMNS, MAX_SPANS, TRACE_MARGIN_NS, TraceId};
use crate::search::{self, Cursor};
use crate::sql::Sql;
use crate::sql::binary;

/// A TraceQL search.
#[derive(Debug, Clone, Copy)]
pub struct Search<'a> {
    pub query: &'a Query,
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
    let atom_sql: String = comparisons
        .iter()
        .enumerate()
        .map(|(i, c)| format!(", coalesce({}, FALSE) AS a{i}", c.sql()))
        .collect();
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
        let ids: Vec<String> = found.iter().map(|m| binary(&m.trace_id)).collect();
        let sql = format!(
            "SELECT {COLUMNS}{atom_sql} FROM spans WHERE {} AND trace_id IN ({})",
            range.widened(TRACE_MARGIN_NS).sql(),
            ids.join(", ")
        );
        let batches = engine.internal_sql(&sql, MAX_SPANS).await?;
        let mut traces = load_with_atoms(&batches, comparisons.len())?;
        for m in &found {
            crate::executor::checkpoint()?;
            let Some((spans, atoms)) = traces.remove(&m.trace_id) else {
                continue;
            };
            inspected += 1;
            if let Some(result) = evaluate(
                query,
                &offsets,
                m.trace_id,
                spans,
                &atoms,
                spans_per_set,
                min_duration,
                max_duration,
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

type WithAtoms = HashMap<TraceId, (Vec<Span>, Vec<Vec<bool>>)>;

fn load_with_atoms(batches: &[RecordBatch], atoms: usize) -> Result<WithAtoms, QueryError> {
    let mut out: WithAtoms = HashMap::new();
    for batch in batches {
        let grouped = fetch::group_by_trace(std::slice::from_ref(batch))?;
        let ids = batch.column(0).as_binary::<i32>();
        let flags: Vec<_> = (0..atoms)
            .map(|a| batch.column(fetch::COLUMN_COUNT + a).as_boolean())
            .collect();
        // group_by_trace keeps row order within a trace: walk rows again to
        // attach each row's atoms to its trace.
        let mut rows_of: HashMap<TraceId, Vec<Vec<bool>>> = HashMap::new();
        for row in 0..batch.num_rows() {
            rows_of
                .entry(fetch::trace_id(ids.value(row)))
                .or_default()
                .push(
                    flags
                        .iter()
                        .map(|f| !f.is_null(row) && f.value(row))
                        .collect(),
                );
        }
        for (id, spans) in grouped {
            let entry = out.entry(id).or_default();
            entry.0.extend(spans);
            entry.1.extend(rows_of.remove(&id).unwrap_or_default());
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn evaluate(
    query: &Query,
    offsets: &[usize],
    id: TraceId,
    mut spans: Vec<Span>,
    atoms: &[Vec<bool>],
    spans_per_set: usize,
    min_duration: Option<i64>,
    max_duration: Option<i64>,
) -> Option<TraceMatch> {
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
    let matched = matches(query, &tree, atoms, offsets, &mut leaf, &facts);
    let mut hits: Vec<usize> = (0..tree.spans.len()).filter(|&i| matched[i]).collect();
    if hits.is_empty() {
        return None;
    }
    hits.sort_by_key(|&i| tree.spans[i].start);
    let spans = hits
        .iter()
        .take(spans_per_set)
        .map(|&i| tree.spans[i].clone())
        .collect();
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
        services,
    })
}
