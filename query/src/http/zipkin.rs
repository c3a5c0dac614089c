//! Zipkin v2 query API (`/api/v2/...` on the Zipkin port, and under
//! `/zipkin` on the query port) for Zipkin Lens and Grafana's Zipkin data
//! source.
//!
//! Zipkin's rules: service, remote service and span names match
//! case-insensitively; durations are microseconds, `endTs` and `lookback`
//! milliseconds (default lookback one day); `/spans` answers span *names*;
//! trace ids are 16 hex digits when the high half is zero; a missing trace is
//! a 404 with a text body. Spans are converted by
//! [`tracelake_protocols::zipkin::to_json`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tracelake_protocols::otlp::trace_id_hex;
use tracelake_protocols::zipkin;
use tracelake_schema::model::SpanRows;

use super::error::{HttpError, Text, render};
use crate::analytics;
use crate::engine::QueryEngine;
use crate::error::ApiError;
use crate::executor::{Class, Render, on_executor};
use crate::fetch::{TRACE_MARGIN_NS, TraceId};
use crate::search;
use crate::sql::{Sql, quote};
use crate::trace;
use tracelake_protocols::params::{Params, SpanFilter, TimeRange};

const DAY_MS: i64 = 86_400_000;
const MS: i64 = 1_000_000;

/// Tag keys offered by `/api/v2/autocompleteKeys`.
pub const AUTOCOMPLETE_KEYS: &[&str] = &[
    "http.route",
    "http.request.method",
    "http.response.status_code",
    "rpc.service",
    "rpc.method",
    "db.system",
    "error.type",
];

/// Plain-text errors, as Zipkin and Tempo answer.
type Error = HttpError<Text>;

fn bad(message: impl Into<String>) -> Error {
    Error::bad_request(message)
}

/// The `/api/v2` query routes (mount under `/zipkin` on the query port).
pub fn router(engine: Arc<QueryEngine>) -> Router {
    let interactive = Router::new()
        .route("/api/v2/services", get(services))
        .route("/api/v2/spans", get(span_names))
        .route("/api/v2/remoteServices", get(remote_services))
        .route("/api/v2/trace/{trace_id}", get(trace_by_id))
        .route("/api/v2/autocompleteKeys", get(autocomplete_keys))
        .with_state(Arc::clone(&engine));
    let heavy = Router::new()
        .route("/api/v2/traces", get(traces))
        .route("/api/v2/traceMany", get(trace_many))
        .route("/api/v2/dependencies", get(dependencies))
        .route("/api/v2/autocompleteValues", get(autocomplete_values))
        .with_state(Arc::clone(&engine));
    let render: Render = render::<Text>;
    on_executor(interactive, &engine, Class::Interactive, render).merge(on_executor(
        heavy,
        &engine,
        Class::Heavy,
        render,
    ))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `[endTs - lookback, endTs]` in ms, each > 0 (Zipkin's rule).
fn range(p: &mut Params, default_lookback_ms: i64) -> Result<TimeRange, Error> {
    let positive = |p: &mut Params, name: &'static str, default: i64| -> Result<i64, Error> {
        match p.one(name).map_err(|e| bad(e.0))? {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(format!(
                    "{name} must be a positive number of milliseconds, got {v:?}"
                ))),
            },
        }
    };
    let end = positive(p, "endTs", now_ms())?;
    let lookback = positive(p, "lookback", default_lookback_ms)?;
    Ok(TimeRange {
        start: end.saturating_sub(lookback).saturating_mul(MS),
        end: end.saturating_mul(MS).saturating_add(MS),
    })
}

fn required(p: &mut Params, name: &'static str) -> Result<String, Error> {
    p.one(name)
        .map_err(|e| bad(e.0))?
        .ok_or_else(|| bad(format!("{name} is required")))
}

fn json_list(values: impl IntoIterator<Item = String>) -> Response {
    let values: Vec<String> = values.into_iter().collect();
    axum::Json(values).into_response()
}

/// Distinct text values of `expr` over spans meeting `condition`, sorted.
async fn distinct(
    engine: &QueryEngine,
    expr: &str,
    condition: &str,
    range: TimeRange,
) -> Result<Vec<String>, Error> {
    let sql = format!(
        "SELECT DISTINCT {expr} AS v FROM spans WHERE {} AND {condition} AND {expr} IS NOT NULL ORDER BY v LIMIT 10000",
        range.sql()
    );
    let batches = engine.internal_sql(&sql, 10_000).await?;
    let mut out = Vec::new();
    for b in &batches {
        let col = b.column(0).as_string::<i32>();
        out.extend(
            (0..b.num_rows())
                .filter(|&r| !col.is_null(r))
                .map(|r| col.value(r).to_string()),
        );
    }
    Ok(out)
}

fn service_is(name: &str) -> String {
    format!("lower(service_name) = {}", quote(&name.to_lowercase()))
}

async fn services(State(engine): State<Arc<QueryEngine>>) -> Result<Response, Error> {
    let range = TimeRange {
        start: now_ms() * MS - search::DISCOVERY_LOOKBACK_NS,
        end: (now_ms() + DAY_MS) * MS,
    };
    let names = search::services(&engine, range).await?;
    Ok(json_list(names.into_iter().map(|(name, _)| name)))
}

async fn span_names(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let service = required(&mut p, "serviceName")?;
    let range = range(&mut p, 7 * DAY_MS)?;
    Ok(json_list(
        distinct(&engine, "name", &service_is(&service), range).await?,
    ))
}

async fn remote_services(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let service = required(&mut p, "serviceName")?;
    let range = range(&mut p, 7 * DAY_MS)?;
    Ok(json_list(
        distinct(&engine, "peer_service", &service_is(&service), range).await?,
    ))
}

/// `annotationQuery`: terms joined by ` and `; `key=value` matches a tag
/// exactly, a bare word a tag key or an annotation (event) name.
fn annotation_conditions(query: &str) -> Vec<String> {
    query
        .split(" and ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|term| match term.split_once('=') {
            // The `error` tag is stored as the status (see
            // `tracelake_protocols::zipkin`): match it there too.
            Some((k, v)) if k.trim() == "error" => format!(
                "(span_attributes['error'] = {v} OR (status_code = 'ERROR' AND status_message = {v}))",
                v = quote(v.trim())
            ),
            Some((k, v)) => format!(
                "coalesce(span_attributes[{k}], resource_attributes[{k}]) = {v}",
                k = quote(k.trim()),
                v = quote(v.trim())
            ),
            None if term == "error" => {
                "(span_attributes['error'] IS NOT NULL OR status_code = 'ERROR')".to_string()
            }
            None => format!(
                "(span_attributes[{w}] IS NOT NULL OR array_has(event_names(events), {w}))",
                w = quote(term)
            ),
        })
        .collect()
}

fn micros(p: &mut Params, name: &'static str) -> Result<Option<i64>, Error> {
    match p.one(name).map_err(|e| bad(e.0))? {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(bad(format!(
                "{name} must be a positive number of microseconds, got {v:?}"
            ))),
        },
    }
}

async fn traces(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let mut filter = SpanFilter::default();
    if let Some(s) = p.one("serviceName").map_err(|e| bad(e.0))? {
        filter.sql_conditions.push(service_is(&s));
    }
    if let Some(r) = p.one("remoteServiceName").map_err(|e| bad(e.0))? {
        filter.sql_conditions.push(format!(
            "lower(peer_service) = {}",
            quote(&r.to_lowercase())
        ));
    }
    if let Some(n) = p.one("spanName").map_err(|e| bad(e.0))?
        && n != "all"
    {
        filter
            .sql_conditions
            .push(format!("lower(name) = {}", quote(&n.to_lowercase())));
    }
    if let Some(a) = p.one("annotationQuery").map_err(|e| bad(e.0))? {
        filter.sql_conditions.extend(annotation_conditions(&a));
    }
    let min = micros(&mut p, "minDuration")?;
    let max = micros(&mut p, "maxDuration")?;
    if max.is_some() && min.is_none() {
        return Err(bad("maxDuration requires minDuration"));
    }
    filter.min_duration = min.map(|d| d * 1000);
    filter.max_duration = max.map(|d| d * 1000);
    let limit = match p.one("limit").map_err(|e| bad(e.0))? {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => return Err(bad(format!("limit must be from 1 to 10000, got {v:?}"))),
        },
    };
    let range = range(&mut p, DAY_MS)?;
    let (found, _) = search::find(&engine, &filter, range, limit, None).await?;
    let ids: Vec<TraceId> = found.iter().map(|m| m.trace_id).collect();
    let batches = trace::fetch_many(&engine, &ids, Some(range.widened(TRACE_MARGIN_NS))).await?;
    let mut by_trace = spans_by_trace(&batches)?;
    let traces: Vec<Value> = ids
        .iter()
        .filter_map(|id| by_trace.remove(id))
        .map(Value::Array)
        .collect();
    Ok(axum::Json(traces).into_response())
}

/// Zipkin JSON spans of `batches`, grouped by trace id.
fn spans_by_trace(batches: &[RecordBatch]) -> Result<BTreeMap<TraceId, Vec<Value>>, Error> {
    let internal = |e: tracelake_schema::model::Error| Error::from(ApiError::internal(&e));
    let mut out: BTreeMap<TraceId, Vec<(i64, Value)>> = BTreeMap::new();
    for batch in batches {
        let rows = SpanRows::try_new(batch).map_err(internal)?;
        for row in 0..rows.len() {
            let span = rows.span(row).map_err(internal)?;
            let (resource, _) = rows.resource(row).map_err(internal)?;
            let (scope, _) = rows.scope(row).map_err(internal)?;
            let id = crate::fetch::trace_id(rows.trace_id(row));
            let value = zipkin::to_json(&span, &resource, &scope);
            out.entry(id)
                .or_default()
                .push((rows.start_time_unix_nano(row), value));
        }
    }
    Ok(out
        .into_iter()
        .map(|(id, mut spans)| {
            spans.sort_by_key(|(start, _)| *start);
            (id, spans.into_iter().map(|(_, v)| v).collect())
        })
        .collect())
}

fn parse_id(text: &str) -> Result<TraceId, Error> {
    trace::parse_trace_id(text).map_err(|e| bad(e.to_string()))
}

async fn trace_by_id(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
) -> Result<Response, Error> {
    let id = parse_id(&trace_id)?;
    let batches = trace::fetch(&engine, &id).await?;
    match spans_by_trace(&batches)?.remove(&id) {
        Some(spans) => Ok(axum::Json(spans).into_response()),
        None => Err(Error::not_found(format!("{} not found", trace_id_hex(&id)))),
    }
}

async fn trace_many(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let list = required(&mut p, "traceIds")?;
    let ids: Vec<TraceId> = list
        .split(',')
        .map(|t| parse_id(t.trim()))
        .collect::<Result<_, _>>()?;
    let unique: BTreeSet<TraceId> = ids.iter().copied().collect();
    if ids.len() < 2 || unique.len() != ids.len() {
        return Err(bad("traceIds must list at least two distinct trace ids"));
    }
    let batches = trace::fetch_many(&engine, &ids, None).await?;
    let mut by_trace = spans_by_trace(&batches)?;
    let traces: Vec<Value> = ids
        .iter()
        .filter_map(|id| by_trace.remove(id))
        .map(Value::Array)
        .collect();
    Ok(axum::Json(traces).into_response())
}

async fn dependencies(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    required(&mut p, "endTs")?;
    let range = range(&mut p, DAY_MS)?;
    let edges = analytics::dependencies(&engine, range).await?;
    // Zipkin links a client to an uninstrumented server by its remote
    // service name too: both kinds of edge count.
    let mut links: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for e in edges {
        let link = links.entry((e.parent, e.child)).or_default();
        link.0 += e.call_count;
        link.1 += e.error_count;
    }
    let body: Vec<Value> = links
        .into_iter()
        .map(|((parent, child), (calls, errors))| {
            let mut v = json!({ "parent": parent, "child": child, "callCount": calls });
            if errors > 0 {
                v["errorCount"] = json!(errors);
            }
            v
        })
        .collect();
    Ok(axum::Json(body).into_response())
}

async fn autocomplete_keys() -> Response {
    json_list(AUTOCOMPLETE_KEYS.iter().map(|k| k.to_string()))
}

async fn autocomplete_values(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let key = required(&mut p, "key")?;
    let range = TimeRange {
        start: (now_ms() - DAY_MS) * MS,
        end: (now_ms() + DAY_MS) * MS,
    };
    let expr = format!("span_attributes[{}]", quote(&key));
    Ok(json_list(distinct(&engine, &expr, "TRUE", range).await?))
}
