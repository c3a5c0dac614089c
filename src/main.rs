//! `tracelake`: the one binary. Parses the command line and configuration,
//! wires the collector and the query service together, serves their ports and
//! shuts down gracefully.

mod auth;
mod config;
mod fallback;
mod limits;
mod reload;
mod sampling;
mod tenants;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracelake_collector::CollectorConfig;
use tracelake_collector::buffer::Buffer;
use tracelake_collector::compact::CompactionConfig;
use tracelake_collector::flush::{FlushConfig, RetentionConfig};
use tracelake_collector::ingest::IngestConfig;
use tracelake_collector::metrics::Metrics;
use tracelake_query::{LiveSnapshot, LiveSpans, QueryConfig};

use crate::config::{Config, Settings};
use crate::tenants::Tenants;

/// jemalloc, not glibc's malloc: OTLP/protobuf ingest 1.12x as fast (the
/// median of five alternated rounds), the decoders that allocate (prost's)
/// 1.29x, at about the peak memory of glibc limited to four arenas, which
/// this replaces (BENCHMARKS.md, "jemalloc").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    version,
    about = "tracelake: a distributed-tracing backend on Parquet and Delta Lake"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run receivers, storage and the query service
    Serve {
        /// TOML configuration file (flags and environment take precedence)
        #[arg(long, env = "TRACELAKE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
        /// Test builds only: fault points to arm (see collector::faults)
        #[arg(long, hide = true, env = "TRACELAKE_FAULTS")]
        fault_points: Option<String>,
    },
}

/// The command line, with each setting's declared default in its help.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", Settings::document_defaults)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve {
            config,
            settings,
            fault_points,
        } => {
            if let Some(spec) = fault_points {
                tracelake_collector::faults::configure(&spec)
                    .map_err(|e| anyhow::anyhow!("--fault-points: {e}"))?;
            }
            let config = settings.resolve(config.as_deref())?;
            if config.storage_root.scheme() == "s3" {
                tracelake_collector::s3::register(config.s3.clone());
            }
            init_logging(&config)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(config))
        }
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("invalid log filter {:?}", config.log_filter))?;
    // Colours only for a person at a terminal, never into a file or pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// The collector's buffer as the query service's live source: its rows,
/// and the application id its node commits them under.
pub(crate) struct BufferSource {
    pub(crate) buffer: Arc<Buffer>,
    pub(crate) writer: String,
    /// The Kafka partitions' buffers, each committed under its own id.
    pub(crate) kafka: Option<tracelake_collector::kafka::KafkaView>,
}

#[async_trait::async_trait]
impl LiveSpans for BufferSource {
    async fn snapshot(&self, _trace_id: Option<&[u8; 16]>) -> Vec<LiveSnapshot> {
        let mut out = vec![LiveSnapshot {
            writer: Some(self.writer.clone()),
            groups: self.buffer.snapshot().groups,
        }];
        for (writer, buffer) in self.kafka.iter().flat_map(|k| k.buffers()) {
            out.push(LiveSnapshot {
                writer: Some(writer),
                groups: buffer.snapshot().groups,
            });
        }
        out
    }
}

struct Health {
    ready: AtomicBool,
    registry: Registry,
    /// The storage root: on an object store, readiness of a node that does
    /// not ingest needs it reachable (an ingest node rides an outage out on
    /// its WAL, and stays ready).
    root: url::Url,
    ingests: bool,
    /// For `/ready`'s detail: the compactor leases and the ingest nodes.
    tenants: Arc<Tenants>,
    peers: Option<Arc<tracelake_query::peers::PeerMetrics>>,
    /// The last reachability check and its outcome (checked at most every
    /// few seconds, however often probes come).
    storage_checked: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

impl Health {
    /// Whether the object store answers (always, for a local root).
    async fn storage_reachable(&self) -> Result<(), String> {
        if self.root.scheme() == "file" || self.ingests {
            return Ok(());
        }
        let mut checked = self.storage_checked.lock().await;
        if let Some((at, outcome)) = &*checked
            && at.elapsed() < std::time::Duration::from_secs(5)
        {
            return outcome.clone();
        }
        let listing = tracelake_collector::s3::children(&self.root, "tenants/");
        let outcome = match tokio::time::timeout(std::time::Duration::from_secs(2), listing).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("object store {} unreachable: {error}", self.root)),
            Err(_) => Err(format!(
                "object store {} did not answer within 2 s",
                self.root
            )),
        };
        *checked = Some((std::time::Instant::now(), outcome.clone()));
        outcome
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let roles = config.roles;
    tracing::info!(
        table = %config.table_url,
        wal = %config.wal_dir.display(),
        %roles,
        node = config.node_id.as_deref().unwrap_or("(unnamed)"),
        "starting tracelake"
    );
    // A tokens file that does not load stops the start: running open by
    // mistake is worse than not running.
    let tokens = match &config.auth_tokens_file {
        Some(path) => {
            let tokens = auth::watch_tokens(path.clone(), std::time::Duration::from_secs(1))?;
            tracing::info!(tokens = tokens.borrow().len(), file = %path.display(), "authentication on");
            Some(tokens)
        }
        None => {
            tracing::warn!(
                "authentication is OFF (no --auth-tokens-file): anyone who can reach these ports \
                 can read and write all data; set --auth-tokens-file, or --listen-address \
                 127.0.0.1 to keep the ports on this machine"
            );
            None
        }
    };
    // The same for TLS: files that do not load stop the start.
    let tls = match &config.tls {
        Some(settings) => {
            let configs = settings.watch(std::time::Duration::from_secs(1))?;
            tracing::info!(
                cert = %settings.cert_file.display(),
                client_ca = ?settings.client_ca_file,
                min_version = ?settings.min_version,
                "TLS on every TCP listener"
            );
            Some(configs)
        }
        None => None,
    };
    // Its certificate loaded: the client side of calls to other nodes.
    let config = config.with_cluster_tls()?;
    // Per-tenant limits: the file, kept current; without one, none.
    let limits = match &config.tenant_limits_file {
        Some(path) => {
            let shown = path.clone();
            reload::watch_files(
                "tenant limits",
                vec![path.clone()],
                std::time::Duration::from_secs(1),
                move |contents| {
                    limits::LimitsFile::parse(std::str::from_utf8(&contents[0])?)
                        .with_context(|| format!("invalid tenant limits file {}", shown.display()))
                },
            )?
        }
        None => watch::channel(Arc::new(limits::LimitsFile::default())).1,
    };
    let metrics = Arc::new(Metrics::default());
    let setup = tenants::Setup {
        auth: tokens.is_some(),
        collector: CollectorConfig {
            tenant: crate::config::DEFAULT_TENANT.to_string(),
            table_url: config.table_url.clone(),
            wal_dir: config.wal_dir.clone(),
            wal_segment_bytes: config.wal_segment_bytes,
            flush: FlushConfig {
                max_age: config.flush_max_age,
                max_bytes: config.flush_max_bytes,
            },
            retention: RetentionConfig {
                max_age: config.retention,
                check_every: config.retention_check_interval,
                vacuum_grace: config.vacuum_grace,
            },
            compaction: CompactionConfig {
                enabled: config.compaction_interval.is_some(),
                check_every: config
                    .compaction_interval
                    .unwrap_or(std::time::Duration::from_secs(60)),
                delay: config.compaction_delay,
                target_file_bytes: config.compaction_target_bytes,
                nice: config.compaction_nice,
                lower_priority: tracelake_query::executor::lower_priority,
            },
            ingest: IngestConfig {
                max_span_age: config.max_span_age,
                max_span_future: config.max_span_future,
                max_buffer_bytes: config.max_buffer_bytes,
            },
            max_request_bytes: config.max_request_bytes,
            node: tracelake_collector::NodeConfig {
                id: config.node_id.clone(),
                ingest: roles.ingest,
                compact: roles.compactor,
                lease_ttl: config.compactor_lease_ttl,
            },
            kafka: config.kafka.clone(),
            dedicated: config.dedicated.clone(),
        },
        query_role: roles.query,
        peers: config.peers.clone(),
        root: config.storage_root.clone(),
        wal_root: config.wal_root.clone(),
        query: QueryConfig {
            executor: config.query.clone(),
            memory_limit_bytes: config.query_memory_limit_bytes,
            trace_metadata_bytes: config.query_trace_metadata_bytes,
            max_result_rows: config.query_max_rows,
            distributed: config.distributed.clone(),
        },
        max_tenants: config.max_tenants,
    };
    let tenants = Tenants::start(setup, limits, Arc::clone(&metrics)).await?;

    let mut registry = Registry::default();
    metrics.register(&mut registry);
    tenants.engine().executor().register_metrics(&mut registry);
    tenants
        .engine()
        .trace_metadata()
        .register_metrics(&mut registry);
    if let Some(peers) = &config.peers {
        peers.metrics.register(&mut registry);
    }
    if config.kafka.is_some() {
        metrics.kafka.register(&mut registry);
    }
    let auth_metrics = Arc::new(auth::AuthMetrics::default());
    if tokens.is_some() {
        auth_metrics.register(&mut registry);
    }
    let tls_metrics = Arc::new(tls::TlsMetrics::default());
    if tls.is_some() {
        tls_metrics.register(&mut registry);
    }
    let health = Arc::new(Health {
        ready: AtomicBool::new(false),
        registry,
        root: config.storage_root.clone(),
        ingests: roles.ingest,
        tenants: Arc::clone(&tenants),
        peers: config.peers.as_ref().map(|p| Arc::clone(&p.metrics)),
        storage_checked: tokio::sync::Mutex::new(None),
    });
    // What is not any tenant's: health, readiness, the server's metrics and
    // (on a query node) the web UI's page and files (code, no data).
    let mut http = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .with_state(Arc::clone(&health));
    if roles.query {
        http = http.merge(tracelake_ui::router());
    }
    let file = match &config.sampling_strategies_file {
        Some(path) => Some(sampling::watch_strategies(path.clone())?),
        None => None,
    };
    let adaptive = config
        .adaptive_sampling
        .map(|settings| sampling::adaptive(tenants.engine_arc(), settings));
    let strategies =
        (file.is_some() || adaptive.is_some()).then(|| sampling::Provider { file, adaptive });
    if let Some(provider) = &strategies {
        http = http.merge(sampling::router("/jaeger/api/sampling", provider.clone()));
    }
    let http = http.merge(tenants::dispatch(
        Arc::clone(&tenants),
        auth::Listener::Http,
    ));
    let dispatch = |listener| tenants::dispatch(Arc::clone(&tenants), listener);

    // Stopping goes in two steps: the ports that take spans close first;
    // the query ports (the API with /ready, Flight SQL) keep answering
    // while the buffer is flushed, /ready saying 503, and close last.
    let (stop_ingest_tx, stop_ingest) = watch::channel(false);
    let (stop_queries_tx, stop_queries) = watch::channel(false);
    let servers = [
        (
            "otlp-grpc",
            config.otlp_grpc_listen,
            dispatch(auth::Listener::OtlpGrpc),
            auth::Listener::OtlpGrpc,
            true,
        ),
        (
            "otlp-http",
            config.otlp_http_listen,
            dispatch(auth::Listener::OtlpHttp),
            auth::Listener::OtlpHttp,
            true,
        ),
        (
            "http",
            config.http_listen,
            http,
            auth::Listener::Http,
            false,
        ),
        (
            "zipkin",
            config.zipkin_listen,
            dispatch(auth::Listener::Zipkin),
            auth::Listener::Zipkin,
            true,
        ),
        (
            "jaeger-http",
            config.jaeger_http_listen,
            dispatch(auth::Listener::JaegerHttp),
            auth::Listener::JaegerHttp,
            true,
        ),
        (
            "flight-sql",
            config.flight_sql_listen,
            dispatch(auth::Listener::FlightSql),
            auth::Listener::FlightSql,
            false,
        ),
    ];
    // Jaeger remote sampling, on a port of its own, when there are
    // strategies to answer.
    let sampling = strategies.map(|strategies| {
        (
            "jaeger-sampling",
            config.jaeger_sampling_listen,
            fallback::with_fallbacks(
                sampling::router("/sampling", strategies),
                fallback::JAEGER_SAMPLING,
            ),
            auth::Listener::JaegerSampling,
            false,
        )
    });
    // Each role's ports: the receivers on ingest nodes, Flight SQL on query
    // nodes, Zipkin's (receiver and query API) on either, the HTTP port
    // (health, readiness, metrics) everywhere.
    let servers = servers
        .into_iter()
        .chain(sampling)
        .filter(|(name, _, _, _, takes_spans)| match *name {
            "zipkin" => roles.ingest || roles.query,
            "flight-sql" => roles.query,
            _ => !takes_spans || roles.ingest,
        });
    let mut ingest_tasks = Vec::new();
    let mut query_tasks = Vec::new();
    // (name, address, routes, auth, whether it takes spans)
    for (name, addr, mut router, listener, takes_spans) in servers {
        // The guard goes over the tenants' fallbacks too: without a token
        // even a wrong path is 401, so nothing about the port is learnt.
        if let Some(tokens) = &tokens {
            router = auth::Guard::new(tokens.clone(), listener, Arc::clone(&auth_metrics))
                .protect(router);
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({name})"))?;
        let stop = if takes_spans {
            stop_ingest.clone()
        } else {
            stop_queries.clone()
        };
        let task = match &tls {
            Some(configs) => {
                tracing::info!(%addr, "{name} listening (TLS)");
                let listener = tls::TlsListener::new(
                    name,
                    listener,
                    configs.clone(),
                    Arc::clone(&tls_metrics),
                )
                .with_context(|| format!("cannot listen on {addr} ({name})"))?;
                tokio::spawn(run_server(name, listener, router, stop))
            }
            None => {
                tracing::info!(%addr, "{name} listening");
                tokio::spawn(run_server(name, listener, router, stop))
            }
        };
        if takes_spans {
            ingest_tasks.push(task);
        } else {
            query_tasks.push(task);
        }
    }
    // Jaeger agents send UDP datagrams with no room for a token: with auth
    // on, those ports would let anyone write, so they stay closed unless
    // that is asked for.
    let udp = if !roles.ingest {
        Vec::new()
    } else if tokens.is_some() && !config.jaeger_udp_without_auth {
        tracing::info!(
            "Jaeger agent UDP receivers are off: UDP cannot carry a token (set \
             --jaeger-udp-without-auth true to receive there without one)"
        );
        Vec::new()
    } else {
        if tokens.is_some() {
            tracing::warn!(
                "Jaeger agent UDP receivers take spans without a token \
                 (--jaeger-udp-without-auth): anyone who reaches them can write"
            );
        }
        vec![
            (
                "jaeger-compact",
                config.jaeger_compact_listen,
                tracelake_protocols::jaeger::Protocol::Compact,
            ),
            (
                "jaeger-binary",
                config.jaeger_binary_listen,
                tracelake_protocols::jaeger::Protocol::Binary,
            ),
        ]
    };
    for (name, addr, protocol) in udp {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot listen on udp {addr} ({name})"))?;
        tracing::info!(%addr, "{name} listening (udp)");
        // Datagrams carry no tenant: they are the default tenant's.
        let udp = tenants.default_tenant().with_collector(|c| {
            c.and_then(|c| c.jaeger_udp(socket, protocol, stop_ingest.clone()))
        });
        if let Some(udp) = udp {
            ingest_tasks.push(tokio::spawn(udp));
        }
    }
    // The distributed SQL worker, on the query runtime: the stages it runs
    // are query work like any other.
    if let Some(addr) = config.sql_worker_listen {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} (sql-worker)"))?;
        listener.set_nonblocking(true)?;
        let engine = tenants.engine();
        let token = config.peer_token.clone();
        let worker = tracelake_query::distributed::worker(
            Arc::clone(engine.runtime()),
            token.clone(),
            config.cluster_tls.clone(),
        );
        let routes = tracelake_query::distributed::worker_routes(worker, token);
        let stop = stop_queries.clone();
        let tls = tls.clone();
        let tls_metrics = Arc::clone(&tls_metrics);
        tracing::info!(%addr, "sql-worker listening{}", if tls.is_some() { " (TLS)" } else { "" });
        let task = engine.executor().spawn_service(async move {
            // Registered with the query runtime, which polls it.
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "sql-worker cannot listen");
                    return;
                }
            };
            match tls {
                Some(configs) => {
                    match tls::TlsListener::new("sql-worker", listener, configs, tls_metrics) {
                        Ok(listener) => run_server("sql-worker", listener, routes, stop).await,
                        Err(error) => tracing::error!(%error, "sql-worker cannot listen"),
                    }
                }
                None => {
                    // gRPC streams of small messages: no Nagle delays.
                    use axum::serve::ListenerExt as _;
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    run_server("sql-worker", listener, routes, stop).await
                }
            }
        });
        query_tasks.push(task);
    }
    health.ready.store(true, Ordering::SeqCst);

    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests, then flushing the buffer");
    health.ready.store(false, Ordering::SeqCst);
    stop_ingest_tx.send_replace(true);
    for task in ingest_tasks {
        let _ = task.await;
    }
    tenants.shutdown().await;
    stop_queries_tx.send_replace(true);
    for task in query_tasks {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn run_server<L>(
    name: &'static str,
    listener: L,
    router: Router,
    mut stop: watch::Receiver<bool>,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "{name} server failed");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Ready once started and until stopping, and (tables on an object store)
/// while the store answers: every role needs it. The first line says so;
/// the lines after it tell the state of each dependency of this node's
/// roles: the store, the compactor lease of each open tenant (a node
/// waiting for it is ready: it takes over when the holder dies), and how
/// each ingest node last answered (one that did not makes answers partial,
/// not impossible).
async fn ready(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if !health.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_string());
    }
    let storage = health.storage_reachable().await;
    let mut lines = vec![match &storage {
        Ok(()) => "ready".to_string(),
        Err(reason) => format!("not ready: {reason}"),
    }];
    if health.root.scheme() != "file" {
        lines.push(match (&storage, health.ingests) {
            (Ok(()), false) => format!("storage {}: reachable", health.root),
            (Ok(()), true) => format!(
                "storage {}: not checked (an ingest node keeps acknowledging into its WAL \
                 through an outage)",
                health.root
            ),
            (Err(reason), _) => format!("storage {}: {reason}", health.root),
        });
    }
    for (tenant, lease) in health.tenants.leases() {
        use tracelake_collector::lease::LeaseState;
        let state = match lease {
            LeaseState::Held => "held by this node".to_string(),
            LeaseState::Other(node) => format!("held by {node}; this node stands by"),
            LeaseState::Unknown => "not known yet (store not read)".to_string(),
        };
        lines.push(format!("compactor lease of tenant {tenant}: {state}"));
    }
    if let Some(kafka) = health
        .tenants
        .default_tenant()
        .with_collector(|c| c?.kafka())
    {
        let (connection, partitions) = kafka.states();
        if let Some(problem) = connection {
            lines.push(format!("kafka: {problem}"));
        }
        for p in partitions {
            let committed = p
                .committed
                .map_or("nothing".to_string(), |o| format!("offset {o}"));
            lines.push(match p.error {
                None => format!(
                    "kafka {}/{}: consuming, {committed} in the table, lag {}",
                    p.topic, p.partition, p.lag
                ),
                Some(error) => format!(
                    "kafka {}/{}: {error} ({committed} in the table, lag {})",
                    p.topic, p.partition, p.lag
                ),
            });
        }
    }
    if let Some(peers) = &health.peers {
        let outcomes = peers.last_outcomes();
        if outcomes.is_empty() {
            lines.push("ingest nodes: not asked yet".to_string());
        }
        for (peer, outcome) in outcomes {
            let ago = outcome.at.elapsed().as_secs();
            lines.push(match outcome.error {
                None => format!("ingest node {peer}: answered {ago} s ago"),
                Some(error) => format!(
                    "ingest node {peer}: did not answer {ago} s ago ({error}); answers lack its \
                     buffered spans"
                ),
            });
        }
    }
    let status = if storage.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, lines.join("\n") + "\n")
}

async fn prometheus(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &health.registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {error}"),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
