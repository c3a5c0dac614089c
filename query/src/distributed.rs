//! Distributed SQL across the query nodes, on `datafusion-distributed`.
//!
//! Every query node with `--sql-worker-listen` serves a worker: the
//! library's gRPC service, in this binary, on a port of its own, running the
//! stages it is sent on the query runtime (never on the listeners'). A node
//! with `--sql-workers` (the workers' addresses: a list, or `dns+name:port`)
//! plans the SQL it is asked (`/api/v1/sql`, Flight SQL) with the library's
//! planner: stages cut at the shuffles and the scan's files spread over the
//! workers, the final stage run here. The APIs' own queries (trace by id,
//! search, analytics) stay local: they are small, and latency matters more.
//!
//! What makes a plan portable: the scan is DataFusion's own Parquet scan
//! ([`crate::scan`]) whose store a worker finds by its root URL
//! ([`crate::scan::TableStores`]); the rows still buffered travel in the
//! plan; our functions travel by name, each registered on every worker. A
//! worker that dies or cannot be reached mid-query fails the query with a
//! 503 naming the cause (the worker's address is in the log; the library
//! does not retry), never a partial answer.
//!
//! Workers run whatever plan they are sent, over every tenant's files: they
//! accept only requests carrying the cluster's peer token
//! (`authorization: Bearer`, `--peer-token`), which the coordinator and
//! the workers add to every call they make to a worker. The port speaks
//! plain HTTP/2: keep it on the cluster's private network.

use std::net::ToSocketAddrs;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{FunctionRegistry as _, SessionState, SessionStateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_distributed::{
    DistributedExec, DistributedExt, SessionStateBuilderExt, Worker, WorkerPlanRewriteEvent,
    WorkerPlanRewriteEventResponse, WorkerQueryContext, WorkerResolver,
};
use http::{HeaderMap, HeaderValue};
use url::Url;

use crate::peers::Peers;

/// Where the workers are and how to reach them.
#[derive(Debug, Clone)]
pub struct DistributedConfig {
    /// The workers' `host:port` (every query node's `--sql-worker-listen`).
    pub workers: Peers,
    /// The cluster's peer token; `None` when the cluster runs without
    /// tokens.
    pub token: Option<String>,
    /// Parquet bytes one scan task reads: a scan of fewer bytes stays on
    /// this node, a larger one is spread over up to one task per worker.
    pub bytes_per_task: usize,
}

/// [`DistributedConfig::bytes_per_task`] unless set: the library's own.
pub const DEFAULT_BYTES_PER_TASK: usize = 16 * 1024 * 1024;

/// The workers' URLs, resolved when the planner asks (a name is looked up
/// again at every query, so nodes added behind it take part at once).
#[derive(Debug, Clone)]
struct Resolver(Peers);

impl WorkerResolver for Resolver {
    fn get_urls(&self) -> Result<Vec<Url>> {
        let addresses: Vec<String> = match &self.0 {
            Peers::Static(list) => list.clone(),
            Peers::Dns(name) => {
                let mut found: Vec<String> = name
                    .to_socket_addrs()
                    .map_err(|e| {
                        DataFusionError::Execution(format!(
                            "resolving the SQL workers' name {name}: {e}"
                        ))
                    })?
                    .map(|a| a.to_string())
                    .collect();
                found.sort();
                found.dedup();
                found
            }
        };
        addresses
            .iter()
            .map(|a| {
                Url::parse(&format!("http://{a}")).map_err(|e| {
                    DataFusionError::Configuration(format!("SQL worker address {a:?}: {e}"))
                })
            })
            .collect()
    }
}

/// The headers every call to a worker carries.
fn auth_headers(token: Option<&str>) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            DataFusionError::Configuration("the peer token is not a valid header value".into())
        })?;
        headers.insert(http::header::AUTHORIZATION, value);
    }
    Ok(headers)
}

/// A session like `ctx`'s (same tables, functions and settings) whose
/// queries are planned across the workers.
pub fn distributed_context(
    ctx: &SessionContext,
    config: &DistributedConfig,
) -> Result<SessionContext> {
    let state = SessionStateBuilder::new_from_existing(ctx.state())
        .with_distributed_worker_resolver(Resolver(config.workers.clone()))
        .with_distributed_passthrough_headers(auth_headers(config.token.as_deref())?)?
        .with_distributed_file_scan_config_bytes_per_partition(config.bytes_per_task.max(1))?
        .with_distributed_planner()
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// Whether `plan` runs (in part) on the workers.
pub fn is_distributed(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<DistributedExec>().is_some()
}

/// The worker a query node serves: sessions with our functions and
/// settings, over `runtime` (the query engine's: its memory limit and
/// object stores).
pub fn worker(runtime: Arc<RuntimeEnv>, token: Option<String>) -> Worker {
    Worker::from_session_builder({
        let runtime = Arc::clone(&runtime);
        move |ctx: WorkerQueryContext| {
            let token = token.clone();
            let runtime = Arc::clone(&runtime);
            async move { worker_session(ctx, token.as_deref(), runtime) }
        }
    })
    .with_runtime_env(runtime)
}

fn worker_session(
    ctx: WorkerQueryContext,
    token: Option<&str>,
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionState> {
    let mut builder = ctx
        .builder
        // Its own calls to other workers (shuffles) carry the token too.
        .with_distributed_passthrough_headers(auth_headers(token)?)?
        // Footers through this node's metadata cache, as on the node asked.
        .with_distributed_worker_plan_rewrite_handler(move |event: WorkerPlanRewriteEvent<'_>| {
            Ok(WorkerPlanRewriteEventResponse::new(
                crate::scan::with_cached_footers(event.plan, &runtime)?,
            ))
        });
    if let Some(config) = builder.config() {
        config
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
    }
    let mut state = builder.build();
    for udf in [crate::udf::event_names(), crate::udf::date_trunc()]
        .into_iter()
        .chain(crate::dedicated::merges())
    {
        state.register_udf(Arc::new(udf))?;
    }
    Ok(state)
}

/// Serves `worker` on `listener` until `stop` resolves; run it on the query
/// runtime ([`crate::executor::Executor::spawn_service`]): the stages it
/// runs are polled where it runs. Every call must carry the peer token
/// (when there is one): `UNAUTHENTICATED` otherwise.
pub async fn serve_worker(
    listener: std::net::TcpListener,
    worker: Worker,
    token: Option<String>,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let service = tonic::service::interceptor::InterceptedService::new(
        worker.into_worker_server(),
        move |request: tonic::Request<()>| {
            let headers = request.metadata().clone().into_headers();
            match check_token(token.as_deref(), &headers) {
                Ok(()) => Ok(request),
                Err(why) => Err(tonic::Status::unauthenticated(why)),
            }
        },
    );
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop)
        .await
        .map_err(std::io::Error::other)
}

/// The gRPC status of a call to a SQL worker that failed because the
/// worker went away or could not be reached (our own scans make no gRPC
/// call: a status in a query's error comes from the distributed engine's
/// calls). Other statuses (a refused token, nodes of different versions)
/// are failures to fix, not to retry: `None`, and they are reported as
/// internal errors, logged with an id.
pub fn worker_lost(e: &DataFusionError) -> Option<&tonic::Status> {
    worker_status(e).filter(|status| {
        matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Aborted
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        )
    })
}

fn worker_status(e: &DataFusionError) -> Option<&tonic::Status> {
    match e {
        DataFusionError::External(inner) => {
            let inner: &(dyn std::error::Error + 'static) = inner.as_ref();
            if let Some(status) = inner.downcast_ref::<tonic::Status>() {
                return Some(status);
            }
            inner
                .downcast_ref::<DataFusionError>()
                .and_then(worker_status)
        }
        DataFusionError::Context(_, inner) => worker_status(inner),
        DataFusionError::Shared(inner) => worker_status(inner),
        DataFusionError::Diagnostic(_, inner) => worker_status(inner),
        DataFusionError::Collection(all) => all.iter().find_map(worker_status),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            arrow::error::ArrowError::ExternalError(inner) => {
                let inner: &(dyn std::error::Error + 'static) = inner.as_ref();
                inner.downcast_ref::<tonic::Status>().or_else(|| {
                    inner
                        .downcast_ref::<DataFusionError>()
                        .and_then(worker_status)
                })
            }
            _ => None,
        },
        _ => None,
    }
}

/// Checks a worker request's token: the cluster's peer token, when it has
/// one.
pub fn check_token(token: Option<&str>, headers: &http::HeaderMap) -> Result<(), &'static str> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err("the peer token is not this cluster's"),
        None => Err("SQL workers need the cluster's peer token (authorization: Bearer)"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_knows_every_function_a_plan_names() {
        let mut builder = datafusion::execution::SessionStateBuilder::new().with_default_features();
        let state = worker_session(
            WorkerQueryContext {
                builder: std::mem::take(&mut builder),
                headers: HeaderMap::new(),
            },
            None,
            Arc::new(RuntimeEnv::default()),
        )
        .unwrap();
        let mut names: Vec<String> = vec![
            crate::udf::event_names().name().into(),
            crate::udf::date_trunc().name().into(),
        ];
        names.extend(crate::dedicated::merges().map(|f| f.name().to_string()));
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(
            distinct.len(),
            names.len(),
            "one name per function: {names:?}"
        );
        for name in &names {
            assert!(state.scalar_functions().contains_key(name), "{name}");
        }
    }

    #[test]
    fn worker_calls_need_the_peer_token() {
        let mut headers = HeaderMap::new();
        assert!(check_token(None, &headers).is_ok());
        assert!(check_token(Some("s3cret"), &headers).is_err());
        headers.insert("authorization", "Bearer nope".parse().unwrap());
        assert!(check_token(Some("s3cret"), &headers).is_err());
        headers.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(check_token(Some("s3cret"), &headers).is_ok());
    }
}
