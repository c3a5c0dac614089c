//! Jaeger query API under `/jaeger` on the query port: the v1 endpoints that
//! Grafana's Jaeger data source and Jaeger UI call (`/api/services`,
//! `/api/services/{s}/operations`, `/api/operations`, `/api/traces`,
//! `/api/traces/{id}`, `/api/dependencies`) in the v1 envelope
//! `{"data", "total", "limit", "offset", "errors"}`, and api_v3
//! (`/api/v3/services`, `/api/v3/operations`, `/api/v3/traces`,
//! `/api/v3/traces/{id}`, `/api/v3/trace-summaries`).
//!
//! Spans are converted as Jaeger's OTLP translator does (see
//! [`ui_trace`]); the SERVER half of a Zipkin shared span gets a span id of
//! its own, as Jaeger's span-id uniquifier does, since Jaeger UI needs unique
//! ids.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::DateTime;
use serde_json::{Map, Value, json};
use tracelake_protocols::otlp_json;
use tracelake_schema::model::{SpanRows, to_otlp};
use tracelake_schema::opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use tracelake_schema::opentelemetry_proto::tonic::resource::v1::Resource;
use tracelake_schema::opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use tracelake_schema::spans::SPAN_KINDS;

use super::error::{HttpError, JaegerV1, JaegerV3, render};
use crate::analysis::{Span, Tree};
use crate::analytics;
use crate::engine::{QueryEngine, QueryError};
use crate::error::ApiError;
use crate::executor::{Class, Render, on_executor};
use crate::fetch::{self, Strings, TRACE_MARGIN_NS, TraceId};
use crate::search::{self, DISCOVERY_LOOKBACK_NS};
use crate::sql::quote;
use crate::trace;
use tracelake_protocols::duration::parse_nanos;
use tracelake_protocols::jaeger::{self, UiSpan};
use tracelake_protocols::otlp::trace_id_hex;
use tracelake_protocols::params::{Params, SpanFilter, TimeRange};

const US: i64 = 1_000;
const MS: i64 = 1_000_000;
const DAY_NS: i64 = 86_400_000_000_000;

/// The `/api/...` routes (mounted under `/jaeger`).
pub fn router(engine: Arc<QueryEngine>) -> Router {
    let v1_interactive = Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces/{trace_id}", get(trace_by_id))
        .with_state(Arc::clone(&engine));
    let v1_heavy = Router::new()
        .route("/api/traces", get(find_traces))
        .route("/api/dependencies", get(dependencies))
        .with_state(Arc::clone(&engine));
    let v3_interactive = Router::new()
        .route("/api/v3/services", get(v3_services))
        .route("/api/v3/operations", get(v3_operations))
        .route("/api/v3/traces/{trace_id}", get(v3_trace))
        .with_state(Arc::clone(&engine));
    let v3_heavy = Router::new()
        .route("/api/v3/traces", get(v3_find_traces))
        .route("/api/v3/trace-summaries", get(v3_summaries))
        .with_state(Arc::clone(&engine));
    let v1: Render = render::<JaegerV1>;
    let v3: Render = render::<JaegerV3>;
    on_executor(v1_interactive, &engine, Class::Interactive, v1)
        .merge(on_executor(v1_heavy, &engine, Class::Heavy, v1))
        .merge(on_executor(v3_interactive, &engine, Class::Interactive, v3))
        .merge(on_executor(v3_heavy, &engine, Class::Heavy, v3))
}

/// Jaeger query v1's errors (in its structured response).
type Error = HttpError<JaegerV1>;
/// Jaeger api_v3's errors.
type V3Error = HttpError<JaegerV3>;

fn envelope(data: Value, total: usize, errors: Option<Value>) -> Response {
    axum::Json(json!({
        "data": data, "total": total, "limit": 0, "offset": 0, "errors": errors,
    }))
    .into_response()
}

fn now_ns() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .expect("the clock is within the nanosecond range")
}

fn discovery_range() -> TimeRange {
    let now = now_ns();
    TimeRange {
        start: now - DISCOVERY_LOOKBACK_NS,
        end: now + DAY_NS,
    }
}

// ---- conversion -------------------------------------------------------

struct Row {
    span: OtlpSpan,
    resource: Resource,
    scope: InstrumentationScope,
    service: String,
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Row>, QueryError> {
    let internal = |e: tracelake_schema::model::Error| QueryError::Internal(e.to_string());
    let mut out = Vec::new();
    for batch in batches {
        let rows = SpanRows::try_new(batch).map_err(internal)?;
        for row in 0..rows.len() {
            out.push(Row {
                span: rows.span(row).map_err(internal)?,
                resource: rows.resource(row).map_err(internal)?.0,
                scope: rows.scope(row).map_err(internal)?.0,
                service: rows.service_name(row).to_string(),
            });
        }
    }
    Ok(out)
}

/// Rows grouped by trace id.
fn by_trace(rows: Vec<Row>) -> BTreeMap<TraceId, Vec<Row>> {
    let mut out: BTreeMap<TraceId, Vec<Row>> = BTreeMap::new();
    for r in rows {
        out.entry(fetch::trace_id(&r.span.trace_id))
            .or_default()
            .push(r);
    }
    out
}

/// One trace in Jaeger UI's JSON (`uimodel.Trace`).
fn ui_trace(trace_id: &TraceId, rows: &[Row]) -> Value {
    let mut strings = Strings::default();
    let tree = Tree::new(
        rows.iter()
            .enumerate()
            .map(|(i, r)| Span {
                key: i,
                span_id: fetch::span_id(&r.span.span_id),
                parent_span_id: (!r.span.parent_span_id.is_empty())
                    .then(|| fetch::span_id(&r.span.parent_span_id)),
                service: strings.get(&r.service),
                name: strings.get(&r.span.name),
                kind: strings.get(SPAN_KINDS.get(r.span.kind as usize).copied().unwrap_or("")),
                start: r.span.start_time_unix_nano as i64,
                duration: 0,
                error: false,
            })
            .collect(),
    );
    // Unique span ids: the SERVER half of a shared span gets a fresh one.
    let mut taken: HashSet<u64> = tree.spans.iter().map(|s| s.span_id).collect();
    let mut ids: Vec<u64> = tree.spans.iter().map(|s| s.span_id).collect();
    for (id, parent) in ids.iter_mut().zip(&tree.parent) {
        if let Some(p) = *parent
            && tree.spans[p].span_id == *id
        {
            let mut fresh = id.wrapping_add(1);
            while fresh == 0 || taken.contains(&fresh) {
                fresh = fresh.wrapping_add(1);
            }
            taken.insert(fresh);
            *id = fresh;
        }
    }
    let parents: Vec<Option<String>> = tree
        .spans
        .iter()
        .enumerate()
        .map(|(i, node)| match tree.parent[i] {
            Some(p) => Some(format!("{:016x}", ids[p])),
            None => {
                let raw = &rows[node.key].span.parent_span_id;
                (!raw.is_empty()).then(|| hex::encode(raw))
            }
        })
        .collect();
    jaeger::ui_trace(
        trace_id,
        tree.spans.iter().enumerate().map(|(i, node)| {
            let row = &rows[node.key];
            UiSpan {
                span: &row.span,
                resource: &row.resource,
                scope: &row.scope,
                service: &row.service,
                span_id: ids[i],
                parent: parents[i].as_deref(),
            }
        }),
    )
}

// ---- conditions ---------------------------------------------------------

/// Jaeger tag filters: pseudo-tags for OTLP fields (`error`, `span.kind`,
/// `otel.status_code`, `scope.name`, `scope.version`), `resource.<k>` for
/// resource attributes, any other key the span's or the resource's
/// attribute (compared as text).
fn tag_conditions(tags: &BTreeMap<String, String>) -> Vec<String> {
    tags.iter()
        .map(|(k, v)| match k.as_str() {
            "error" if v.eq_ignore_ascii_case("true") => "status_code = 'ERROR'".to_string(),
            "error" if v.eq_ignore_ascii_case("false") => {
                "coalesce(status_code, 'UNSET') <> 'ERROR'".to_string()
            }
            "span.kind" => format!("kind = {}", quote(&v.to_ascii_uppercase())),
            "otel.status_code" | "span.status" => {
                let code = v.to_ascii_uppercase();
                format!(
                    "status_code = {}",
                    quote(code.strip_prefix("STATUS_CODE_").unwrap_or(&code))
                )
            }
            "otel.status_description" => format!("status_message = {}", quote(v)),
            "scope.name" | "otel.scope.name" => format!("scope_name = {}", quote(v)),
            "scope.version" | "otel.scope.version" => format!("scope_version = {}", quote(v)),
            _ => match k.strip_prefix("resource.") {
                Some(r) => format!("resource_attributes[{}] = {}", quote(r), quote(v)),
                None => format!(
                    "coalesce(span_attributes[{k}], resource_attributes[{k}]) = {v}",
                    k = quote(k),
                    v = quote(v)
                ),
            },
        })
        .collect()
}

fn json_tags(text: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("{name} must be a JSON object of strings: {e}"))?;
    let Value::Object(map) = value else {
        return Err(format!("{name} must be a JSON object of strings"));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Ok((k, other.to_string())),
        })
        .collect()
}

// ---- v1 -----------------------------------------------------------------

async fn services(State(engine): State<Arc<QueryEngine>>) -> Result<Response, Error> {
    let names: Vec<String> = search::services(&engine, discovery_range())
        .await
        .map_err(Error::from)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let total = names.len();
    Ok(envelope(json!(names), total, None))
}

async fn service_operations(
    State(engine): State<Arc<QueryEngine>>,
    Path(service): Path<String>,
) -> Result<Response, Error> {
    let ops = search::operations(&engine, &service, discovery_range())
        .await
        .map_err(Error::from)?;
    let names: BTreeSet<String> = ops.into_iter().map(|o| o.name).collect();
    let total = names.len();
    Ok(envelope(json!(names), total, None))
}

fn jaeger_kind(kind: &str) -> &'static str {
    match kind {
        "SERVER" => "server",
        "CLIENT" => "client",
        "PRODUCER" => "producer",
        "CONSUMER" => "consumer",
        "INTERNAL" => "internal",
        _ => "",
    }
}

async fn operations(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let one = |p: &mut Params, n| p.one(n).map_err(|e| Error::bad_request(e.0));
    let service = one(&mut p, "service")?
        .ok_or_else(|| Error::bad_request("parameter 'service' is required"))?;
    let kind = one(&mut p, "spanKind")?
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ops: Vec<Value> = search::operations(&engine, &service, discovery_range())
        .await
        .map_err(Error::from)?
        .into_iter()
        .map(|o| (o.name, jaeger_kind(&o.span_kind)))
        .filter(|(_, k)| kind.is_empty() || *k == kind)
        .map(|(name, k)| json!({ "name": name, "spanKind": k }))
        .collect();
    let total = ops.len();
    Ok(envelope(Value::Array(ops), total, None))
}

/// Full rows of `ids`, converted, in the order of `ids`.
async fn ui_traces(
    engine: &QueryEngine,
    ids: &[TraceId],
    range: Option<TimeRange>,
) -> Result<(Vec<Value>, Vec<TraceId>), QueryError> {
    let batches = trace::fetch_many(engine, ids, range).await?;
    let mut grouped = by_trace(rows_of(&batches)?);
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match grouped.remove(id) {
            Some(rows) => found.push(ui_trace(id, &rows)),
            None => missing.push(*id),
        }
    }
    Ok((found, missing))
}

fn micros_param(p: &mut Params, name: &'static str) -> Result<Option<i64>, Error> {
    match p.one(name).map_err(|e| Error::bad_request(e.0))? {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
            Error::bad_request(format!("{name} must be Unix microseconds, got {v:?}"))
        }),
    }
}

fn duration_param(p: &mut Params, name: &'static str) -> Result<Option<i64>, Error> {
    match p.one(name)? {
        None => Ok(None),
        Some(v) => parse_nanos(&v)
            .map(Some)
            .map_err(|e| Error::bad_request(format!("{name}: {e}"))),
    }
}

async fn find_traces(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let bad = |m: String| Error::bad_request(m);
    let trace_ids = p.all("traceID");
    if !trace_ids.is_empty() {
        let ids: Vec<TraceId> = trace_ids
            .iter()
            .map(|t| trace::parse_trace_id(t).map_err(|e| bad(e.to_string())))
            .collect::<Result<_, _>>()?;
        let (found, missing) = ui_traces(&engine, &ids, None).await.map_err(Error::from)?;
        let errors = (!missing.is_empty()).then(|| {
            Value::Array(
                missing
                    .iter()
                    .map(|id| json!({ "code": 404, "msg": "trace not found", "traceID": trace_id_hex(id) }))
                    .collect(),
            )
        });
        return Ok(envelope(Value::Array(found), 0, errors));
    }
    let service = p
        .one("service")
        .map_err(|e| bad(e.0))?
        .ok_or_else(|| bad("parameter 'service' is required".into()))?;
    let mut filter = SpanFilter {
        service: Some(service),
        operation: p.one("operation").map_err(|e| bad(e.0))?,
        ..SpanFilter::default()
    };
    let mut tags = BTreeMap::new();
    for t in p.all("tags") {
        tags.extend(json_tags(&t, "tags").map_err(bad)?);
    }
    for t in p.all("tag") {
        let (k, v) = t
            .split_once(':')
            .ok_or_else(|| bad(format!("tag {t:?} must be key:value")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    filter.sql_conditions = tag_conditions(&tags);
    filter.min_duration = duration_param(&mut p, "minDuration")?;
    filter.max_duration = duration_param(&mut p, "maxDuration")?;
    if let (Some(min), Some(max)) = (filter.min_duration, filter.max_duration)
        && max < min
    {
        return Err(bad("maxDuration must not be less than minDuration".into()));
    }
    let now = now_ns();
    let end = micros_param(&mut p, "end")?.map_or(now, |us| us.saturating_mul(US));
    let start = micros_param(&mut p, "start")?.map_or(end - 2 * DAY_NS, |us| us.saturating_mul(US));
    if start >= end {
        return Err(bad("start must be before end".into()));
    }
    let range = TimeRange {
        start,
        end: end + 1,
    };
    let limit = match p.one("limit").map_err(|e| bad(e.0))? {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| bad(format!("limit must be from 1 to 10000, got {v:?}")))?,
    };
    let (found, _) = search::find(&engine, &filter, range, limit, None)
        .await
        .map_err(Error::from)?;
    let ids: Vec<TraceId> = found.iter().map(|m| m.trace_id).collect();
    let (traces, _) = ui_traces(&engine, &ids, Some(range.widened(TRACE_MARGIN_NS)))
        .await
        .map_err(Error::from)?;
    Ok(envelope(Value::Array(traces), 0, None))
}

async fn trace_by_id(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
) -> Result<Response, Error> {
    let id = trace::parse_trace_id(&trace_id).map_err(|e| Error::bad_request(e.to_string()))?;
    let (found, _) = ui_traces(&engine, &[id], None).await.map_err(Error::from)?;
    if found.is_empty() {
        return Err(Error::not_found("trace not found"));
    }
    Ok(envelope(Value::Array(found), 0, None))
}

async fn dependencies(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let mut p = Params::from_query(q);
    let bad = |m: String| Error::bad_request(m);
    let ms = |p: &mut Params, name: &'static str| -> Result<Option<i64>, Error> {
        match p.one(name).map_err(|e| bad(e.0))? {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| {
                    bad(format!(
                        "{name} must be a positive number of milliseconds, got {v:?}"
                    ))
                }),
        }
    };
    let end = ms(&mut p, "endTs")?.map_or(now_ns(), |v| v.saturating_mul(MS));
    let lookback = ms(&mut p, "lookback")?.map_or(DAY_NS, |v| v.saturating_mul(MS));
    let range = TimeRange {
        start: end.saturating_sub(lookback),
        end: end + 1,
    };
    let mut links: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in analytics::dependencies(&engine, range)
        .await
        .map_err(Error::from)?
    {
        *links.entry((e.parent, e.child)).or_default() += e.call_count;
    }
    let data: Vec<Value> = links
        .into_iter()
        .map(|((parent, child), n)| json!({ "parent": parent, "child": child, "callCount": n }))
        .collect();
    Ok(envelope(Value::Array(data), 0, None))
}

// ---- v3 -----------------------------------------------------------------

/// `query.<camel>` or `query.<snake>`.
fn v3_param(
    p: &mut Params,
    camel: &'static str,
    snake: &'static str,
) -> Result<Option<String>, V3Error> {
    let a = p.one(camel).map_err(|e| V3Error::bad_request(e.0))?;
    let b = p.one(snake).map_err(|e| V3Error::bad_request(e.0))?;
    Ok(a.or(b))
}

async fn v3_services(State(engine): State<Arc<QueryEngine>>) -> Result<Response, V3Error> {
    let names: Vec<String> = search::services(&engine, discovery_range())
        .await
        .map_err(V3Error::from)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    Ok(axum::Json(json!({ "services": names })).into_response())
}

async fn v3_operations(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, V3Error> {
    let mut p = Params::from_query(q);
    let service = v3_param(&mut p, "service", "service")?
        .ok_or_else(|| V3Error::bad_request("service is required"))?;
    let kind = v3_param(&mut p, "spanKind", "span_kind")?
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ops: Vec<Value> = search::operations(&engine, &service, discovery_range())
        .await
        .map_err(V3Error::from)?
        .into_iter()
        .map(|o| {
            let k = match jaeger_kind(&o.span_kind) {
                "" => "internal",
                k => k,
            };
            (o.name, k)
        })
        .filter(|(_, k)| kind.is_empty() || *k == kind)
        .map(|(name, k)| json!({ "name": name, "spanKind": k }))
        .collect();
    Ok(axum::Json(json!({ "operations": ops })).into_response())
}

fn rfc3339(name: &str, v: &str) -> Result<i64, V3Error> {
    DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| V3Error::bad_request(format!("{name} must be an RFC 3339 time, got {v:?}")))
}

/// The `query.*` parameters of `/api/v3/traces` and `/trace-summaries`.
fn v3_query_params(p: &mut Params) -> Result<(SpanFilter, TimeRange, usize), V3Error> {
    let bad = |m: String| V3Error::bad_request(m);
    let mut filter = SpanFilter {
        service: v3_param(p, "query.serviceName", "query.service_name")?,
        operation: v3_param(p, "query.operationName", "query.operation_name")?,
        ..SpanFilter::default()
    };
    let start = v3_param(p, "query.startTimeMin", "query.start_time_min")?
        .ok_or_else(|| bad("query.start_time_min is required".into()))?;
    let end = v3_param(p, "query.startTimeMax", "query.start_time_max")?
        .ok_or_else(|| bad("query.start_time_max is required".into()))?;
    let range = TimeRange {
        start: rfc3339("query.start_time_min", &start)?,
        end: rfc3339("query.start_time_max", &end)? + 1,
    };
    if range.start >= range.end - 1 {
        return Err(bad(
            "query.start_time_min must be before query.start_time_max".into(),
        ));
    }
    for (camel, snake, slot) in [
        (
            "query.durationMin",
            "query.duration_min",
            &mut filter.min_duration,
        ),
        (
            "query.durationMax",
            "query.duration_max",
            &mut filter.max_duration,
        ),
    ] {
        if let Some(v) = v3_param(p, camel, snake)? {
            *slot = Some(parse_nanos(&v).map_err(|e| bad(format!("{snake}: {e}")))?);
        }
    }
    if let Some(a) = v3_param(p, "query.attributes", "query.attributes")? {
        filter.sql_conditions = tag_conditions(&json_tags(&a, "query.attributes").map_err(bad)?);
    }
    let depth = match v3_param(p, "query.searchDepth", "query.search_depth")? {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "query.search_depth must be from 1 to 10000, got {v:?}"
                ))
            })?,
    };
    Ok((filter, range, depth))
}

async fn v3_find_traces(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, V3Error> {
    let mut p = Params::from_query(q);
    let (filter, range, depth) = v3_query_params(&mut p)?;
    let (found, _) = search::find(&engine, &filter, range, depth, None)
        .await
        .map_err(V3Error::from)?;
    if found.is_empty() {
        return Err(V3Error::not_found("No traces found"));
    }
    let ids: Vec<TraceId> = found.iter().map(|m| m.trace_id).collect();
    let batches = trace::fetch_many(&engine, &ids, Some(range.widened(TRACE_MARGIN_NS)))
        .await
        .map_err(V3Error::from)?;
    otlp_result(&batches)
}

fn otlp_result(batches: &[RecordBatch]) -> Result<Response, V3Error> {
    let request = to_otlp(batches).map_err(|e| V3Error::from(ApiError::internal(&e)))?;
    Ok(axum::Json(json!({ "result": otlp_json::traces_data(&request) })).into_response())
}

async fn v3_trace(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
) -> Result<Response, V3Error> {
    let id = trace::parse_trace_id(&trace_id).map_err(|e| V3Error::bad_request(e.to_string()))?;
    let batches = trace::fetch(&engine, &id).await.map_err(V3Error::from)?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(V3Error::not_found("trace not found"));
    }
    otlp_result(&batches)
}

async fn v3_summaries(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(q): RawQuery,
) -> Result<Response, V3Error> {
    let mut p = Params::from_query(q);
    let (filter, range, depth) = v3_query_params(&mut p)?;
    let (found, _) = search::find(&engine, &filter, range, depth, None)
        .await
        .map_err(V3Error::from)?;
    let ids: Vec<TraceId> = found.iter().map(|m| m.trace_id).collect();
    let mut traces: HashMap<TraceId, Vec<Span>> =
        fetch::traces(&engine, &ids, range.widened(TRACE_MARGIN_NS))
            .await
            .map_err(V3Error::from)?
            .into_iter()
            .collect();
    let summaries: Vec<Value> = ids
        .iter()
        .filter_map(|id| Some((id, traces.remove(id)?)))
        .map(|(id, spans)| summary(id, Tree::new(spans)))
        .collect();
    Ok(axum::Json(json!({ "summaries": summaries })).into_response())
}

/// An api_v3 trace summary; zero counts are omitted, as protobuf's JSON
/// mapping does.
fn summary(id: &TraceId, tree: Tree) -> Value {
    let root = tree.main_root().expect("a found trace has spans");
    let (start, end) = tree.bounds().expect("a found trace has spans");
    let services = tree.service_counts();
    let mut o = Map::new();
    o.insert("traceId".into(), json!(hex::encode(id)));
    o.insert(
        "rootServiceName".into(),
        json!(tree.spans[root].service.to_string()),
    );
    o.insert(
        "rootOperationName".into(),
        json!(tree.spans[root].name.to_string()),
    );
    o.insert("minStartTimeUnixNano".into(), json!(start.to_string()));
    o.insert("maxEndTimeUnixNano".into(), json!(end.to_string()));
    o.insert("spanCount".into(), json!(tree.spans.len()));
    let errors = tree.spans.iter().filter(|s| s.error).count();
    if errors > 0 {
        o.insert("errorSpanCount".into(), json!(errors));
    }
    let orphans = tree.orphan.iter().filter(|&&x| x).count();
    if orphans > 0 {
        o.insert("orphanSpanCount".into(), json!(orphans));
    }
    o.insert(
        "services".into(),
        services
            .into_iter()
            .map(|(name, (spans, errors))| {
                let mut s = Map::new();
                s.insert("name".into(), json!(name));
                s.insert("spanCount".into(), json!(spans));
                if errors > 0 {
                    s.insert("errorSpanCount".into(), json!(errors));
                }
                Value::Object(s)
            })
            .collect(),
    );
    Value::Object(o)
}
