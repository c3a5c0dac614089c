//! Tenants: each has its own write-ahead log (`<data-dir>/wal/<tenant>`),
//! its own Delta table (`<root>/tenants/<tenant>/spans`), its own collector
//! (buffer, flush, compaction, retention) and its own query engine, whose
//! session knows no table but that tenant's `spans`; the query threads,
//! admission control and memory pool are shared ([`QueryEngine::for_table`]).
//!
//! Every TCP listener serves one router that picks the request's tenant
//! and hands the request to that tenant's routers ([`dispatch`]): the
//! token's tenant when tokens are on (one of the token's `tenants`, chosen
//! with `X-Scope-OrgID`), otherwise `X-Scope-OrgID` (HTTP header or gRPC
//! metadata) as Tempo reads it, or the default tenant when absent. So
//! every API — ingest, the native, Jaeger, Zipkin and Tempo APIs, SQL over
//! HTTP and Flight SQL, the UI — reads and writes one tenant's data, with
//! no handler knowing about tenants.
//!
//! A tenant starts at its first request (or at start, when its WAL or
//! table is on disk, so that unflushed spans are replayed and retention
//! and compaction run); at most `--max-tenants` are open.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use parking_lot::Mutex;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;
use tracelake_collector::ingest::IngestLimits;
use tracelake_collector::metrics::Metrics;
use tracelake_collector::{Collector, CollectorConfig};
use tracelake_query::QueryEngine;
use url::Url;

use crate::auth::{self, Identity, Listener};
use crate::config::{DEFAULT_TENANT, tenant_table_url};
use crate::fallback;
use crate::limits::{LimitsFile, TenantLimits};

/// The header (and gRPC metadata key) naming the tenant, as Tempo's.
pub(crate) const TENANT_HEADER: &str = "x-scope-orgid";

/// One tenant's write and read sides and its routers.
pub(crate) struct Tenant {
    id: String,
    /// The generation of the limits file last applied.
    limits_generation: std::sync::atomic::AtomicU64,
    collector: Mutex<Option<Collector>>,
    engine: Arc<QueryEngine>,
    routers: Routers,
    /// Query requests at once: `max_concurrent_queries` and its slots.
    queries: Mutex<(Option<usize>, Option<Arc<Semaphore>>)>,
}

/// A router per TCP listener.
struct Routers {
    otlp_grpc: Router,
    otlp_http: Router,
    http: Router,
    zipkin: Router,
    jaeger_http: Router,
    flight_sql: Router,
}

impl Tenant {
    fn router(&self, listener: Listener) -> Router {
        match listener {
            Listener::OtlpGrpc => &self.routers.otlp_grpc,
            Listener::OtlpHttp => &self.routers.otlp_http,
            Listener::Http => &self.routers.http,
            Listener::Zipkin => &self.routers.zipkin,
            Listener::JaegerHttp => &self.routers.jaeger_http,
            Listener::FlightSql => &self.routers.flight_sql,
            Listener::JaegerSampling => unreachable!("the sampling port is no tenant's"),
        }
        .clone()
    }

    /// Applies `limits` from the next request (and retention check) on.
    fn apply(&self, limits: &TenantLimits) {
        if let Some(collector) = self.collector.lock().as_ref() {
            collector.set_limits(
                IngestLimits {
                    tenant: self.id.clone(),
                    rate_bytes_per_second: limits.ingestion_rate_bytes,
                    burst_bytes: limits.ingestion_burst_bytes,
                    max_spans_per_request: limits.max_spans_per_request,
                    max_bytes_per_trace: limits.max_bytes_per_trace,
                },
                limits.retention,
            );
        }
        self.engine.set_max_search_window(limits.max_search_window);
        let mut queries = self.queries.lock();
        if queries.0 != limits.max_concurrent_queries {
            // Requests holding a slot of the old semaphore finish on it.
            *queries = (
                limits.max_concurrent_queries,
                limits
                    .max_concurrent_queries
                    .map(|n| Arc::new(Semaphore::new(n))),
            );
        }
    }

    /// A query slot, when the tenant limits its concurrent queries: `None`
    /// when there is no limit, `Some(Err(max))` when every slot is taken.
    fn query_slot(&self) -> Option<Result<OwnedSemaphorePermit, usize>> {
        let (max, semaphore) = self.queries.lock().clone();
        let semaphore = semaphore?;
        Some(semaphore.try_acquire_owned().map_err(|_| max.unwrap_or(0)))
    }

    /// Runs `f` with the collector (`None` once shut down).
    pub(crate) fn with_collector<T>(&self, f: impl FnOnce(Option<&Collector>) -> T) -> T {
        f(self.collector.lock().as_ref())
    }
}

/// Every open tenant, and how to open another.
pub(crate) struct Tenants {
    /// Whether requests carry tokens: then a request without one (the
    /// web UI's open files) never picks or opens a tenant.
    auth: bool,
    /// Set once shutting down: no tenant opens any more.
    closing: std::sync::atomic::AtomicBool,
    /// Bumped by every change of the limits file; a tenant that applied an
    /// older one applies the current one at its next request.
    limits_generation: std::sync::atomic::AtomicU64,
    /// The limits file (an empty one without `--tenant-limits-file`).
    limits: watch::Receiver<Arc<LimitsFile>>,
    collector: CollectorConfig,
    query_role: bool,
    peers: Option<tracelake_query::peers::PeersConfig>,
    root: Url,
    wal_root: PathBuf,
    max_tenants: usize,
    metrics: Arc<Metrics>,
    /// The default tenant's engine, whose threads and memory pool every
    /// other tenant's engine shares.
    first_engine: Arc<QueryEngine>,
    open: Mutex<HashMap<String, Arc<OnceCell<Arc<Tenant>>>>>,
}

/// What every tenant is made from.
pub(crate) struct Setup {
    /// Whether tokens are required.
    pub(crate) auth: bool,
    /// The collector's settings (its table and WAL are set per tenant;
    /// its `node` says whether there is a collector at all).
    pub(crate) collector: CollectorConfig,
    /// Whether this node answers queries.
    pub(crate) query_role: bool,
    /// The ingest nodes a query node asks for their buffered rows.
    pub(crate) peers: Option<tracelake_query::peers::PeersConfig>,
    /// Where the tenants' tables and WAL directories are.
    pub(crate) root: Url,
    pub(crate) wal_root: PathBuf,
    pub(crate) query: tracelake_query::QueryConfig,
    pub(crate) max_tenants: usize,
}

impl Tenants {
    /// Opens the default tenant and every tenant with a WAL or table on
    /// disk (a `file://` root is listed; other stores open their tenants
    /// at the first request).
    pub(crate) async fn start(
        setup: Setup,
        limits: watch::Receiver<Arc<LimitsFile>>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Tenants>> {
        let Setup {
            auth,
            collector,
            query_role,
            peers,
            root,
            wal_root,
            query,
            max_tenants,
        } = setup;
        let default_table = tenant_table_url(&root, DEFAULT_TENANT)?;
        let default = Self::start_collector(&collector, &wal_root, &root, DEFAULT_TENANT, &metrics)
            .await
            .with_context(|| format!("cannot start tenant {DEFAULT_TENANT}"))?;
        let first_engine = Arc::new(
            QueryEngine::new(
                default_table,
                live(default.as_ref(), peers.as_ref(), DEFAULT_TENANT),
                query,
            )
            .context("cannot start the query engine")?,
        );
        let tenants = Arc::new(Tenants {
            auth,
            closing: std::sync::atomic::AtomicBool::new(false),
            limits_generation: std::sync::atomic::AtomicU64::new(0),
            limits,
            collector,
            query_role,
            peers,
            root,
            wal_root,
            max_tenants,
            metrics,
            first_engine: Arc::clone(&first_engine),
            open: Mutex::new(HashMap::new()),
        });
        let tenant = Arc::new(Tenant {
            limits_generation: std::sync::atomic::AtomicU64::new(0),
            id: DEFAULT_TENANT.to_string(),
            routers: routers(default.as_ref(), query_role.then_some(&first_engine)),
            collector: Mutex::new(default),
            engine: first_engine,
            queries: Mutex::new((None, None)),
        });
        tenant.apply(&tenants.limits_of(DEFAULT_TENANT));
        tenants.open.lock().insert(
            DEFAULT_TENANT.to_string(),
            Arc::new(OnceCell::new_with(Some(tenant))),
        );
        // The limits file changes: every open tenant takes its new limits.
        let watcher = Arc::downgrade(&tenants);
        let mut changes = tenants.limits.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(tenants) = watcher.upgrade() else {
                    return;
                };
                // A tenant opening now may have read the old file: it sees
                // the new generation at its first request.
                let generation = tenants.limits_generation.fetch_add(1, Ordering::SeqCst) + 1;
                for tenant in tenants.open_tenants() {
                    tenant.limits_generation.store(generation, Ordering::SeqCst);
                    tenant.apply(&tenants.limits_of(&tenant.id));
                }
            }
        });
        // A tenant that does not open is logged and left closed (its
        // requests get 503): one broken tenant does not stop the others.
        tenants.open_stored().await;
        // A compactor keeps tenants in shape that other nodes create: it
        // looks for new tables as often as it looks for work.
        if tenants.collector.node.compact {
            let every = tenants.collector.compaction.check_every;
            let watcher = Arc::downgrade(&tenants);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match watcher.upgrade() {
                        Some(tenants) if !tenants.closing.load(Ordering::SeqCst) => {
                            tenants.open_stored().await;
                        }
                        _ => return,
                    }
                }
            });
        }
        Ok(tenants)
    }

    /// Opens every tenant found on disk or in the bucket that is not open.
    async fn open_stored(&self) {
        for id in self.on_disk().await {
            if id == DEFAULT_TENANT || self.open.lock().contains_key(&id) {
                continue;
            }
            if let Err((_, message)) = self.get(&id).await {
                tracing::warn!(tenant = %id, "tenant on disk not opened: {message}");
            }
        }
    }

    /// The tenant's collector, or `None` on a node that neither ingests
    /// nor compacts.
    async fn start_collector(
        template: &CollectorConfig,
        wal_root: &std::path::Path,
        root: &Url,
        id: &str,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Collector>> {
        if !template.node.ingest && !template.node.compact {
            return Ok(None);
        }
        let config = CollectorConfig {
            tenant: id.to_string(),
            table_url: tenant_table_url(root, id)?,
            wal_dir: wal_root.join(id),
            // Kafka's spans go to the default tenant.
            kafka: template.kafka.clone().filter(|_| id == DEFAULT_TENANT),
            ..template.clone()
        };
        Ok(Some(Collector::start(config, Arc::clone(metrics)).await?))
    }

    /// Tenant ids with a WAL directory or a table (under `tenants/` of the
    /// storage root, local or an object store).
    async fn on_disk(&self) -> Vec<String> {
        let mut dirs = vec![self.wal_root.clone()];
        if let Ok(root) = self.root.to_file_path() {
            dirs.push(root.join("tenants"));
        }
        let mut ids: Vec<String> = dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        if self.root.scheme() != "file" {
            match tracelake_collector::s3::children(&self.root, "tenants/").await {
                Ok(stored) => ids.extend(stored),
                Err(error) => {
                    tracing::warn!(root = %self.root, %error, "cannot list the tenants' tables");
                }
            }
        }
        ids.retain(|id| auth::check_tenant(id).is_ok());
        ids.sort();
        ids.dedup();
        ids
    }

    /// The tenant `id` (already validated), started if need be. The error
    /// is the status and message to answer with.
    pub(crate) async fn get(&self, id: &str) -> Result<Arc<Tenant>, (StatusCode, String)> {
        let cell = {
            let mut open = self.open.lock();
            match open.get(id) {
                Some(cell) => Arc::clone(cell),
                None if self.closing.load(Ordering::SeqCst) => {
                    return Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("tenant {id:?} cannot be opened: the server is stopping"),
                    ));
                }
                None => {
                    if open.len() >= self.max_tenants {
                        return Err((
                            StatusCode::TOO_MANY_REQUESTS,
                            format!(
                                "tenant {id:?} cannot be opened: {} tenants are open, the most \
                                 --max-tenants allows",
                                open.len()
                            ),
                        ));
                    }
                    let cell = Arc::new(OnceCell::new());
                    open.insert(id.to_string(), Arc::clone(&cell));
                    cell
                }
            }
        };
        let tenant = match cell.get_or_try_init(|| self.start_tenant(id)).await {
            Ok(tenant) => Arc::clone(tenant),
            Err(error) => {
                tracing::error!(tenant = id, "cannot start tenant: {error:#}");
                // The slot is not kept by a tenant that did not open.
                let mut open = self.open.lock();
                if open
                    .get(id)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
                {
                    open.remove(id);
                }
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("tenant {id:?} cannot be opened now; the server's log has the details"),
                ));
            }
        };
        let generation = self.limits_generation.load(Ordering::SeqCst);
        if tenant.limits_generation.swap(generation, Ordering::SeqCst) != generation {
            tenant.apply(&self.limits_of(id));
        }
        Ok(tenant)
    }

    async fn start_tenant(&self, id: &str) -> anyhow::Result<Arc<Tenant>> {
        let table_url = tenant_table_url(&self.root, id)?;
        let collector = Self::start_collector(
            &self.collector,
            &self.wal_root,
            &self.root,
            id,
            &self.metrics,
        )
        .await
        .with_context(|| format!("cannot start tenant {id}"))?;
        let engine = Arc::new(
            self.first_engine
                .for_table(table_url, live(collector.as_ref(), self.peers.as_ref(), id))
                .with_context(|| format!("cannot start the query engine of tenant {id}"))?,
        );
        tracing::info!(tenant = id, "tenant opened");
        let generation = self.limits_generation.load(Ordering::SeqCst);
        let tenant = Arc::new(Tenant {
            limits_generation: std::sync::atomic::AtomicU64::new(generation),
            id: id.to_string(),
            routers: routers(collector.as_ref(), self.query_role.then_some(&engine)),
            collector: Mutex::new(collector),
            engine,
            queries: Mutex::new((None, None)),
        });
        tenant.apply(&self.limits_of(id));
        Ok(tenant)
    }

    /// `id`'s limits as the file says now.
    fn limits_of(&self, id: &str) -> TenantLimits {
        self.limits
            .borrow()
            .for_tenant(id, self.collector.retention.max_age)
    }

    /// Whether tenant `id` is open here.
    fn is_open(&self, id: &str) -> bool {
        self.open
            .lock()
            .get(id)
            .is_some_and(|cell| cell.initialized())
    }

    /// The open tenants' compactor leases as this node knows them, by
    /// tenant (a compactor node on an object store; elsewhere none).
    pub(crate) fn leases(&self) -> Vec<(String, tracelake_collector::lease::LeaseState)> {
        let mut out: Vec<_> = self
            .open_tenants()
            .iter()
            .filter_map(|t| Some((t.id.clone(), t.with_collector(|c| c?.lease_state())?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn open_tenants(&self) -> Vec<Arc<Tenant>> {
        self.open
            .lock()
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect()
    }

    /// The default tenant.
    pub(crate) fn default_tenant(&self) -> Arc<Tenant> {
        self.open.lock()[DEFAULT_TENANT]
            .get()
            .cloned()
            .expect("the default tenant opens at start")
    }

    /// The query engine every tenant's shares threads and memory with.
    pub(crate) fn engine(&self) -> &QueryEngine {
        &self.first_engine
    }

    /// The default tenant's engine, shared.
    pub(crate) fn engine_arc(&self) -> Arc<QueryEngine> {
        Arc::clone(&self.first_engine)
    }

    /// Flushes and closes every tenant's collector (after the listeners
    /// that take spans have stopped).
    pub(crate) async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let tenants = self.open_tenants();
        let collectors = tenants
            .iter()
            .filter_map(|t| t.collector.lock().take())
            .map(Collector::shutdown);
        futures::future::join_all(collectors).await;
    }
}

/// The query side's rows not yet in the table: an ingest node's own
/// buffer, or a query node's ingest peers'. Without either, queries read
/// the table only.
fn live(
    collector: Option<&Collector>,
    peers: Option<&tracelake_query::peers::PeersConfig>,
    tenant: &str,
) -> Option<Arc<dyn tracelake_query::LiveSpans>> {
    if let Some(collector) = collector.filter(|c| c.ingest.is_some()) {
        return Some(Arc::new(crate::BufferSource {
            buffer: Arc::clone(&collector.buffer),
            writer: collector.table.app_id().to_string(),
            kafka: collector.kafka(),
        }));
    }
    let peers = peers?.clone();
    Some(Arc::new(tracelake_query::peers::IngestPeers::new(
        peers, tenant,
    )))
}

/// The routers of a node's roles: the receivers with a collector that
/// ingests, the query APIs with `engine` (a node that answers queries).
fn routers(collector: Option<&Collector>, engine: Option<&Arc<QueryEngine>>) -> Routers {
    use tracelake_query::http;
    let receiver = |make: fn(&Collector) -> Router| collector.map(make).unwrap_or_default();
    let query = |make: fn(Arc<QueryEngine>) -> Router| {
        engine.map(|e| make(Arc::clone(e))).unwrap_or_default()
    };
    let zipkin_query = query(http::zipkin::router);
    let mut main = Router::new();
    if let Some(engine) = engine {
        main = http::v1::router(Arc::clone(engine))
            .nest("/zipkin", zipkin_query.clone())
            .nest("/jaeger", http::jaeger::router(Arc::clone(engine)))
            .nest("/tempo", http::tempo::router(Arc::clone(engine)))
            .merge(tracelake_query::streaming::router(Arc::clone(engine)));
    }
    Routers {
        otlp_grpc: fallback::with_fallbacks(
            receiver(Collector::otlp_grpc_router),
            fallback::OTLP_GRPC,
        ),
        otlp_http: fallback::with_fallbacks(
            receiver(Collector::otlp_http_router),
            fallback::OTLP_HTTP,
        ),
        http: fallback::with_fallbacks(
            main.merge(receiver(Collector::storage_router))
                .merge(receiver(Collector::live_router)),
            fallback::HTTP,
        ),
        zipkin: fallback::with_fallbacks(
            receiver(Collector::zipkin_router).merge(zipkin_query),
            fallback::ZIPKIN,
        ),
        jaeger_http: fallback::with_fallbacks(
            receiver(Collector::jaeger_http_router),
            fallback::JAEGER_HTTP,
        ),
        flight_sql: fallback::with_fallbacks(
            query(tracelake_query::flight::router),
            fallback::FLIGHT_SQL,
        ),
    }
}

/// The tenant a request acts for: with a token, the token's (the one
/// `X-Scope-OrgID` names, which the token must allow, else its first);
/// without, `X-Scope-OrgID` or the default tenant.
pub(crate) fn tenant_of(
    headers: &HeaderMap,
    identity: Option<&Identity>,
) -> Result<String, (StatusCode, String)> {
    let asked = match headers.get(TENANT_HEADER) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                (
                    StatusCode::BAD_REQUEST,
                    "invalid X-Scope-OrgID: not visible ASCII".to_string(),
                )
            })?;
            auth::check_tenant(text).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("invalid X-Scope-OrgID {text:?}: {e:#}"),
                )
            })?;
            Some(text.to_string())
        }
    };
    match (identity, asked) {
        (None, asked) => Ok(asked.unwrap_or_else(|| DEFAULT_TENANT.to_string())),
        (Some(identity), None) => Ok(identity.tenants[0].clone()),
        (Some(identity), Some(asked)) => {
            if identity.tenants.contains(&asked) {
                Ok(asked)
            } else {
                Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "token {:?} may not act for tenant {asked:?} (X-Scope-OrgID); it may for: {}",
                        identity.name,
                        identity.tenants.join(", ")
                    ),
                ))
            }
        }
    }
}

/// A listener's router: every request goes to its tenant's router for
/// that listener.
pub(crate) fn dispatch(tenants: Arc<Tenants>, listener: Listener) -> Router {
    Router::new()
        .fallback(route)
        .with_state((tenants, listener))
}

async fn route(
    State((tenants, listener)): State<(Arc<Tenants>, Listener)>,
    request: Request,
) -> Response {
    let grpc = auth::is_grpc(request.headers());
    let identity = request.extensions().get::<Identity>();
    // With tokens on, a request without one is for something open to all
    // (see auth::required_scope): it is the default tenant's, whatever its
    // headers say, so that no one without a token opens a tenant.
    let id = if tenants.auth && identity.is_none() {
        DEFAULT_TENANT.to_string()
    } else {
        match tenant_of(request.headers(), identity) {
            Ok(id) => id,
            Err((status, message)) => return auth::refuse(grpc, status, message),
        }
    };
    if listener == Listener::Http && request.uri().path() == "/api/v1/whoami" {
        return whoami(identity, id);
    }
    // A query node asking for a tenant's buffered rows never opens the
    // tenant here: one not open has none.
    if listener == Listener::Http
        && request.uri().path() == tracelake_collector::live::PATH
        && !tenants.is_open(&id)
    {
        return tracelake_collector::live::not_open(&id);
    }
    let tenant = match tenants.get(&id).await {
        Ok(tenant) => tenant,
        Err((status, message)) => return auth::refuse(grpc, status, message),
    };
    // A query of a tenant with `max_concurrent_queries` holds a slot until
    // its answer's body has been sent (a Flight SQL stream included).
    let slot = if auth::required_scope(listener, request.method(), request.uri().path())
        == Some(auth::Scope::Query)
    {
        match tenant.query_slot() {
            None => None,
            Some(Ok(permit)) => Some(permit),
            Some(Err(max)) => {
                tenants
                    .metrics
                    .limited
                    .get_or_create(&[
                        ("tenant", id.clone()),
                        ("limit", "max_concurrent_queries".to_string()),
                    ])
                    .inc();
                let mut response = auth::refuse(
                    grpc,
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "tenant {id:?} has {max} queries running, its max_concurrent_queries; \
                         retry later"
                    ),
                );
                if !grpc {
                    response
                        .headers_mut()
                        .insert(axum::http::header::RETRY_AFTER, 1.into());
                }
                return response;
            }
        }
    } else {
        None
    };
    let response = match tenant.router(listener).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    match slot {
        None => response,
        Some(permit) => response.map(|body| {
            axum::body::Body::new(Held {
                body,
                _permit: permit,
            })
        }),
    }
}

/// A response body that holds a query slot until it is dropped.
struct Held {
    body: axum::body::Body,
    _permit: OwnedSemaphorePermit,
}

impl axum::body::HttpBody for Held {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// `GET /api/v1/whoami`: the token (by name), the tenant the request acts
/// for, the tenants and scopes the token has; what the web UI shows.
fn whoami(identity: Option<&Identity>, tenant: String) -> Response {
    let body = match identity {
        Some(identity) => serde_json::json!({
            "auth": true,
            "token": &*identity.name,
            "tenant": tenant,
            "tenants": &*identity.tenants,
            "scopes": identity.scopes.names(),
        }),
        None => serde_json::json!({
            "auth": false,
            "token": null,
            "tenant": tenant,
            "tenants": [&tenant],
            "scopes": ["ingest", "query", "admin"],
        }),
    };
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(tenant: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = tenant {
            h.insert(TENANT_HEADER, t.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_tenant_of_a_request() {
        assert_eq!(tenant_of(&headers(None), None).unwrap(), DEFAULT_TENANT);
        assert_eq!(tenant_of(&headers(Some("shop")), None).unwrap(), "shop");
        for bad in ["..", "a/b", "a|b"] {
            let (status, message) = tenant_of(&headers(Some(bad)), None).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(message.contains("invalid X-Scope-OrgID"), "{message}");
        }
        let identity = Identity {
            name: "grafana".into(),
            tenants: vec!["shop".to_string(), "web".to_string()].into(),
            scopes: auth::Scopes::default(),
        };
        assert_eq!(tenant_of(&headers(None), Some(&identity)).unwrap(), "shop");
        assert_eq!(
            tenant_of(&headers(Some("web")), Some(&identity)).unwrap(),
            "web"
        );
        let (status, message) = tenant_of(&headers(Some("ops")), Some(&identity)).unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            message.contains("may not act for tenant \"ops\""),
            "{message}"
        );
    }
}
