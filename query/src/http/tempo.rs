//! Tempo's HTTP API under `/tempo` on the query port, for Grafana's Tempo
//! data source: `/api/echo` (its health check), `/ready`,
//! `/api/status/buildinfo`, trace by id (`/api/traces/{id}` and
//! `/api/v2/traces/{id}`, protobuf for `Accept: application/protobuf` as
//! Grafana asks, else Tempo's JSON), `/api/search` with TraceQL ([`traceql`])
//! or legacy `tags`, and tag discovery (`/api/search/tags`,
//! `/api/v2/search/tags`, `/api/search/tag/{tag}/values`,
//! `/api/v2/search/tag/{tag}/values`).
//!
//! `tempopb.Trace` is OTLP's `TracesData` on the wire (field 1, the
//! resource spans), so the stored spans encode directly;
//! `tempopb.TraceByIDResponse` wraps it in field 1.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prost::Message as _;
use serde_json::{Map, Value, json};
use tracelake_schema::model::to_otlp;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::otlp_json::{self, Style};

use crate::analysis::{Span, Tree};
use crate::api::TextError as Error;
use crate::engine::{QueryEngine, QueryError};
use crate::executor::{Class, Render, on_executor};
use crate::fetch::{self, COLUMNS, MAX_SPANS, TRACE_MARGIN_NS, TraceId};
use crate::params::{Params, SpanFilter, TimeRange, binary, parse_duration, quote};
use crate::search::{self, Cursor};
use crate::trace;
use crate::traceql::{self, Cmp, Cond, Field, Literal, Op, Query};

/// The Tempo version reported to Grafana (it gates features on it).
pub const TEMPO_VERSION: &str = "2.9.0";

const PROTOBUF: &str = "application/protobuf";
const HOUR_NS: i64 = 3_600_000_000_000;

/// `tempopb.TraceByIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceByIdResponse {
    /// `tempopb.Trace`: wire-identical to OTLP `TracesData`.
    #[prost(message, optional, tag = "1")]
    pub trace: Option<ExportTraceServiceRequest>,
    /// `PartialStatus`: 0 complete, 1 partial.
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

/// The `/api/...` routes (mounted under `/tempo`).
pub fn router(engine: Arc<QueryEngine>) -> Router {
    let interactive = Router::new()
        .route("/api/traces/{trace_id}", get(trace_v1))
        .route("/api/v2/traces/{trace_id}", get(trace_v2))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .with_state(Arc::clone(&engine));
    let heavy = Router::new()
        .route("/api/search", get(search))
        .route("/api/search/tag/{tag}/values", get(tag_values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tag_values_v2))
        .with_state(Arc::clone(&engine));
    let render: Render = |e| Error::from(e).into_response();
    Router::new()
        .route("/api/echo", get(|| async { "echo" }))
        .route("/ready", get(|| async { "ready" }))
        .route("/api/status/buildinfo", get(buildinfo))
        .merge(on_executor(
            interactive,
            &engine,
            Class::Interactive,
            render,
        ))
        .merge(on_executor(heavy, &engine, Class::Heavy, render))
}

fn bad(message: impl Into<String>) -> Error {
    Error::bad_request(message)
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": TEMPO_VERSION,
        "revision": concat!("tracelake-", env!("CARGO_PKG_VERSION")),
        "branch": "main",
        "buildUser": "tracelake",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

/// `start`/`end` in Unix seconds; `None` when both are absent or zero.
fn seconds_range(p: &mut Params) -> Result<Option<TimeRange>, Error> {
    let mut read = |name: &'static str| -> Result<i64, Error> {
        match p.one(name).map_err(|e| bad(e.0))? {
            None => Ok(0),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|s| *s >= 0)
                .ok_or_else(|| bad(format!("{name} must be Unix seconds, got {v:?}"))),
        }
    };
    let (start, end) = (read("start")?, read("end")?);
    if start == 0 && end == 0 {
        return Ok(None);
    }
    if end <= start {
        return Err(bad("end must be after start"));
    }
    Ok(Some(TimeRange {
        start: start * 1_000_000_000,
        end: (end + 1) * 1_000_000_000,
    }))
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(PROTOBUF))
}

async fn load(
    engine: &QueryEngine,
    trace_id: &str,
    query: Option<String>,
) -> Result<ExportTraceServiceRequest, Error> {
    let id = trace::parse_trace_id(trace_id).map_err(|e| bad(e.to_string()))?;
    let mut p = Params::from_query(query);
    // Grafana may send a range; a trace is looked for everywhere anyway,
    // so a narrow or skewed range never hides it.
    seconds_range(&mut p)?;
    let batches = trace::fetch(engine, &id).await?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(Error(
            StatusCode::NOT_FOUND,
            format!("trace {} not found", hex::encode(id)),
        ));
    }
    to_otlp(&batches).map_err(|e| Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn trace_v1(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let trace = load(&engine, &trace_id, q).await?;
    if wants_protobuf(&headers) {
        return Ok(([(header::CONTENT_TYPE, PROTOBUF)], trace.encode_to_vec()).into_response());
    }
    let data = otlp_json::traces_data_in(&trace, Style::Tempo);
    Ok(axum::Json(json!({ "batches": data["resourceSpans"] })).into_response())
}

async fn trace_v2(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let trace = load(&engine, &trace_id, q).await?;
    if wants_protobuf(&headers) {
        let body = TraceByIdResponse {
            trace: Some(trace),
            status: 0,
            message: String::new(),
        };
        return Ok(([(header::CONTENT_TYPE, PROTOBUF)], body.encode_to_vec()).into_response());
    }
    Ok(
        axum::Json(json!({ "trace": otlp_json::traces_data_in(&trace, Style::Tempo) }))
            .into_response(),
    )
}

// ---- search --------------------------------------------------------------

/// Legacy `tags` (logfmt `k=v k2="v 2"`): case-insensitive substring
/// matches on one span; `name` and `status` are the intrinsics.
fn legacy_tags(text: &str) -> Result<Query, Error> {
    let mut cond = Cond::True;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| bad(format!("tags: {rest:?} is not key=value")))?;
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| bad("tags: unterminated quoted value"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(' ').unwrap_or((after, ""))
        };
        let key = key.trim();
        let cmp = match key {
            "name" => Cmp {
                field: Field::Name,
                op: Op::Match,
                value: Literal::Str(format!("(?i).*{}.*", regex::escape(value))),
            },
            "status" | "status.code" => Cmp {
                field: Field::Status,
                op: Op::Eq,
                value: Literal::Keyword(
                    value
                        .trim_start_matches("STATUS_CODE_")
                        .to_ascii_lowercase(),
                ),
            },
            _ => Cmp {
                field: Field::AnyAttr(key.to_string()),
                op: Op::Match,
                value: Literal::Str(format!("(?i).*{}.*", regex::escape(value))),
            },
        };
        cond = match cond {
            Cond::True => Cond::Cmp(cmp),
            c => Cond::And(Box::new(c), Box::new(Cond::Cmp(cmp))),
        };
        rest = tail.trim();
    }
    Ok(Query::Spanset(cond))
}

/// Evaluates a spanset condition for one span; `atoms` are the span-level
/// comparisons' results in [`Cond::span_comparisons`] order, consumed as
/// they are met (no short-circuit, so the order holds).
fn eval(cond: &Cond, atoms: &[bool], next: &mut usize, trace: &TraceFacts) -> bool {
    match cond {
        Cond::True => true,
        Cond::And(a, b) => {
            let x = eval(a, atoms, next, trace);
            let y = eval(b, atoms, next, trace);
            x && y
        }
        Cond::Or(a, b) => {
            let x = eval(a, atoms, next, trace);
            let y = eval(b, atoms, next, trace);
            x || y
        }
        Cond::Cmp(c) if c.field.is_trace_level() => c.eval_trace(
            trace.duration,
            &trace.root_name,
            &trace.root_service,
            &trace.id,
        ),
        Cond::Cmp(_) => {
            let v = atoms.get(*next).copied().unwrap_or(false);
            *next += 1;
            v
        }
    }
}

struct TraceFacts {
    duration: i64,
    root_name: String,
    root_service: String,
    id: String,
}

/// Spans (tree indices) matched by `query`; `leaf` counts spansets left to
/// right, `offsets` gives each spanset's first atom column.
fn matches(
    query: &Query,
    tree: &Tree,
    atoms: &[Vec<bool>],
    offsets: &[usize],
    leaf: &mut usize,
    facts: &TraceFacts,
) -> Vec<bool> {
    let n = tree.spans.len();
    match query {
        Query::Spanset(cond) => {
            let first = offsets[*leaf];
            *leaf += 1;
            (0..n)
                .map(|i| {
                    let mut next = 0;
                    let row = &atoms[tree.spans[i].key];
                    eval(cond, &row[first..], &mut next, facts)
                })
                .collect()
        }
        Query::And(a, b) | Query::Or(a, b) => {
            let x = matches(a, tree, atoms, offsets, leaf, facts);
            let y = matches(b, tree, atoms, offsets, leaf, facts);
            let both = x.iter().any(|&v| v) && y.iter().any(|&v| v);
            if matches!(query, Query::And(..)) && !both {
                return vec![false; n];
            }
            x.iter().zip(&y).map(|(a, b)| *a || *b).collect()
        }
        Query::Child(a, b) => {
            let x = matches(a, tree, atoms, offsets, leaf, facts);
            let y = matches(b, tree, atoms, offsets, leaf, facts);
            (0..n)
                .map(|i| y[i] && tree.parent[i].is_some_and(|p| x[p]))
                .collect()
        }
        Query::Descendant(a, b) => {
            let x = matches(a, tree, atoms, offsets, leaf, facts);
            let y = matches(b, tree, atoms, offsets, leaf, facts);
            (0..n)
                .map(|i| {
                    if !y[i] {
                        return false;
                    }
                    let mut p = tree.parent[i];
                    let mut steps = 0;
                    while let Some(q) = p {
                        if x[q] {
                            return true;
                        }
                        steps += 1;
                        if steps > n {
                            break;
                        }
                        p = tree.parent[q];
                    }
                    false
                })
                .collect()
        }
    }
}

const NO_ROOT: &str = "<root span not yet received>";

#[allow(clippy::too_many_arguments)]
async fn run_search(
    engine: &QueryEngine,
    query: &Query,
    range: TimeRange,
    limit: usize,
    spss: usize,
    min_duration: Option<i64>,
    max_duration: Option<i64>,
) -> Result<(Vec<Value>, usize), QueryError> {
    let spansets = query.spansets();
    let prefilter: Vec<String> = spansets.iter().map(|c| c.prefilter_sql()).collect();
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
                spss,
                min_duration,
                max_duration,
            ) {
                out.push(result);
                if out.len() == limit {
                    return Ok((out, inspected));
                }
            }
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok((out, inspected))
}

type WithAtoms = HashMap<TraceId, (Vec<Span>, Vec<Vec<bool>>)>;

fn load_with_atoms(batches: &[RecordBatch], atoms: usize) -> Result<WithAtoms, QueryError> {
    let mut out: WithAtoms = HashMap::new();
    for batch in batches {
        let spans = batch
            .project(&(0..9).collect::<Vec<_>>())
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let grouped = fetch::group_by_trace(std::slice::from_ref(&spans))?;
        let ids = batch.column(0).as_binary::<i32>();
        let flags: Vec<_> = (0..atoms)
            .map(|a| batch.column(9 + a).as_boolean())
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
    spss: usize,
    min_duration: Option<i64>,
    max_duration: Option<i64>,
) -> Option<Value> {
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
    let shown: Vec<Value> = hits
        .iter()
        .take(spss)
        .map(|&i| {
            let s = &tree.spans[i];
            json!({
                "spanID": s.id_hex(),
                "name": s.name.to_string(),
                "startTimeUnixNano": s.start.to_string(),
                "durationNanos": s.duration.to_string(),
            })
        })
        .collect();
    let stats = tree.service_counts();
    let service_stats: Map<String, Value> = stats
        .into_iter()
        .map(|(name, (spans, errors))| {
            let mut o = Map::new();
            o.insert("spanCount".into(), json!(spans));
            if errors > 0 {
                o.insert("errorCount".into(), json!(errors));
            }
            (name.to_string(), Value::Object(o))
        })
        .collect();
    let hex_id = hex::encode(id);
    let mut o = Map::new();
    o.insert("traceID".into(), json!(hex_id.trim_start_matches('0')));
    o.insert(
        "rootServiceName".into(),
        json!(if has_root {
            facts.root_service.as_str()
        } else {
            NO_ROOT
        }),
    );
    if has_root {
        o.insert("rootTraceName".into(), json!(facts.root_name));
    }
    o.insert("startTimeUnixNano".into(), json!(start.to_string()));
    let ms = duration / 1_000_000;
    if ms > 0 {
        o.insert("durationMs".into(), json!(ms));
    }
    o.insert(
        "spanSets".into(),
        json!([{ "spans": shown, "matched": hits.len() }]),
    );
    o.insert("serviceStats".into(), Value::Object(service_stats));
    Some(Value::Object(o))
}

async fn search(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let text = p.one("q").map_err(|e| bad(e.0))?;
    let tags = p.one("tags").map_err(|e| bad(e.0))?;
    let query = match (text, tags) {
        (Some(_), Some(_)) => return Err(bad("give q (TraceQL) or tags, not both")),
        (Some(q), None) => traceql::parse(&q).map_err(|e| bad(e.to_string()))?,
        (None, Some(t)) => legacy_tags(&t)?,
        (None, None) => Query::Spanset(Cond::True),
    };
    let duration = |p: &mut Params, name: &'static str| -> Result<Option<i64>, Error> {
        match p.one(name).map_err(|e| bad(e.0))? {
            None => Ok(None),
            Some(v) => parse_duration(&v)
                .map(Some)
                .map_err(|e| bad(format!("{name}: {e}"))),
        }
    };
    let min = duration(&mut p, "minDuration")?;
    let max = duration(&mut p, "maxDuration")?;
    if let (Some(a), Some(b)) = (min, max)
        && b <= a
    {
        return Err(bad("maxDuration must be greater than minDuration"));
    }
    let count = |p: &mut Params, name: &'static str, default: usize| -> Result<usize, Error> {
        match p.one(name).map_err(|e| bad(e.0))? {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| bad(format!("{name} must be from 1 to 10000, got {v:?}"))),
        }
    };
    let limit = count(&mut p, "limit", 20)?;
    let spss = count(&mut p, "spss", 3)?;
    let range = match seconds_range(&mut p)? {
        Some(r) => r,
        None => {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            TimeRange {
                start: now - HOUR_NS,
                end: now + 1,
            }
        }
    };
    let (traces, inspected) = run_search(&engine, &query, range, limit, spss, min, max).await?;
    Ok(
        axum::Json(json!({ "traces": traces, "metrics": { "inspectedTraces": inspected } }))
            .into_response(),
    )
}

// ---- tags ------------------------------------------------------------------

/// Intrinsics listed by `/api/v2/search/tags`.
pub const INTRINSICS: &[&str] = &[
    "duration",
    "event:name",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "name",
    "rootName",
    "rootServiceName",
    "span:duration",
    "span:kind",
    "span:name",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

fn tag_range(p: &mut Params) -> Result<TimeRange, Error> {
    Ok(match seconds_range(p)? {
        Some(r) => r,
        None => {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            TimeRange {
                start: now - 24 * HOUR_NS,
                end: now + 1,
            }
        }
    })
}

async fn keys(engine: &QueryEngine, column: &str, range: TimeRange) -> Result<Vec<String>, Error> {
    let sql = format!(
        "SELECT DISTINCT k FROM (SELECT unnest(map_keys({column})) AS k FROM spans WHERE {}) ORDER BY k LIMIT 10000",
        range.sql()
    );
    let batches = engine.internal_sql(&sql, 10_000).await?;
    Ok(strings(&batches))
}

fn strings(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column(0).as_string::<i32>();
        out.extend(
            (0..b.num_rows())
                .filter(|&r| !col.is_null(r))
                .map(|r| col.value(r).to_string()),
        );
    }
    out
}

async fn tags_v1(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let scope = p.one("scope").map_err(|e| bad(e.0))?.unwrap_or_default();
    let range = tag_range(&mut p)?;
    let mut names = match scope.as_str() {
        "resource" => keys(&engine, "resource_attributes", range).await?,
        "span" => keys(&engine, "span_attributes", range).await?,
        "intrinsic" => INTRINSICS.iter().map(|s| s.to_string()).collect(),
        "" | "all" => {
            let mut all = keys(&engine, "span_attributes", range).await?;
            all.extend(keys(&engine, "resource_attributes", range).await?);
            all
        }
        _ => Vec::new(),
    };
    names.sort();
    names.dedup();
    Ok(axum::Json(json!({ "tagNames": names })).into_response())
}

async fn tags_v2(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let scope = p.one("scope").map_err(|e| bad(e.0))?.unwrap_or_default();
    let range = tag_range(&mut p)?;
    let mut scopes = Vec::new();
    if matches!(scope.as_str(), "" | "all" | "resource") {
        scopes.push(json!({ "name": "resource", "tags": keys(&engine, "resource_attributes", range).await? }));
    }
    if matches!(scope.as_str(), "" | "all" | "span") {
        scopes.push(
            json!({ "name": "span", "tags": keys(&engine, "span_attributes", range).await? }),
        );
    }
    if matches!(scope.as_str(), "" | "all" | "intrinsic") {
        scopes.push(json!({ "name": "intrinsic", "tags": INTRINSICS }));
    }
    Ok(axum::Json(json!({ "scopes": scopes })).into_response())
}

/// A tag path parameter, decoded once more (Grafana encodes it twice).
fn tag_name(raw: &str) -> String {
    if raw.contains('%') {
        url::form_urlencoded::parse(format!("t={raw}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| raw.to_string())
    } else {
        raw.to_string()
    }
}

/// Distinct (value, type code) of an attribute expression.
async fn attribute_values(
    engine: &QueryEngine,
    value: &str,
    type_code: &str,
    range: TimeRange,
) -> Result<Vec<(String, Option<i8>)>, Error> {
    let sql = format!(
        "SELECT DISTINCT {value} AS v, {type_code} AS t FROM spans WHERE {} AND {value} IS NOT NULL ORDER BY v LIMIT 10000",
        range.sql()
    );
    let batches = engine.internal_sql(&sql, 10_000).await?;
    let mut out = Vec::new();
    for b in &batches {
        let v = b.column(0).as_string::<i32>();
        let t = b.column(1).as_primitive::<arrow::datatypes::Int8Type>();
        for r in 0..b.num_rows() {
            out.push((v.value(r).to_string(), (!t.is_null(r)).then(|| t.value(r))));
        }
    }
    Ok(out)
}

/// Values of a scoped tag (`resource.x`, `span.x`, `.x`, or an intrinsic).
async fn scoped_values(
    engine: &QueryEngine,
    tag: &str,
    range: TimeRange,
) -> Result<Vec<(String, &'static str)>, Error> {
    let keyword = |values: &[&str]| values.iter().map(|v| (v.to_string(), "keyword")).collect();
    let column_values = |column: &'static str| async move {
        let sql = format!(
            "SELECT DISTINCT {column} AS v FROM spans WHERE {} AND {column} IS NOT NULL ORDER BY v LIMIT 10000",
            range.sql()
        );
        let batches = engine.internal_sql(&sql, 10_000).await?;
        Ok::<_, Error>(
            strings(&batches)
                .into_iter()
                .map(|v| (v, "string"))
                .collect(),
        )
    };
    let attribute = |scope: &'static str, key: &str| {
        let (value, types) = match scope {
            "span" => (
                format!("span_attributes[{}]", quote(key)),
                format!("span_attribute_types[{}]", quote(key)),
            ),
            "resource" => (
                format!("resource_attributes[{}]", quote(key)),
                format!("resource_attribute_types[{}]", quote(key)),
            ),
            _ => (
                format!(
                    "coalesce(span_attributes[{k}], resource_attributes[{k}])",
                    k = quote(key)
                ),
                format!(
                    "coalesce(span_attribute_types[{k}], resource_attribute_types[{k}])",
                    k = quote(key)
                ),
            ),
        };
        (value, types)
    };
    let (value, types) = match tag {
        "status" | "span:status" => return Ok(keyword(&["error", "ok", "unset"])),
        "kind" | "span:kind" => {
            return Ok(keyword(&[
                "client",
                "consumer",
                "internal",
                "producer",
                "server",
                "unspecified",
            ]));
        }
        "name" | "span:name" => return column_values("name").await,
        "rootServiceName"
        | "trace:rootService"
        | "resource.service.name"
        | ".service.name"
        | "service.name" => {
            return column_values("service_name").await;
        }
        "statusMessage" | "span:statusMessage" => return column_values("status_message").await,
        _ => {
            if let Some(k) = tag.strip_prefix("span.") {
                attribute("span", k)
            } else if let Some(k) = tag.strip_prefix("resource.") {
                attribute("resource", k)
            } else {
                attribute("any", tag.strip_prefix('.').unwrap_or(tag))
            }
        }
    };
    Ok(attribute_values(engine, &value, &types, range)
        .await?
        .into_iter()
        .map(|(v, t)| {
            let kind = match t {
                Some(1) => "bool",
                Some(2) => "int",
                Some(3) => "float",
                _ => "string",
            };
            (v, kind)
        })
        .collect())
}

async fn tag_values_v1(
    State(engine): State<Arc<QueryEngine>>,
    Path(tag): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let range = tag_range(&mut p)?;
    let tag = tag_name(&tag);
    let values: Vec<String> = scoped_values(&engine, &tag, range)
        .await?
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    Ok(axum::Json(json!({ "tagValues": values })).into_response())
}

async fn tag_values_v2(
    State(engine): State<Arc<QueryEngine>>,
    Path(tag): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    // `q` narrows the values in Tempo; an invalid one must not fail the
    // request, and values are listed unfiltered here.
    let _ = p.one("q");
    let range = tag_range(&mut p)?;
    let tag = tag_name(&tag);
    let values: Vec<Value> = scoped_values(&engine, &tag, range)
        .await?
        .into_iter()
        .map(|(v, t)| json!({ "type": t, "value": v }))
        .collect();
    Ok(axum::Json(json!({ "tagValues": values })).into_response())
}
