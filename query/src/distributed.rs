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
//! does not retry), never a partial answer; a worker whose port refuses
//! connections is left out of the queries planned after (checked every
//! 2 s), so a dead node in a static list costs only the queries it was in.
//!
//! Workers run whatever plan they are sent, over every tenant's files: they
//! accept only requests carrying the cluster's peer token
//! (`authorization: Bearer`, `--peer-token`), which the coordinator and
//! the workers add to every call they make to a worker. With the node's
//! ports on TLS, the worker port speaks TLS too, and calls to workers check
//! their certificates against the cluster's CAs ([`DistributedConfig::tls`]).

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{FunctionRegistry as _, SessionState, SessionStateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_distributed::{
    ChannelResolver, DistributedExec, DistributedExt, SessionStateBuilderExt, Worker,
    WorkerChannel, WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse, WorkerQueryContext,
    WorkerResolver,
};
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
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
    /// TLS to the workers (the cluster's ports speak TLS): their
    /// certificates checked against the cluster's CAs, this node's own
    /// presented when asked.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Calls to the workers over TLS: one channel per worker, connected when
/// first used (and again after it breaks), each connection a TLS handshake
/// (ALPN `h2`).
#[derive(Clone)]
struct TlsChannels {
    tls: tokio_rustls::TlsConnector,
    channels: Arc<Mutex<HashMap<Url, tonic::transport::Channel>>>,
}

impl TlsChannels {
    fn new(config: &rustls::ClientConfig) -> Self {
        let mut config = config.clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            channels: Arc::default(),
        }
    }

    fn channel(&self, url: &Url) -> Result<tonic::transport::Channel> {
        let bad = |why: &str| DataFusionError::Configuration(format!("SQL worker {url}: {why}"));
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
        let name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| bad(&e.to_string()))?;
        let address = format!("{host}:{port}");
        let tls = self.tls.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let (tls, name, address) = (tls.clone(), name.clone(), address.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        // The scheme stays `http`: TLS is the connector's (tonic's own TLS
        // is not compiled in).
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
            .map_err(|e| bad(&e.to_string()))?;
        // A worker that does not answer fails the call, as without TLS.
        Ok(endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(connector))
    }
}

#[async_trait::async_trait]
impl ChannelResolver for TlsChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let channel = {
            let mut channels = self.channels.lock();
            match channels.get(url) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = self.channel(url)?;
                    channels.insert(url.clone(), channel.clone());
                    channel
                }
            }
        };
        Ok(datafusion_distributed::grpc::create_worker_client(
            datafusion_distributed::grpc::BoxCloneSyncChannel::new(channel),
        ))
    }
}

/// [`DistributedConfig::bytes_per_task`] unless set: the library's own.
pub const DEFAULT_BYTES_PER_TASK: usize = 16 * 1024 * 1024;

/// How often the workers' addresses are looked up and checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a check waits for a worker's port to accept a connection.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// The workers' URLs for the planner, without a wait: a thread of its own
/// looks the addresses up (a name again at each check, so nodes added
/// behind it take part) and checks that each accepts a connection, at
/// most every [`CHECK_EVERY`] while queries come; the planner takes the
/// last answer, the workers that refused left out, so a dead node in a
/// static list fails the queries it was in the middle of, not the ones
/// after. Until the first check is done, every address is taken.
#[derive(Debug, Clone)]
struct Resolver {
    workers: Peers,
    checks: Arc<Mutex<Checks>>,
}

#[derive(Debug, Default)]
struct Checks {
    /// When the last check started; whether one is under way.
    started: Option<Instant>,
    running: bool,
    /// Its answer: each address and whether it accepted, or why the
    /// addresses are not known.
    answer: Option<std::result::Result<Vec<(String, bool)>, String>>,
}

impl Resolver {
    fn new(workers: Peers) -> Self {
        Self {
            workers,
            checks: Arc::default(),
        }
    }

    /// Starts a check unless one is under way or the last is recent.
    fn check_soon(&self) {
        let mut checks = self.checks.lock();
        if checks.running || checks.started.is_some_and(|at| at.elapsed() < CHECK_EVERY) {
            return;
        }
        checks.running = true;
        checks.started = Some(Instant::now());
        drop(checks);
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("sql-worker-check".into())
            .spawn(move || this.check());
        if spawned.is_err() {
            self.checks.lock().running = false;
        }
    }

    /// Looks the workers up and checks each (all at once).
    fn check(&self) {
        let answer = resolve(&self.workers).map(|addresses| {
            std::thread::scope(|scope| {
                let checks: Vec<_> = addresses
                    .iter()
                    .map(|a| scope.spawn(move || accepts(a)))
                    .collect();
                addresses
                    .iter()
                    .zip(checks)
                    .map(|(a, c)| (a.clone(), c.join().unwrap_or(false)))
                    .collect::<Vec<_>>()
            })
        });
        let mut checks = self.checks.lock();
        if let Ok(now) = &answer {
            let before: HashMap<&str, bool> = match &checks.answer {
                Some(Ok(before)) => before.iter().map(|(a, up)| (a.as_str(), *up)).collect(),
                _ => HashMap::new(),
            };
            for (address, up) in now {
                match (before.get(address.as_str()), up) {
                    (Some(false), true) => {
                        tracing::info!(worker = %address, "SQL worker reachable again")
                    }
                    (Some(true) | None, false) => tracing::warn!(
                        worker = %address,
                        "SQL worker does not accept connections: left out of queries until it does"
                    ),
                    _ => {}
                }
            }
        }
        checks.answer = Some(answer);
        checks.running = false;
    }
}

/// The addresses `workers` names now.
fn resolve(workers: &Peers) -> std::result::Result<Vec<String>, String> {
    Ok(match workers {
        Peers::Static(list) => list.clone(),
        Peers::Dns(name) => {
            let mut found: Vec<String> = name
                .to_socket_addrs()
                .map_err(|e| format!("resolving the SQL workers' name {name}: {e}"))?
                .map(|a| a.to_string())
                .collect();
            found.sort();
            found.dedup();
            found
        }
    })
}

/// Whether `address` (`host:port`) accepts a TCP connection.
fn accepts(address: &str) -> bool {
    address
        .to_socket_addrs()
        .into_iter()
        .flatten()
        .any(|a| std::net::TcpStream::connect_timeout(&a, CHECK_TIMEOUT).is_ok())
}

impl WorkerResolver for Resolver {
    fn get_urls(&self) -> Result<Vec<Url>> {
        self.check_soon();
        let answer = self.checks.lock().answer.clone();
        let (reachable, all): (Vec<String>, Vec<String>) = match answer {
            Some(Ok(checked)) => (
                checked
                    .iter()
                    .filter(|(_, up)| *up)
                    .map(|(a, _)| a.clone())
                    .collect(),
                checked.into_iter().map(|(a, _)| a).collect(),
            ),
            Some(Err(why)) => return Err(DataFusionError::Execution(why)),
            // Not checked yet (the node's first queries): every worker
            // named, a name looked up here once.
            None => {
                let all = resolve(&self.workers).map_err(DataFusionError::Execution)?;
                (all.clone(), all)
            }
        };
        if reachable.is_empty() {
            // As a lost worker: a 503, to retry.
            return Err(DataFusionError::External(Box::new(
                tonic::Status::unavailable(format!(
                    "no SQL worker accepts connections (of {}); the query was not run",
                    all.join(", ")
                )),
            )));
        }
        reachable
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
    // Workers know DataFusion's own nodes only: the partial groupings on
    // strings stay DataFusion's there.
    let state = ctx.state();
    let rules = state
        .physical_optimizers()
        .iter()
        .filter(|rule| rule.name() != crate::string_groups::StringGroups::NAME)
        .cloned()
        .collect();
    let mut builder =
        SessionStateBuilder::new_from_existing(state).with_physical_optimizer_rules(rules);
    if let Some(tls) = &config.tls {
        builder = builder.with_distributed_channel_resolver(TlsChannels::new(tls));
    }
    let state = builder
        .with_distributed_worker_resolver(Resolver::new(config.workers.clone()))
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
/// object stores); its own calls to other workers (shuffles) go over TLS
/// when `tls` is given.
pub fn worker(
    runtime: Arc<RuntimeEnv>,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Worker {
    let channels = tls.as_deref().map(TlsChannels::new);
    Worker::from_session_builder({
        let runtime = Arc::clone(&runtime);
        move |ctx: WorkerQueryContext| {
            let token = token.clone();
            let runtime = Arc::clone(&runtime);
            let channels = channels.clone();
            async move { worker_session(ctx, token.as_deref(), runtime, channels) }
        }
    })
    .with_runtime_env(runtime)
}

fn worker_session(
    ctx: WorkerQueryContext,
    token: Option<&str>,
    runtime: Arc<RuntimeEnv>,
    channels: Option<TlsChannels>,
) -> Result<SessionState> {
    let mut builder = ctx.builder;
    if let Some(channels) = channels {
        builder = builder.with_distributed_channel_resolver(channels);
    }
    let mut builder = builder
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

/// `worker`'s gRPC service as routes, for a server on the query runtime
/// ([`crate::executor::Executor::spawn_service`]: the stages it runs are
/// polled where it runs), over TLS when the node's ports speak it. Every
/// call must carry the peer token (when there is one): `UNAUTHENTICATED`
/// otherwise.
pub fn worker_routes(worker: Worker, token: Option<String>) -> axum::Router {
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
    tonic::service::Routes::new(service).into_axum_router()
}

/// The gRPC codes of a call to a SQL worker that failed because the worker
/// went away or could not be reached.
const LOST: [tonic::Code; 5] = [
    tonic::Code::Unavailable,
    tonic::Code::Unknown,
    tonic::Code::Aborted,
    tonic::Code::Cancelled,
    tonic::Code::DeadlineExceeded,
];

/// A call to a SQL worker that failed because the worker went away or
/// could not be reached: its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLost {
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for WorkerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Whether a query failed because a SQL worker went away or could not be
/// reached (our own scans make no gRPC call: a status in a query's error
/// comes from the distributed engine's calls). The status is found as a
/// cause, or, when another worker met it and sent the error on, in the
/// text the distributed engine rebuilds the error from (tonic's `code:
/// '<description>'`). Other statuses (a refused token, nodes of different
/// versions) are failures to fix, not to retry: `None`, and they are
/// reported as internal errors, logged with an id.
pub fn worker_lost(e: &DataFusionError) -> Option<WorkerLost> {
    if let Some(status) = crate::error::find_cause::<tonic::Status>(e) {
        return LOST.contains(&status.code()).then(|| WorkerLost {
            code: status.code(),
            message: status.message().to_string(),
        });
    }
    let text = e.to_string();
    LOST.iter().find_map(|&code| {
        let mark = format!("code: '{}'", code.description());
        let at = text.find(&mark)?;
        let message = text[at + mark.len()..]
            .split("message: \"")
            .nth(1)
            .and_then(|m| m.split('"').next())
            .unwrap_or_default()
            .to_string();
        Some(WorkerLost { code, message })
    })
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

    #[tokio::test]
    async fn plans_for_the_workers_keep_datafusions_partial_aggregations() {
        use crate::string_groups::StringGroups;
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(StringGroups))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let config = DistributedConfig {
            workers: "127.0.0.1:9".parse().unwrap(),
            token: None,
            bytes_per_task: 1,
            tls: None,
        };
        let distributed = distributed_context(&ctx, &config).unwrap();
        let rules = |ctx: &SessionContext| -> Vec<String> {
            ctx.state()
                .physical_optimizers()
                .iter()
                .map(|r| r.name().to_string())
                .collect()
        };
        let (local, spread) = (rules(&ctx), rules(&distributed));
        assert!(local.iter().any(|r| r == StringGroups::NAME), "{local:?}");
        let mut expected = local.clone();
        expected.retain(|r| r != StringGroups::NAME);
        assert_eq!(spread, expected);
    }

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
            None,
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
    fn workers_that_refuse_connections_are_left_out_until_they_accept() {
        // A port nothing listens on (tcpmux's: privileged, never used).
        let down_at = "127.0.0.1:1".to_string();
        let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up_at = up.local_addr().unwrap().to_string();
        let resolver = Resolver::new(Peers::Static(vec![up_at.clone(), down_at.clone()]));
        let url = |a: &str| Url::parse(&format!("http://{a}")).unwrap();
        let wait_checked = |resolver: &Resolver| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while resolver.checks.lock().running || resolver.checks.lock().answer.is_none() {
                assert!(Instant::now() < deadline, "no check within 10 s");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        // Before the first check: every worker named.
        assert_eq!(
            resolver.get_urls().unwrap(),
            vec![url(&up_at), url(&down_at)]
        );
        wait_checked(&resolver);
        assert_eq!(resolver.get_urls().unwrap(), vec![url(&up_at)]);

        // Both down: a lost-worker status (a 503), not an empty plan.
        drop(up);
        resolver.checks.lock().started = None;
        resolver.check();
        let error = resolver.get_urls().unwrap_err();
        let status = worker_lost(&error).expect("a lost-worker status");
        assert!(status.message.contains(&down_at), "{status}");
    }

    /// A worker that could not reach another sends the error on as text
    /// (the distributed engine rebuilds it from its message): still a lost
    /// worker, a 503.
    #[test]
    fn a_lost_worker_is_recognised_after_another_worker_sent_it_on() {
        let status = tonic::Status::unavailable("tcp connect error");
        #[derive(Debug)]
        struct AsText(String);
        impl std::fmt::Display for AsText {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for AsText {}
        let sent_on = DataFusionError::External(Box::new(AsText(status.to_string())));
        let lost = worker_lost(&sent_on).expect("recognised from the text");
        assert_eq!(lost.code, tonic::Code::Unavailable);
        assert_eq!(lost.message, "tcp connect error");
        let refused = DataFusionError::External(Box::new(AsText(
            tonic::Status::unauthenticated("bad token").to_string(),
        )));
        assert!(worker_lost(&refused).is_none());
        assert!(worker_lost(&DataFusionError::Plan("code: 'x'".into())).is_none());
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
