//! Trace by id: fetch a trace's spans and assemble them into a tree.
//!
//! The response lists spans depth-first (roots, then each span's children in
//! start-time order), each with its `depth`, its `children` ids and, for a
//! span whose parent is not in the trace, `orphan: true` (orphans are treated
//! as roots). A flat list keeps deep traces from nesting JSON arbitrarily.
//! The tree, clock-skew shifts, self times, critical path and breakdown come
//! from [`crate::analysis::Tree`]; this module turns them into JSON.

use arrow::array::RecordBatch;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::error::DataFusionError;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use serde_json::{Map, Value, json};
use tracelake_schema::model::SpanRows;
use tracelake_schema::spans::{START_TIME_UNIX_NANO, TRACE_ID};

use crate::analysis::{Breakdown, Span, Totals, Tree};
use crate::engine::{QueryEngine, QueryError, SPANS};
use crate::fetch::{self, Strings};
use tracelake_protocols::params::TimeRange;

mod columns;
mod json;

/// Error parsing a trace id.
#[derive(Debug, thiserror::Error)]
#[error("invalid trace id {0:?}: expected 1 to 32 hex digits")]
pub struct InvalidTraceId(pub String);

/// Parses a hex trace id; shorter ids (64-bit Zipkin/Jaeger ids) are
/// left-padded with zeros to 16 bytes.
pub fn parse_trace_id(hex_id: &str) -> Result<[u8; 16], InvalidTraceId> {
    let invalid = || InvalidTraceId(hex_id.to_string());
    if hex_id.is_empty() || hex_id.len() > 32 || !hex_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let padded = format!("{hex_id:0>32}");
    let mut out = [0u8; 16];
    hex::decode_to_slice(&padded, &mut out).map_err(|_| invalid())?;
    Ok(out)
}

/// All spans of a trace, in the canonical spans schema ([`fetch_many`]).
pub async fn fetch(
    engine: &QueryEngine,
    trace_id: &[u8; 16],
) -> Result<Vec<RecordBatch>, QueryError> {
    fetch_columns(engine, &[*trace_id], None, None, MAX_TRACE_SPANS).await
}

/// All spans of several traces (starting within `range` when given), in
/// the canonical spans schema ([`fetch_columns`]), at most an SQL
/// answer's rows in all.
pub async fn fetch_many(
    engine: &QueryEngine,
    trace_ids: &[[u8; 16]],
    range: Option<TimeRange>,
) -> Result<Vec<RecordBatch>, QueryError> {
    let most = engine.config().max_result_rows;
    fetch_columns(engine, trace_ids, range, None, most).await
}

/// `columns` (all stored columns when `None`) of the spans of
/// `trace_ids` (starting within `range` when given): read directly from
/// the files the trace index names
/// ([`crate::table::SpansTable::traces_spans`]), or, should that fail,
/// through a query. More than `most` spans in all fail with
/// [`QueryError::TooManyRows`], before more are read.
pub async fn fetch_columns(
    engine: &QueryEngine,
    trace_ids: &[[u8; 16]],
    range: Option<TimeRange>,
    columns: Option<&[&str]>,
    most: usize,
) -> Result<Vec<RecordBatch>, QueryError> {
    if trace_ids.is_empty() {
        return Ok(Vec::new());
    }
    let direct = async {
        engine
            .spans()
            .traces_spans(trace_ids, range.map(|r| (r.start, r.end)), columns, most)
            .await
            .map_err(|e| match e {
                DataFusionError::ResourcesExhausted(_) => QueryError::TooManyRows(most),
                // Read a row a batch already: a query would fail the same.
                e if crate::engine::too_large_for_one_array(&e) => {
                    QueryError::RowsTooLarge(e.strip_backtrace())
                }
                e => QueryError::Internal(format!("direct trace read failed: {e}")),
            })
    };
    match engine.scope().bound(direct).await {
        Err(error) if falls_back(&error, cfg!(debug_assertions)) => {
            tracing::warn!(%error, "querying instead");
            fetch_by_query(engine, trace_ids, range, columns, most).await
        }
        result => result,
    }
}

/// Whether a failed direct read is retried as a query: in release builds,
/// unless the request's time ran out, its client left, the traces have
/// more spans than it may return or their rows are too large to read even
/// one a batch. In debug builds (the tests) never: a
/// failed direct read is a bug the tests must see.
fn falls_back(error: &QueryError, debug: bool) -> bool {
    !debug
        && !matches!(
            error,
            QueryError::Timeout(_)
                | QueryError::Cancelled
                | QueryError::TooManyRows(_)
                | QueryError::RowsTooLarge(_)
        )
}

/// What [`fetch_columns`] reads, through a query plan (its fallback).
async fn fetch_by_query(
    engine: &QueryEngine,
    trace_ids: &[[u8; 16]],
    range: Option<TimeRange>,
    columns: Option<&[&str]>,
    most: usize,
) -> Result<Vec<RecordBatch>, QueryError> {
    // Taken before the table is: its layout is this one or a later one
    // (layouts only grow), which has every column this one names.
    let layout = engine.spans().layout();
    let ids = trace_ids
        .iter()
        .map(|id| lit(ScalarValue::Binary(Some(id.to_vec()))))
        .collect();
    let mut df = engine
        .context()
        .table(SPANS)
        .await?
        .filter(col(TRACE_ID).in_list(ids, false))?;
    if let Some(r) = range {
        df = df.filter(
            col(START_TIME_UNIX_NANO)
                .gt_eq(lit(r.start))
                .and(col(START_TIME_UNIX_NANO).lt(lit(r.end))),
        )?;
    }
    // The stored columns, as the direct read returns them.
    let df = df.select_columns(&columns.map_or_else(|| stored_columns(&layout), <[_]>::to_vec))?;
    let df = crate::engine::plain_strings(df)?;
    // A trace may be larger than an SQL result may be.
    let (_, batches) = engine.collect_at_most(df, most).await?;
    Ok(batches)
}

/// The stored columns' names (SQL's `spans` adds `start_time`).
fn stored_columns(layout: &tracelake_schema::layout::Layout) -> Vec<&str> {
    layout
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect()
}

/// Most spans a trace-by-id answer holds.
pub const MAX_TRACE_SPANS: usize = 1_000_000;

/// A trace's rows with its tree and breakdown, ready to be written out.
struct Assembly<'a> {
    views: Vec<SpanRows<'a>>,
    /// (batch, row) of each span of the tree, by its key.
    rows: Vec<(usize, usize)>,
    tree: Tree,
    breakdown: Breakdown,
}

impl<'a> Assembly<'a> {
    /// The tree of `batches`' rows, or `None` when there are none.
    fn new(batches: &'a [RecordBatch]) -> Result<Option<Self>, QueryError> {
        let views: Vec<SpanRows<'_>> = batches
            .iter()
            .map(SpanRows::try_new)
            .collect::<Result<_, _>>()
            .map_err(internal)?;
        let mut rows = Vec::new();
        let mut spans = Vec::new();
        let mut strings = Strings::default();
        for (b, view) in views.iter().enumerate() {
            for row in 0..view.len() {
                spans.push(Span {
                    key: rows.len(),
                    span_id: fetch::span_id(view.span_id(row)),
                    parent_span_id: view.parent_span_id(row).map(fetch::span_id),
                    service: strings.get(view.service_name(row)),
                    name: strings.get(view.name(row)),
                    kind: strings.get(view.kind(row)),
                    start: view.start_time_unix_nano(row),
                    duration: view.duration_ns(row),
                    error: view.status_code(row) == "ERROR",
                });
                rows.push((b, row));
            }
        }
        if spans.is_empty() {
            return Ok(None);
        }
        let tree = Tree::new(spans);
        let breakdown = tree.breakdown();
        Ok(Some(Self {
            views,
            rows,
            tree,
            breakdown,
        }))
    }

    /// The trace's first (skew-adjusted) start.
    fn start(&self) -> i64 {
        (0..self.tree.spans.len())
            .map(|i| self.tree.start(i))
            .min()
            .unwrap_or(0)
    }

    /// Everything of the answer but its spans.
    fn header(&self, trace_id: &[u8; 16]) -> Map<String, Value> {
        let tree = &self.tree;
        let hex_id = |i: usize| tree.spans[i].id_hex();
        let start = self.start();
        let end = (0..tree.spans.len())
            .map(|i| tree.end(i))
            .max()
            .unwrap_or(start);
        let warnings: Vec<String> = tree
            .shifts
            .iter()
            .map(|s| {
                format!(
                    "clock skew: span {} ({}) shifted by {} ns to fit its parent {} ({})",
                    hex_id(s.span),
                    tree.spans[s.span].service,
                    s.delta,
                    hex_id(s.parent),
                    tree.spans[s.parent].service
                )
            })
            .chain(
                (0..tree.spans.len())
                    .filter(|&i| tree.orphan[i])
                    .map(|i| format!("span {} has no parent in the trace (orphan)", hex_id(i))),
            )
            .collect();
        let Value::Object(header) = json!({
            "traceId": hex::encode(trace_id),
            "spanCount": tree.order.len(),
            "startTimeUnixNano": start.to_string(),
            "durationNs": end - start,
            "rootSpanIds": tree.roots.iter().map(|&r| hex_id(r)).collect::<Vec<_>>(),
            "mainRootSpanId": tree.main_root().map(hex_id),
            "warnings": warnings,
            "clockSkewAdjustments": tree.shifts.iter().map(|s| json!({
                "spanId": hex_id(s.span),
                "parentSpanId": hex_id(s.parent),
                "shiftNs": s.delta,
            })).collect::<Vec<_>>(),
            "criticalPath": critical_path_json(tree),
            "breakdown": breakdown_json(&self.breakdown),
        }) else {
            unreachable!("an object")
        };
        header
    }
}

fn internal(e: tracelake_schema::model::Error) -> QueryError {
    QueryError::Internal(e.to_string())
}

/// The trace as JSON bytes, or `None` when it has no spans.
pub fn assemble(
    trace_id: &[u8; 16],
    batches: &[RecordBatch],
) -> Result<Option<Vec<u8>>, QueryError> {
    let Some(assembly) = Assembly::new(batches)? else {
        return Ok(None);
    };
    let header = assembly.header(trace_id);
    let document = json::Document {
        header: &header,
        assembly: &assembly,
    };
    serde_json::to_vec(&document)
        .map(Some)
        .map_err(|e| QueryError::Internal(e.to_string()))
}

/// The trace as JSON without its spans (the header of [`assemble`]), or
/// `None` when it has no spans.
pub fn assemble_header(
    trace_id: &[u8; 16],
    batches: &[RecordBatch],
) -> Result<Option<Value>, QueryError> {
    Ok(Assembly::new(batches)?.map(|a| Value::Object(a.header(trace_id))))
}

/// The trace in the web UI's columnar encoding ([`columns`]), as JSON
/// bytes, or `None` when it has no spans.
pub fn assemble_columns(
    trace_id: &[u8; 16],
    batches: &[RecordBatch],
) -> Result<Option<Vec<u8>>, QueryError> {
    match Assembly::new(batches)? {
        Some(assembly) => columns::encode(&assembly, trace_id).map(Some),
        None => Ok(None),
    }
}

fn critical_path_json(tree: &Tree) -> Value {
    let Some(root) = tree.main_root() else {
        return json!([]);
    };
    Value::Array(
        tree.critical_path(root)
            .iter()
            .map(|s| {
                json!({
                    "spanId": tree.spans[s.span].id_hex(),
                    "startTimeUnixNano": s.start.to_string(),
                    "endTimeUnixNano": s.end.to_string(),
                })
            })
            .collect(),
    )
}

/// Per-service and per-operation totals of a trace.
pub fn breakdown_json(b: &Breakdown) -> Value {
    let totals = |t: &Totals| {
        json!({
            "totalNs": t.total_ns,
            "selfTimeNs": t.self_ns,
            "criticalPathNs": t.critical_ns,
            "spanCount": t.spans,
            "errorCount": t.errors,
        })
    };
    let with = |mut v: Value, fields: &[(&str, &str)]| {
        let obj = v.as_object_mut().expect("totals are an object");
        for (k, val) in fields {
            obj.insert((*k).into(), json!(val));
        }
        v
    };
    json!({
        "services": b.services.iter().map(|(s, t)| with(totals(t), &[("service", s)])).collect::<Vec<_>>(),
        "operations": b.operations.iter().map(|((s, o), t)| with(totals(t), &[("service", s), ("operation", o)])).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::AsArray;

    use super::*;

    /// Span ids (hex) of `batches`, sorted.
    fn span_ids(batches: &[RecordBatch]) -> Vec<String> {
        let mut ids: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let ids = b.column_by_name("span_id").unwrap().as_binary::<i32>();
                (0..b.num_rows()).map(move |r| hex::encode(ids.value(r)))
            })
            .collect();
        ids.sort();
        ids
    }

    /// The release-only fallback: the query finds what the direct read
    /// finds, with the same columns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fallback_query_reads_what_the_direct_read_reads() {
        let f = crate::testing::fixture();
        let id = parse_trace_id(crate::testing::TRACE).unwrap();
        let direct = f
            .engine
            .spans()
            .traces_spans(&[id], None, None, 10)
            .await
            .unwrap();
        let queried = fetch_by_query(&f.engine, &[id], None, None, 10)
            .await
            .unwrap();
        assert_eq!(span_ids(&direct), span_ids(&queried));
        assert_eq!(span_ids(&queried).len(), 3);
        assert_eq!(direct[0].schema(), queried[0].schema());
        let none = fetch_by_query(&f.engine, &[[9; 16]], None, None, 10)
            .await
            .unwrap();
        assert!(span_ids(&none).is_empty());
        // Some columns, within a range or not.
        let columns = ["span_id", "start_time_unix_nano", "service_name"];
        for (range, spans) in [((0, i64::MAX), 3), ((0, 1), 0)] {
            let time = TimeRange {
                start: range.0,
                end: range.1,
            };
            let direct = f
                .engine
                .spans()
                .traces_spans(&[id, [9; 16]], Some(range), Some(&columns), 10)
                .await
                .unwrap();
            let queried = fetch_by_query(&f.engine, &[id, [9; 16]], Some(time), Some(&columns), 10)
                .await
                .unwrap();
            assert_eq!(span_ids(&direct), span_ids(&queried));
            assert_eq!(span_ids(&direct).len(), spans);
            for b in direct.iter().chain(&queried) {
                let names: Vec<&str> = b
                    .schema_ref()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                assert_eq!(names, columns);
            }
        }
    }

    #[test]
    fn only_release_builds_fall_back_and_never_past_the_deadline() {
        let failed = QueryError::Internal("bad page".into());
        assert!(falls_back(&failed, false));
        assert!(!falls_back(&failed, true));
        let late = QueryError::Timeout(Duration::from_secs(1));
        assert!(!falls_back(&late, false));
        assert!(!falls_back(&QueryError::Cancelled, false));
        // Rows too large for a read of one a batch are as large for a query.
        let large = QueryError::RowsTooLarge("index overflow decoding byte array".into());
        assert!(!falls_back(&large, false));
    }

    #[test]
    fn trace_ids_parse_and_pad() {
        let id = parse_trace_id("5B8EFFF798038103D269B633813FC60C").unwrap();
        assert_eq!(hex::encode(id), "5b8efff798038103d269b633813fc60c");
        let short = parse_trace_id("d269b633813fc60c").unwrap();
        assert_eq!(hex::encode(short), "0000000000000000d269b633813fc60c");
        for bad in ["", "xyz", "5B8EFFF798038103D269B633813FC60C00", "12 4"] {
            assert!(parse_trace_id(bad).is_err(), "{bad}");
        }
    }
}
