//! Native HTTP API under `/api/v1` (port 3200 by default).
//!
//! - `POST /api/v1/sql` with `{"sql": "..."}`: rows as JSON, or as an Arrow
//!   IPC stream with `Accept: application/vnd.apache.arrow.stream`.
//! - `GET /api/v1/traces/{trace_id}`: the trace's spans as a tree.
//!
//! Errors are `{"error": "..."}` with 400 (bad SQL, bad id, result too
//! large), 404 (no such trace), 408 (time limit), 422 (memory limit) or 500.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use arrow::json::ArrayWriter;
use axum::Router;
use axum::extract::{Path, State, rejection::JsonRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::engine::{QueryEngine, QueryError};
use crate::trace;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// An API error: status and message.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::Invalid(_) | QueryError::TooManyRows(_) => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            QueryError::ResourcesExhausted(_) => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::Internal(_) => {
                tracing::error!(error = %e, "query failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// The `/api/v1` routes.
pub fn router(engine: Arc<QueryEngine>) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/traces/{trace_id}", get(trace_by_id))
        .with_state(engine)
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
    ApiError::from(QueryError::Internal(e.to_string()))
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

async fn trace_by_id(
    State(engine): State<Arc<QueryEngine>>,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = trace::parse_trace_id(&trace_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let batches = trace::fetch(&engine, &id).await?;
    match trace::assemble(&id, &batches)? {
        Some(body) => Ok(axum::Json(body).into_response()),
        None => Err(ApiError::not_found(format!(
            "trace {} not found",
            hex::encode(id)
        ))),
    }
}
