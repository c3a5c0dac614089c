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
//! probability its operation had when the span started), and the
//! operation gets the probability that samples the target rate of it.
//! Services the file lists keep the file's strategy.

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

/// The probabilities given to each (service, operation), by the time
/// bucket (start time / interval) they were given in.
type Served = std::collections::HashMap<(String, String), std::collections::BTreeMap<i64, f64>>;

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
        let mut served = Served::new();
        loop {
            ticks.tick().await;
            match compute(&engine, settings, &mut served).await {
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
/// probability. An untagged span stands for `1 /` the probability its
/// operation had when it started (given before its time bucket; 1 before
/// any was given), so that spans kept at an older, higher probability are
/// not counted as if kept at the newest one.
async fn compute(
    engine: &Arc<QueryEngine>,
    settings: AdaptiveSampling,
    served: &mut Served,
) -> anyhow::Result<Adaptive> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let since = now.saturating_sub(settings.lookback).as_nanos();
    let since = i64::try_from(since).unwrap_or(i64::MAX);
    let bucket_ns = i64::try_from(settings.interval.as_nanos())
        .unwrap_or(i64::MAX)
        .max(1);
    let work = {
        let engine = Arc::clone(engine);
        async move { tracelake_query::analytics::root_traffic(&engine, since, bucket_ns).await }
    };
    let traffic = engine
        .executor()
        .run(tracelake_query::executor::Class::Heavy, work)
        .await
        .and_then(|r| r)?;
    let seconds = settings.lookback.as_secs_f64();
    let mut traces: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for t in traffic {
        let key = (t.service, t.operation);
        let given = served
            .get(&key)
            .and_then(|by_bucket| by_bucket.range(..t.bucket).next_back())
            .map_or(1.0, |(_, p)| *p);
        *traces.entry(key).or_default() += t.weighted + t.untagged as f64 / given;
    }
    let now_bucket = i64::try_from(now.as_nanos()).unwrap_or(i64::MAX) / bucket_ns;
    let oldest = since / bucket_ns;
    let mut next = Adaptive::default();
    for ((service, operation), traces) in traces {
        let p = adaptive_probability(settings.target, traces / seconds);
        let history = served
            .entry((service.clone(), operation.clone()))
            .or_default();
        history.insert(now_bucket, p);
        // What no span of the lookback can need any more: all but the
        // last probability given before its oldest bucket.
        while history.len() > 1 && history.keys().nth(1).is_some_and(|&b| b <= oldest) {
            history.pop_first();
        }
        next.services
            .entry(service)
            .or_default()
            .insert(operation, p);
    }
    // Operations without traffic in the lookback are forgotten.
    let seen: std::collections::HashSet<(String, String)> = next
        .services
        .iter()
        .flat_map(|(s, ops)| ops.keys().map(move |o| (s.clone(), o.clone())))
        .collect();
    served.retain(|k, _| seen.contains(k));
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
