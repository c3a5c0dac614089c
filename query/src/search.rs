//! Services, operations and trace search.
//!
//! Search runs in two steps: the spans meeting every condition (one span
//! must meet all of them, as in Jaeger and TraceQL's `{ a && b }`) give the
//! matching traces, newest first by their earliest matching span, one page at
//! a time; then all spans of that page's traces (within an hour around the
//! range) give each trace's summary. Paging is by cursor, so traces arriving
//! meanwhile neither repeat nor skip a result.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use serde::Serialize;

use crate::analysis::Tree;
use crate::engine::{QueryEngine, QueryError};
use crate::fetch::{self, TRACE_MARGIN_NS, TraceId};
use crate::sql::{Sql, binary, quote};
use tracelake_protocols::params::{ParamError, SpanFilter, TimeRange, format_ns};

/// How far back the compatibility APIs look for services and operations
/// when the request gives no time range (their viewers fill drop-downs).
pub const DISCOVERY_LOOKBACK_NS: i64 = 7 * 86_400_000_000_000;

/// Services with spans in `range`, with their span counts, by name.
pub async fn services(
    engine: &QueryEngine,
    range: TimeRange,
) -> Result<Vec<(String, i64)>, QueryError> {
    let sql = format!(
        "SELECT service_name, count(*) FROM spans WHERE {} GROUP BY service_name ORDER BY service_name",
        range.sql()
    );
    let batches = engine.internal_sql(&sql, 1_000_000).await?;
    let mut out = Vec::new();
    for b in &batches {
        let names = b.column(0).as_string::<i32>();
        let counts = b.column(1).as_primitive::<Int64Type>();
        for row in 0..b.num_rows() {
            if !names.is_null(row) {
                out.push((names.value(row).to_string(), counts.value(row)));
            }
        }
    }
    Ok(out)
}

/// Fails with a 400-worthy error when `service` has no spans in `range`.
pub async fn require_service(
    engine: &QueryEngine,
    service: &str,
    range: TimeRange,
) -> Result<(), SearchError> {
    let sql = format!(
        "SELECT 1 FROM spans WHERE {} AND service_name = {} LIMIT 1",
        range.sql(),
        quote(service)
    );
    let batches = engine.internal_sql(&sql, 1).await?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(SearchError::Param(ParamError(format!(
            "unknown service {service:?}: it has no spans between {} and {}",
            format_ns(range.start),
            format_ns(range.end)
        ))));
    }
    Ok(())
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub name: String,
    pub span_kind: String,
    pub span_count: i64,
}

/// Operations of `service` in `range` with their span kinds.
pub async fn operations(
    engine: &QueryEngine,
    service: &str,
    range: TimeRange,
) -> Result<Vec<Operation>, QueryError> {
    let sql = format!(
        "SELECT name, kind, count(*) FROM spans WHERE {} AND service_name = {} \
         GROUP BY name, kind ORDER BY name, kind",
        range.sql(),
        quote(service)
    );
    let batches = engine.internal_sql(&sql, 1_000_000).await?;
    let mut out = Vec::new();
    for b in &batches {
        let names = b.column(0).as_string::<i32>();
        let kinds = b.column(1).as_string::<i32>();
        let counts = b.column(2).as_primitive::<Int64Type>();
        for row in 0..b.num_rows() {
            out.push(Operation {
                name: names.value(row).to_string(),
                span_kind: if kinds.is_null(row) {
                    "UNSPECIFIED".into()
                } else {
                    kinds.value(row).to_string()
                },
                span_count: counts.value(row),
            });
        }
    }
    Ok(out)
}

/// Error of a search: a bad parameter or a failed query.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// Where the next page starts: after (earliest match, trace id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub first_match: i64,
    pub trace_id: TraceId,
}

impl Cursor {
    pub fn parse(text: &str) -> Result<Self, ParamError> {
        let bad = || ParamError(format!("cursor {text:?} is not one this API returned"));
        let (time, id) = text.split_once('-').ok_or_else(bad)?;
        let mut trace_id = [0u8; 16];
        hex::decode_to_slice(id, &mut trace_id).map_err(|_| bad())?;
        Ok(Self {
            first_match: time.parse().map_err(|_| bad())?,
            trace_id,
        })
    }

    fn render(&self) -> String {
        format!("{}-{}", self.first_match, hex::encode(self.trace_id))
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCount {
    pub name: String,
    pub span_count: u64,
    pub error_count: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    pub trace_id: String,
    pub root_service_name: String,
    pub root_name: String,
    /// True when no span of the trace lacks a parent: the root fields then
    /// describe the earliest span.
    pub root_missing: bool,
    pub start_time_unix_nano: String,
    pub duration_ns: i64,
    pub span_count: usize,
    pub error_count: usize,
    /// Spans that met the search's conditions.
    pub matched_span_count: i64,
    pub services: Vec<ServiceCount>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    pub traces: Vec<TraceSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A trace found by [`find`].
#[derive(Debug, Clone, Copy)]
pub struct Match {
    pub trace_id: TraceId,
    /// Start of its earliest matching span (the sort key).
    pub first_match: i64,
    /// Spans that met the conditions.
    pub matched: i64,
}

/// The traces with a span meeting `filter` in `range`, newest first, one
/// page of at most `limit`, and the cursor of the next page if any.
pub async fn find(
    engine: &QueryEngine,
    filter: &SpanFilter,
    range: TimeRange,
    limit: usize,
    cursor: Option<Cursor>,
) -> Result<(Vec<Match>, Option<Cursor>), QueryError> {
    engine.check_search_window(&range)?;
    let having = cursor.map_or_else(String::new, |c| {
        format!(
            "HAVING min(start_time_unix_nano) < {0} OR (min(start_time_unix_nano) = {0} AND trace_id > {1})",
            c.first_match,
            binary(&c.trace_id)
        )
    });
    let sql = format!(
        "SELECT trace_id, min(start_time_unix_nano) AS first_match, count(*) AS matched \
         FROM spans WHERE {} AND {} GROUP BY trace_id {having} \
         ORDER BY first_match DESC, trace_id ASC LIMIT {}",
        range.sql(),
        filter.sql(),
        limit + 1
    );
    let batches = engine.internal_sql(&sql, limit + 1).await?;
    let mut matches = page_rows(&batches);
    let next = if matches.len() > limit {
        matches.truncate(limit);
        matches.last().map(|m| Cursor {
            first_match: m.first_match,
            trace_id: m.trace_id,
        })
    } else {
        None
    };
    Ok((matches, next))
}

/// One page of traces with a span meeting `filter` in `range`, summarised.
pub async fn search(
    engine: &QueryEngine,
    filter: &SpanFilter,
    range: TimeRange,
    limit: usize,
    cursor: Option<Cursor>,
) -> Result<SearchPage, SearchError> {
    let (matches, next) = find(engine, filter, range, limit, cursor).await?;
    // A match is a span of the service in the range: the service is
    // known. Only an empty page asks whether it is unknown.
    if matches.is_empty()
        && let Some(service) = &filter.service
    {
        require_service(engine, service, range).await?;
    }
    let ids: Vec<TraceId> = matches.iter().map(|m| m.trace_id).collect();
    let mut found: BTreeMap<TraceId, Vec<_>> =
        fetch::traces(engine, &ids, range.widened(TRACE_MARGIN_NS))
            .await?
            .into_iter()
            .collect();
    let traces = matches
        .into_iter()
        .filter_map(|m| {
            let spans = found.remove(&m.trace_id)?;
            Some(summarize(m.trace_id, Tree::new(spans), m.matched))
        })
        .collect();
    Ok(SearchPage {
        traces,
        next_cursor: next.map(|c| c.render()),
    })
}

fn page_rows(batches: &[RecordBatch]) -> Vec<Match> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column(0).as_binary::<i32>();
        let first = b.column(1).as_primitive::<Int64Type>();
        let matched = b.column(2).as_primitive::<Int64Type>();
        for row in 0..b.num_rows() {
            out.push(Match {
                trace_id: fetch::trace_id(ids.value(row)),
                first_match: first.value(row),
                matched: matched.value(row),
            });
        }
    }
    out
}

fn summarize(id: TraceId, tree: Tree, matched: i64) -> TraceSummary {
    let root = tree.main_root().expect("a found trace has spans");
    let (start, end) = tree.bounds().expect("a found trace has spans");
    let services = tree.service_counts();
    TraceSummary {
        trace_id: hex::encode(id),
        root_service_name: tree.spans[root].service.to_string(),
        root_name: tree.spans[root].name.to_string(),
        root_missing: tree.orphan[root],
        start_time_unix_nano: start.to_string(),
        duration_ns: end - start,
        span_count: tree.spans.len(),
        error_count: tree.spans.iter().filter(|s| s.error).count(),
        matched_span_count: matched,
        services: services
            .into_iter()
            .map(|(name, (span_count, error_count))| ServiceCount {
                name: name.to_string(),
                span_count,
                error_count,
            })
            .collect(),
    }
}
