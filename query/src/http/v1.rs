//! Native HTTP API under `/api/v1` (port 3200 by default); `docs/api.md`
//! documents every endpoint with an example.
//!
//! - `POST /api/v1/sql` with `{"sql": "..."}`: rows as JSON, or as an Arrow
//!   IPC stream with `Accept: application/vnd.apache.arrow.stream`.
//! - `GET /api/v1/traces/{trace_id}`: the trace's spans as a tree with the
//!   latency breakdown (`layout=columns`: the web UI's columnar encoding);
//!   `.../breakdown` the breakdown alone.
//! - `GET /api/v1/services`, `/api/v1/services/{service}/operations`,
//!   `/api/v1/search`, `/api/v1/breakdown`, `/api/v1/metrics/red`,
//!   `/api/v1/dependencies`: see [`tracelake_protocols::params`] for their parameters.
//!
//! Errors are `{"error": "..."}` with 400 (bad SQL, bad parameter, bad id,
//! result too large), 404 (no such trace), 408 (time limit), 422 (memory
//! limit) or 500.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use arrow::json::ArrayWriter;
use axum::Router;
use axum::extract::{Path, RawQuery, State, rejection::JsonRejection};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::analytics;
use crate::engine::QueryEngine;
use crate::executor::{Class, Render, on_executor};
use tracelake_protocols::params::Params;

use super::error::{HttpError, Json, render};
use crate::search::{self, Cursor};
use crate::trace;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The native API's errors: `{"error": "..."}`.
type ApiError = HttpError<Json>;

/// The `/api/v1` routes, run on the query executor.
pub fn router(engine: Arc<QueryEngine>) -> Router {
    let interactive = Router::new()
        .route("/api/v1/traces/{trace_id}", get(trace_by_id))
        .route("/api/v1/traces/{trace_id}/breakdown", get(trace_breakdown))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{service}/operations", get(operations))
        .with_state(Arc::clone(&engine));
    let heavy = Router::new()
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/search", get(search))
        .route("/api/v1/breakdown", get(cross_trace))
        .route("/api/v1/metrics/red", get(red))
        .route("/api/v1/dependencies", get(dependencies))
        .with_state(Arc::clone(&engine));
    let render: Render = render::<Json>;
    on_executor(interactive, &engine, Class::Interactive, render).merge(on_executor(
        heavy,
        &engine,
        Class::Heavy,
        render,
    ))
}

const HOUR_NS: i64 = 3_600_000_000_000;

async fn services(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::from_query(query);
    let range = p.time_range(24 * HOUR_NS)?;
    p.finish()?;
    let services = search::services(&engine, range).await?;
    let services: Vec<_> = services
        .into_iter()
        .map(|(name, count)| json!({ "name": name, "spanCount": count }))
        .collect();
    Ok(axum::Json(json!({ "services": services })).into_response())
}

async fn operations(
    State(engine): State<Arc<QueryEngine>>,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::from_query(query);
    let range = p.time_range(24 * HOUR_NS)?;
    let kinds = p.kinds("kind")?;
    p.finish()?;
    search::require_service(&engine, &service, range).await?;
    let mut operations = search::operations(&engine, &service, range).await?;
    if !kinds.is_empty() {
        operations.retain(|o| kinds.contains(&o.span_kind.as_str()));
    }
    Ok(axum::Json(json!({ "operations": operations })).into_response())
}

async fn search(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::from_query(query);
    let range = p.time_range(HOUR_NS)?;
    let filter = p.span_filter()?;
    let limit = p.limit("limit", 20, 1000)?;
    let cursor = p.one("cursor")?.map(|c| Cursor::parse(&c)).transpose()?;
    p.finish()?;
    let page = search::search(&engine, &filter, range, limit, cursor).await?;
    Ok(axum::Json(page).into_response())
}

async fn cross_trace(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::from_query(query);
    let range = p.time_range(HOUR_NS)?;
    let service = p
        .one("service")?
        .ok_or_else(|| ApiError::bad_request("service is required"))?;
    let operation = p.one("operation")?;
    let limit = p.limit("limit", 2000, 50_000)?;
    p.finish()?;
    let report =
        analytics::cross_trace(&engine, range, &service, operation.as_deref(), limit).await?;
    Ok(axum::Json(report).into_response())
}

async fn red(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::from_query(query);
    let range = p.time_range(HOUR_NS)?;
    let service = p.one("service")?;
    let operation = p.one("operation")?;
    let mut kinds = p.kinds("kind")?;
    if kinds.is_empty() {
        kinds = vec!["SERVER", "CONSUMER"];
    }
    let span = range.end - range.start;
    let step = match p.duration("step")? {
        Some(step) if step < 1_000_000 => {
            return Err(ApiError::bad_request("step must be at least 1ms"));
        }
        Some(step) => step,
        // About 60 buckets of whole seconds.
        None => ((span / 60).max(1) as u64).div_ceil(1_000_000_000) as i64 * 1_000_000_000,
    };
    if span / step > 10_000 {
        return Err(ApiError::bad_request(format!(
            "step is too small for the time range: {} buckets (at most 10000)",
            span / step
        )));
    }
    p.finish()?;
    let report = analytics::red(
        &engine,
        range,
        step,
        kinds,
        service.as_deref(),
        operation.as_deref(),
    )
    .await?;
    Ok(axum::Json(report).into_response())
}

async fn dependencies(
    State(engine): State<Arc<QueryEngine>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::from_query(query);
    let range = p.time_range(HOUR_NS)?;
    p.finish()?;
    let edges = analytics::dependencies(&engine, range).await?;
    Ok(axum::Json(json!({ "edges": edges })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

async fn sql(
    State(engine): State<Arc<QueryEngine>>,
    headers: HeaderMap,
    body: Result<axum::Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let axum::Json(request) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "expected a JSON body {{\"sql\": \"...\"}}: {}",
            e.body_text()
        ))
    })?;
    let (schema, batches) = engine.sql(&request.sql).await?;
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    if wants_arrow {
        let body = arrow_stream(&schema, &batches)?;
        return Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], body).into_response());
    }
    let body = json_rows(&schema, &batches)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    crate::error::ApiError::internal(&e).into()
}

fn arrow_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema).map_err(internal)?;
    for batch in batches {
        writer.write(batch).map_err(internal)?;
    }
    writer.finish().map_err(internal)?;
    drop(writer);
    Ok(out)
}

/// `{"columns":[{"name","type"}],"rows":[{...}],"rowCount":n}`; binary
/// values (ids) are lowercase hex.
fn json_rows(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ApiError> {
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"columns\":");
    serde_json::to_writer(&mut out, &columns).map_err(internal)?;
    out.extend_from_slice(b",\"rows\":");
    if rows == 0 {
        out.extend_from_slice(b"[]");
    } else {
        let mut writer = ArrayWriter::new(&mut out);
        for batch in batches {
            writer.write(batch).map_err(internal)?;
        }
        writer.finish().map_err(internal)?;
    }
    out.extend_from_slice(format!(",\"rowCount\":{rows}}}").as_bytes());
    Ok(out)
}

/// The trace as span objects, or with `layout=columns` in the web UI's
/// columnar encoding ([`trace::assemble_columns`]).
async fn trace_by_id(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::from_query(query);
    let layout = p.one("layout")?;
    p.finish()?;
    let assemble = match layout.as_deref() {
        None | Some("spans") => trace::assemble,
        Some("columns") => trace::assemble_columns,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid layout {other:?}: expected spans or columns"
            )));
        }
    };
    let id = trace::parse_trace_id(&trace_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let batches = trace::fetch(&engine, &id).await?;
    let body = assemble(&id, &batches)?
        .ok_or_else(|| ApiError::not_found(format!("trace {} not found", hex::encode(id))))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The trace's breakdown, critical path and warnings, without its spans.
async fn trace_breakdown(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::from_query(query).finish()?;
    let id = trace::parse_trace_id(&trace_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let batches = trace::fetch(&engine, &id).await?;
    let trace = trace::assemble_header(&id, &batches)?
        .ok_or_else(|| ApiError::not_found(format!("trace {} not found", hex::encode(id))))?;
    Ok(axum::Json(trace).into_response())
}
