//! `GET /api/v1/storage`: what the table holds, per hour partition — files,
//! bytes, rows and whether compaction has finished with it — and every
//! data file (for tools reading the Parquet files directly).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::compact::generations;
use crate::table::{PartitionFile, Table};

pub fn router(table: Arc<Table>) -> Router {
    Router::new()
        .route("/api/v1/storage", get(storage))
        .with_state(table)
}

async fn storage(State(table): State<Arc<Table>>) -> Response {
    let files = match table.files().await {
        Ok(files) => files,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    Json(describe(
        table.url().as_str(),
        table.version().await,
        &files,
    ))
    .into_response()
}

fn describe(url: &str, version: Option<i64>, files: &[PartitionFile]) -> Value {
    let mut partitions: BTreeMap<&str, Vec<&PartitionFile>> = BTreeMap::new();
    for file in files {
        partitions.entry(&file.partition).or_default().push(file);
    }
    let rows = |files: &[&PartitionFile]| files.iter().filter_map(|f| f.rows).sum::<u64>();
    let bytes = |files: &[&PartitionFile]| files.iter().map(|f| f.size).sum::<u64>();
    let partitions: Vec<Value> = partitions
        .into_iter()
        .map(|(partition, files)| {
            let owned: Vec<PartitionFile> = files.iter().map(|f| (*f).clone()).collect();
            json!({
                "partition": partition,
                "files": files.len(),
                "bytes": bytes(&files),
                "rows": rows(&files),
                "compacted": generations(&owned) == 1,
                "paths": files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let all: Vec<&PartitionFile> = files.iter().collect();
    json!({
        "tableUrl": url,
        "tableVersion": version,
        "files": files.len(),
        "bytes": bytes(&all),
        "rows": rows(&all),
        "partitions": partitions,
    })
}
