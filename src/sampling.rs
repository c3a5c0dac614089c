//! Jaeger remote sampling: `GET /sampling?service=` on the agent's sampling
//! port (5778) and `GET /jaeger/api/sampling?service=` on the query port,
//! answering each service's strategy from `--sampling-strategies-file`
//! (Jaeger's format: `tracelake_protocols::jaeger::sampling`), reread when
//! it changes and on SIGHUP. Jaeger SDKs and the OpenTelemetry Jaeger
//! remote sampler poll this; they send no token, so the sampling port
//! needs none (strategies are not data) — the query port's path does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use tracelake_protocols::jaeger::sampling::Strategies;

/// The strategies of `path`, loaded now (an error stops the start) and
/// kept current.
pub(crate) fn watch_strategies(path: PathBuf) -> anyhow::Result<watch::Receiver<Arc<Strategies>>> {
    let shown = path.clone();
    crate::reload::watch_files(
        "sampling strategies",
        vec![path],
        Duration::from_secs(1),
        move |contents| {
            Strategies::parse(&contents[0]).map_err(|e| {
                anyhow::anyhow!("invalid sampling strategies file {}: {e}", shown.display())
            })
        },
    )
}

/// `GET {prefix}` answering strategies.
pub(crate) fn router(path: &str, strategies: watch::Receiver<Arc<Strategies>>) -> Router {
    Router::new()
        .route(path, get(strategy))
        .with_state(strategies)
}

async fn strategy(
    State(strategies): State<watch::Receiver<Arc<Strategies>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match params.get("service").map(|s| s.trim()) {
        Some(service) if !service.is_empty() => {
            axum::Json(strategies.borrow().response(service)).into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "the service parameter is required: GET /sampling?service=<name>\n",
        )
            .into_response(),
    }
}
