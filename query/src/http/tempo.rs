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

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prost::Message as _;
use serde_json::{Map, Value, json};
use tracelake_protocols::otlp_json::{self, Style};
use tracelake_schema::model::to_otlp;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::spans::SPAN_ATTRIBUTES;

use super::error::{HttpError, Text, render};
use crate::engine::QueryEngine;
use crate::error::ApiError;
use crate::executor::{Class, Render, on_executor};
use crate::sql::{Sql, quote};
use crate::trace;
use crate::traceql::search::TraceMatch;
use crate::traceql::{self, Cond, Query, metrics};
use tracelake_protocols::duration::parse_nanos;
use tracelake_protocols::params::{Params, TimeRange};
use tracelake_protocols::tempo;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

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
        .route("/api/metrics/query_range", get(metrics_range))
        .route("/api/metrics/query", get(metrics_instant))
        .with_state(Arc::clone(&engine));
    let render: Render = render::<Text>;
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

/// Plain-text errors, as Zipkin and Tempo answer.
type Error = HttpError<Text>;

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
        return Err(Error::not_found(format!(
            "trace {} not found",
            hex::encode(id)
        )));
    }
    to_otlp(&batches).map_err(|e| ApiError::internal(&e).into())
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

async fn search(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let text = p.one("q").map_err(|e| bad(e.0))?;
    let tags = p.one("tags").map_err(|e| bad(e.0))?;
    let pipeline = match (text, tags) {
        (Some(_), Some(_)) => return Err(bad("give q (TraceQL) or tags, not both")),
        (Some(q), None) => traceql::parse_pipeline(&q).map_err(|e| bad(e.to_string()))?,
        (None, Some(t)) => traceql::Pipeline {
            query: traceql::legacy_tags(&t).map_err(|e| bad(e.to_string()))?,
            stages: Vec::new(),
        },
        (None, None) => traceql::Pipeline {
            query: Query::Spanset(Cond::True),
            stages: Vec::new(),
        },
    };
    let duration = |p: &mut Params, name: &'static str| -> Result<Option<i64>, Error> {
        match p.one(name).map_err(|e| bad(e.0))? {
            None => Ok(None),
            Some(v) => parse_nanos(&v)
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
    let found = traceql::search::run(
        &engine,
        &traceql::search::Search {
            query: &pipeline.query,
            stages: &pipeline.stages,
            range,
            limit,
            spans_per_set: spss,
            min_duration: min,
            max_duration: max,
        },
    )
    .await?;
    let traces: Vec<Value> = found.traces.iter().map(search_result).collect();
    Ok(
        axum::Json(json!({ "traces": traces, "metrics": { "inspectedTraces": found.inspected } }))
            .into_response(),
    )
}

/// Tempo's name for a trace whose root span has not arrived.
pub(crate) const NO_ROOT: &str = "<root span not yet received>";

/// A found trace as Tempo's `TraceSearchMetadata`.
fn search_result(t: &TraceMatch) -> Value {
    let shown: Vec<Value> = t
        .spans
        .iter()
        .zip(&t.selected)
        .map(|(s, selected)| {
            let mut o = json!({
                "spanID": s.id_hex(),
                "name": s.name.to_string(),
                "startTimeUnixNano": s.start.to_string(),
                "durationNanos": s.duration.to_string(),
            });
            if !selected.is_empty() {
                o["attributes"] = json_labels(&key_values(selected));
            }
            o
        })
        .collect();
    let service_stats: Map<String, Value> = t
        .services
        .iter()
        .map(|(name, spans, errors)| {
            let mut o = Map::new();
            o.insert("spanCount".into(), json!(spans));
            if *errors > 0 {
                o.insert("errorCount".into(), json!(errors));
            }
            (name.clone(), Value::Object(o))
        })
        .collect();
    let hex_id = hex::encode(t.id);
    let mut o = Map::new();
    o.insert("traceID".into(), json!(hex_id.trim_start_matches('0')));
    match &t.root {
        Some((service, name)) => {
            o.insert("rootServiceName".into(), json!(service));
            o.insert("rootTraceName".into(), json!(name));
        }
        None => {
            o.insert("rootServiceName".into(), json!(NO_ROOT));
        }
    }
    o.insert("startTimeUnixNano".into(), json!(t.start.to_string()));
    let ms = t.duration / 1_000_000;
    if ms > 0 {
        o.insert("durationMs".into(), json!(ms));
    }
    o.insert(
        "spanSets".into(),
        json!([{ "spans": shown, "matched": t.matched }]),
    );
    o.insert("serviceStats".into(), Value::Object(service_stats));
    Value::Object(o)
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
        "span" => keys(&engine, SPAN_ATTRIBUTES, range).await?,
        "intrinsic" => INTRINSICS.iter().map(|s| s.to_string()).collect(),
        "" | "all" => {
            let mut all = keys(&engine, SPAN_ATTRIBUTES, range).await?;
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
        scopes
            .push(json!({ "name": "span", "tags": keys(&engine, SPAN_ATTRIBUTES, range).await? }));
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

// ---- TraceQL metrics ---------------------------------------------------------

/// A Tempo timestamp: Unix seconds (ten digits or fewer), Unix
/// nanoseconds, fractional seconds, or RFC 3339.
fn tempo_time(name: &str, v: &str) -> Result<i64, Error> {
    let bad_time = || {
        bad(format!(
            "{name} must be Unix seconds, Unix nanoseconds or RFC 3339, got {v:?}"
        ))
    };
    if v.contains('.')
        && let Ok(f) = v.parse::<f64>()
    {
        return if f.is_finite() && (0.0..1e11).contains(&f) {
            Ok((f * 1e9).round() as i64)
        } else {
            Err(bad_time())
        };
    }
    if let Ok(n) = v.parse::<i64>() {
        if n < 0 {
            return Err(bad_time());
        }
        return if v.len() <= 10 {
            n.checked_mul(1_000_000_000).ok_or_else(bad_time)
        } else {
            Ok(n)
        };
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(bad_time)
}

/// `start` and `end` (default: the hour, or `since`, before `end`, which
/// defaults to now), in nanoseconds.
fn metrics_bounds(p: &mut Params) -> Result<(i64, i64), Error> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let end = match p.one("end").map_err(|e| bad(e.0))? {
        Some(v) => tempo_time("end", &v)?,
        None => now,
    };
    let since = match p.one("since").map_err(|e| bad(e.0))? {
        Some(v) => parse_nanos(&v).map_err(|e| bad(format!("since: {e}")))?,
        None => HOUR_NS,
    };
    let start = match p.one("start").map_err(|e| bad(e.0))? {
        Some(v) => tempo_time("start", &v)?,
        None => end.min(now).saturating_sub(since),
    };
    metrics::bounds(start, end).map_err(|e| bad(e.0))?;
    Ok((start, end))
}

/// Tempo's default step: about 240 points, rounded down to a whole 1 h,
/// 5 m, 1 m, 15 s, 5 s or 1 s (50 ms multiples under a minute).
pub(crate) fn default_step(start: i64, end: i64) -> i64 {
    let baseline = (end - start) / 240;
    const S: i64 = 1_000_000_000;
    if end - start < 60 * S {
        let g = 50_000_000;
        return if baseline > g { baseline / g * g } else { g };
    }
    for g in [3600 * S, 300 * S, 60 * S, 15 * S, 5 * S, S] {
        if baseline > g {
            return baseline / g * g;
        }
    }
    S
}

/// The TraceQL metrics query of `q` (or `query`, as Grafana sends it).
fn metrics_query(p: &mut Params) -> Result<traceql::Metrics, Error> {
    let q = p.one("q").map_err(|e| bad(e.0))?;
    let query = p.one("query").map_err(|e| bad(e.0))?;
    let text = q
        .or(query)
        .ok_or_else(|| bad("q must hold a TraceQL metrics query, e.g. {} | rate()"))?;
    traceql::parse_metrics(&text).map_err(|e| bad(e.to_string()))
}

fn metrics_options(p: &mut Params) -> Result<metrics::Options, Error> {
    let mut count = |name: &'static str, default: usize| -> Result<usize, Error> {
        match p.one(name).map_err(|e| bad(e.0))? {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(0) => Ok(default),
                Ok(n) if n <= 100_000 => Ok(n),
                _ => Err(bad(format!("{name} must be from 0 to 100000, got {v:?}"))),
            },
        }
    };
    Ok(metrics::Options {
        exemplars: count("exemplars", 100)?,
        max_series: count("maxSeries", 1000)?,
    })
}

async fn run_metrics(
    engine: &QueryEngine,
    query: &traceql::Metrics,
    window: metrics::Window,
    options: metrics::Options,
) -> Result<metrics::Answer, Error> {
    metrics::run(engine, query, window, options)
        .await
        .map_err(|e| match e {
            metrics::RunError::Unsupported(u) => bad(u.0),
            metrics::RunError::Query(q) => q.into(),
        })
}

fn any_value(v: &metrics::LabelValue) -> AnyValue {
    AnyValue {
        value: Some(match v {
            metrics::LabelValue::Str(s) => any_value::Value::StringValue(s.clone()),
            metrics::LabelValue::Int(i) => any_value::Value::IntValue(*i),
            metrics::LabelValue::Float(f) => any_value::Value::DoubleValue(*f),
            metrics::LabelValue::Bool(b) => any_value::Value::BoolValue(*b),
        }),
    }
}

pub(crate) fn key_values(labels: &[(String, metrics::LabelValue)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(any_value(v)),
            key_strindex: 0,
        })
        .collect()
}

fn status_of(answer: &metrics::Answer) -> (i32, String) {
    if answer.dropped_series == 0 {
        return (0, String::new());
    }
    (
        1,
        format!(
            "the query has {} series; the first {} are returned (raise maxSeries or group by less)",
            answer.series_total(),
            answer.series_total() - answer.dropped_series
        ),
    )
}

fn search_metrics(answer: &metrics::Answer) -> tempo::SearchMetrics {
    tempo::SearchMetrics {
        inspected_spans: answer.spans,
        completed_jobs: 1,
        total_jobs: 1,
        ..Default::default()
    }
}

/// The range answer as `tempopb.QueryRangeResponse`.
pub(crate) fn range_response(
    answer: &metrics::Answer,
    window: metrics::Window,
) -> tempo::QueryRangeResponse {
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    let (status, message) = status_of(answer);
    tempo::QueryRangeResponse {
        series: answer
            .series
            .iter()
            .map(|s| tempo::TimeSeries {
                labels: key_values(&s.labels),
                samples: s
                    .samples
                    .iter()
                    .map(|(k, v)| tempo::Sample {
                        value: *v,
                        timestamp_ms: ms(window.timestamp(*k)),
                    })
                    .collect(),
                exemplars: s
                    .exemplars
                    .iter()
                    .map(|e| tempo::Exemplar {
                        labels: key_values(&[
                            (
                                "trace:id".into(),
                                metrics::LabelValue::Str(hex::encode(&e.trace_id)),
                            ),
                            (
                                "span:id".into(),
                                metrics::LabelValue::Str(hex::encode(&e.span_id)),
                            ),
                        ]),
                        value: e.value,
                        timestamp_ms: ms(e.timestamp),
                    })
                    .collect(),
            })
            .collect(),
        metrics: Some(search_metrics(answer)),
        status,
        message,
    }
}

fn json_labels(labels: &[KeyValue]) -> Value {
    Value::Array(
        labels
            .iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => json!({ "stringValue": s }),
                    Some(any_value::Value::IntValue(i)) => json!({ "intValue": i.to_string() }),
                    Some(any_value::Value::DoubleValue(f)) => json!({ "doubleValue": f }),
                    Some(any_value::Value::BoolValue(b)) => json!({ "boolValue": b }),
                    _ => json!({}),
                };
                json!({ "key": kv.key, "value": value })
            })
            .collect(),
    )
}

fn json_metrics(m: &tempo::SearchMetrics) -> Value {
    json!({
        "inspectedSpans": m.inspected_spans.to_string(),
        "completedJobs": m.completed_jobs,
        "totalJobs": m.total_jobs,
    })
}

/// `tempopb.QueryRangeResponse` as Tempo's JSON (protobuf JSON names,
/// 64-bit integers as strings).
fn range_json(r: &tempo::QueryRangeResponse) -> Value {
    let series: Vec<Value> = r
        .series
        .iter()
        .map(|s| {
            json!({
                "labels": json_labels(&s.labels),
                "samples": s.samples.iter().map(|x| json!({
                    "timestampMs": x.timestamp_ms.to_string(),
                    "value": x.value,
                })).collect::<Vec<_>>(),
                "exemplars": s.exemplars.iter().map(|e| json!({
                    "labels": json_labels(&e.labels),
                    "value": e.value,
                    "timestampMs": e.timestamp_ms.to_string(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_answer(series, r.metrics.as_ref(), r.status, &r.message)
}

/// A metrics answer's JSON envelope: the series, the metrics, and
/// `"status": "PARTIAL"` with the message when it is partial.
fn json_answer(
    series: Vec<Value>,
    metrics: Option<&tempo::SearchMetrics>,
    status: i32,
    message: &str,
) -> Value {
    let mut o = Map::new();
    o.insert("series".into(), Value::Array(series));
    if let Some(m) = metrics {
        o.insert("metrics".into(), json_metrics(m));
    }
    if status != 0 {
        o.insert("status".into(), json!("PARTIAL"));
        o.insert("message".into(), json!(message));
    }
    Value::Object(o)
}

/// `/api/metrics/query_range`: `q` (or `query`), `start`, `end`, `since`,
/// `step`, `exemplars`, `maxSeries`.
async fn metrics_range(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let query = metrics_query(&mut p)?;
    let (start, end) = metrics_bounds(&mut p)?;
    let step = match p.one("step").map_err(|e| bad(e.0))? {
        None => default_step(start, end),
        Some(v) => match v.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s < 1e10 => (s * 1e9).round() as i64,
            Ok(_) => return Err(bad(format!("step must be positive, got {v:?}"))),
            Err(_) => parse_nanos(&v).map_err(|e| bad(format!("step: {e}")))?,
        },
    };
    if step <= 0 {
        return Err(bad("step must be positive"));
    }
    let window = metrics::Window::range(start, end, step).map_err(|e| bad(e.0))?;
    let options = metrics_options(&mut p)?;
    let answer = run_metrics(&engine, &query, window, options).await?;
    let response = range_response(&answer, window);
    if wants_protobuf(&headers) {
        return Ok(([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response());
    }
    Ok(axum::Json(range_json(&response)).into_response())
}

/// `/api/metrics/query`: one value per series over `start`..`end`.
async fn metrics_instant(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let query = metrics_query(&mut p)?;
    let (start, end) = metrics_bounds(&mut p)?;
    let options = metrics::Options {
        exemplars: 0,
        ..metrics_options(&mut p)?
    };
    let window = metrics::Window::instant(start, end).map_err(|e| bad(e.0))?;
    let answer = run_metrics(&engine, &query, window, options).await?;
    let (status, message) = status_of(&answer);
    let response = tempo::QueryInstantResponse {
        series: answer
            .series
            .iter()
            .filter_map(|s| {
                Some(tempo::InstantSeries {
                    labels: key_values(&s.labels),
                    value: s.samples.first()?.1,
                })
            })
            .collect(),
        metrics: Some(search_metrics(&answer)),
        status,
        message,
    };
    if wants_protobuf(&headers) {
        return Ok(([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response());
    }
    let series: Vec<Value> = response
        .series
        .iter()
        .map(|s| json!({ "labels": json_labels(&s.labels), "value": s.value }))
        .collect();
    Ok(axum::Json(json_answer(
        series,
        response.metrics.as_ref(),
        response.status,
        &response.message,
    ))
    .into_response())
}

#[cfg(test)]
mod metrics_params {
    use super::*;

    #[test]
    fn tempo_times_and_steps() {
        assert_eq!(
            tempo_time("start", "1700000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            tempo_time("start", "1700000000123456789").unwrap(),
            1_700_000_000_123_456_789
        );
        assert_eq!(
            tempo_time("start", "1700000000.5").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            tempo_time("start", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000_000_000
        );
        assert!(tempo_time("start", "yesterday").is_err());
        assert!(tempo_time("start", "-5").is_err());
        assert!(tempo_time("start", "9000000000").is_ok());
        assert!(
            tempo_time("start", "9999999999").is_err(),
            "seconds that overflow nanoseconds"
        );
        const S: i64 = 1_000_000_000;
        assert_eq!(default_step(0, 3600 * S), 15 * S);
        assert_eq!(default_step(0, 24 * 3600 * S), 300 * S);
        assert_eq!(default_step(0, 30 * S), 100_000_000);
        assert_eq!(default_step(0, 5 * S), 50_000_000);
        assert_eq!(default_step(0, 120 * S), S);
    }
}
