//! Jaeger remote sampling: `GET /sampling?service=` on the agent's sampling
//! port (5778) and `GET /jaeger/api/sampling?service=` on the query port,
//! answering each service's strategy from `--sampling-strategies-file`
//! (Jaeger's format: `tracelake_protocols::jaeger::sampling`), reread when
//! it changes and on SIGHUP. Jaeger SDKs and the OpenTelemetry Jaeger
//! remote sampler poll this; they send no token, so the sampling port
//! needs none (strategies are not data) — the query port's path does.
//!
//! Adaptive sampling (`--adaptive-sampling-target`), as Jaeger's: every
//! interval, each service's root operations' traffic is estimated from the
//! default tenant's root spans of the lookback window, each span counting
//! as the traces it stands for (`1 / sampler.param` when the client tagged
//! it with a probabilistic sampler, as Jaeger SDKs do; else `1 /` the
//! probability last given to its operation), and the operation gets the
//! probability that samples the target rate of it. Services the file
//! lists keep the file's strategy.

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
use tracelake_protocols::jaeger::sampling::{Adaptive, Strategies, adaptive_probability};
use tracelake_query::QueryEngine;

use crate::config::AdaptiveSampling;

/// What the sampling endpoints answer from: the strategies file and
/// adaptive sampling's probabilities, each when configured.
#[derive(Clone)]
pub(crate) struct Provider {
    pub(crate) file: Option<watch::Receiver<Arc<Strategies>>>,
    pub(crate) adaptive: Option<watch::Receiver<Arc<Adaptive>>>,
}

impl Provider {
    fn response(&self, service: &str) -> serde_json::Value {
        let file = self.file.as_ref().map(|f| Arc::clone(&f.borrow()));
        if let Some(file) = &file
            && file.lists(service)
        {
            return file.response(service);
        }
        if let Some(adaptive) = &self.adaptive
            && let Some(r) = adaptive.borrow().response(service)
        {
            return r;
        }
        file.unwrap_or_default().response(service)
    }
}

/// Runs adaptive sampling on `engine`'s spans: the probabilities,
/// recomputed every interval (a failed round keeps the last ones and is
/// logged).
pub(crate) fn adaptive(
    engine: Arc<QueryEngine>,
    settings: AdaptiveSampling,
) -> watch::Receiver<Arc<Adaptive>> {
    let (tx, rx) = watch::channel(Arc::new(Adaptive::default()));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let last = Arc::clone(&tx.borrow());
            match compute(&engine, settings, &last).await {
                Ok(next) => {
                    if tx.send(Arc::new(next)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "adaptive sampling: the traffic could not be read; keeping the last probabilities")
                }
            }
        }
    });
    rx
}

/// One round: the traffic of each (service, root operation) and its
/// probability.
async fn compute(
    engine: &Arc<QueryEngine>,
    settings: AdaptiveSampling,
    last: &Adaptive,
) -> anyhow::Result<Adaptive> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let since = now.saturating_sub(settings.lookback).as_nanos();
    let since = i64::try_from(since).unwrap_or(i64::MAX);
    let work = {
        let engine = Arc::clone(engine);
        async move { tracelake_query::analytics::root_traffic(&engine, since).await }
    };
    let traffic = engine
        .executor()
        .run(tracelake_query::executor::Class::Heavy, work)
        .await
        .and_then(|r| r)?;
    let seconds = settings.lookback.as_secs_f64();
    let mut next = Adaptive::default();
    for t in traffic {
        // Untagged spans came through the probability last given (all of
        // them, before any was given).
        let given = last.probability(&t.service, &t.operation).unwrap_or(1.0);
        let traces = t.weighted + t.untagged as f64 / given;
        next.services.entry(t.service).or_default().insert(
            t.operation,
            adaptive_probability(settings.target, traces / seconds),
        );
    }
    Ok(next)
}

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
pub(crate) fn router(path: &str, provider: Provider) -> Router {
    Router::new()
        .route(path, get(strategy))
        .with_state(provider)
}

async fn strategy(
    State(provider): State<Provider>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match params.get("service").map(|s| s.trim()) {
        Some(service) if !service.is_empty() => {
            axum::Json(provider.response(service)).into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "the service parameter is required: GET /sampling?service=<name>\n",
        )
            .into_response(),
    }
}
