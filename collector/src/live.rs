//! `GET /api/v1/internal/buffer`: this ingest node's buffered rows, for
//! query nodes that read the table elsewhere (`query::peers`), in the
//! format of [`tracelake_schema::live`], the Kafka partitions' buffers
//! included; `?trace_id=` (32 hex digits) keeps that trace's rows only.
//! Encoding runs on the blocking pool.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tracelake_schema::live::{GROUPS_HEADER, WRITER_HEADER, encode};

use crate::buffer::Buffer;

/// The route's path.
pub const PATH: &str = "/api/v1/internal/buffer";

#[derive(Clone)]
struct Source {
    buffer: Arc<Buffer>,
    writer: Arc<str>,
    /// The Kafka partitions' buffers, each named in the groups header.
    kafka: Option<crate::kafka::KafkaView>,
    /// The buffered rows' schema (the node's table layout).
    schema: SchemaRef,
}

#[derive(Deserialize)]
struct Params {
    trace_id: Option<String>,
}

/// The router of the rows in `buffer` (and `kafka`'s), whose stored schema
/// is `schema`.
pub fn router(
    buffer: Arc<Buffer>,
    writer: &str,
    kafka: Option<crate::kafka::KafkaView>,
    schema: SchemaRef,
) -> Router {
    Router::new().route(PATH, get(serve)).with_state(Source {
        buffer,
        writer: writer.into(),
        kafka,
        schema,
    })
}

async fn serve(State(source): State<Source>, Query(params): Query<Params>) -> Response {
    let trace_id = match params.trace_id.as_deref().map(parse_trace_id).transpose() {
        Ok(id) => id,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let mut groups = vec![(None, source.buffer.snapshot().groups)];
    for (writer, buffer) in source.kafka.iter().flat_map(|k| k.buffers()) {
        groups.push((Some(writer), buffer.snapshot().groups));
    }
    let schema = source.schema;
    let encoded =
        tokio::task::spawn_blocking(move || encode(&groups, trace_id.as_ref(), &schema)).await;
    let (groups, body) = match encoded {
        Ok(Ok(encoded)) => encoded,
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot encode the buffered rows");
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apache.arrow.stream"),
    );
    for (name, value) in [
        (WRITER_HEADER, &*source.writer),
        (GROUPS_HEADER, groups.as_str()),
    ] {
        match HeaderValue::from_str(value) {
            Ok(value) => {
                headers.insert(name, value);
            }
            Err(_) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{name}: not a header value"),
                )
                    .into_response();
            }
        }
    }
    response
}

/// The answer for a tenant not open on this node: 404, with the writer
/// header (empty) that tells a query node it is a tracelake node with
/// nothing buffered for it, not a wrong address.
pub fn not_open(tenant: &str) -> Response {
    let mut response = (
        StatusCode::NOT_FOUND,
        format!("tenant {tenant:?} is not open on this node: nothing buffered"),
    )
        .into_response();
    response
        .headers_mut()
        .insert(WRITER_HEADER, HeaderValue::from_static(""));
    response
}

fn parse_trace_id(text: &str) -> Result<[u8; 16], String> {
    let mut id = [0u8; 16];
    if text.len() != 32 {
        return Err(format!("trace_id {text:?}: 32 hex digits expected"));
    }
    for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = std::str::from_utf8(pair)
            .ok()
            .filter(|pair| pair.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .ok_or_else(|| format!("trace_id {text:?}: not hex"))?;
    }
    Ok(id)
}
