//! The ingest nodes' buffered rows, for a query node (`--ingest-peers`):
//! every read asks each ingest node for the rows it has not committed yet
//! (`GET /api/v1/internal/buffer`, [`tracelake_schema::live`]) before it
//! reads the table, so that an acknowledged span is visible at once and,
//! once its node's watermark in the table covers it, only from the table
//! (`query::table`). The nodes are a static list or a DNS name that
//! resolves to several addresses, read again at every request.
//!
//! A node that does not answer (within 2 s, or with an error) leaves the
//! answer partial, not failed: its committed rows are in the table, its
//! buffered ones are missing, and the request's scope carries a warning
//! that the response shows (`Warning` header).

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use tracelake_schema::live::{GROUPS_HEADER, WRITER_HEADER, decode};

use crate::executor::Scope;
use crate::table::{LiveSnapshot, LiveSpans};

/// How long one ingest node may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest error text of a peer carried into a warning.
const MAX_ERROR_CHARS: usize = 200;

/// Where the ingest nodes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// `host:port` of each node's HTTP port.
    Static(Vec<String>),
    /// `dns+name:port`: every address the name resolves to.
    Dns(String),
}

impl std::str::FromStr for Peers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let check = |peer: &str| -> Result<(), String> {
            match peer.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
                _ => Err(format!("{peer:?} is not host:port")),
            }
        };
        if let Some(name) = text.strip_prefix("dns+") {
            check(name)?;
            return Ok(Peers::Dns(name.to_string()));
        }
        let peers: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        if peers.is_empty() {
            return Err("no node named".into());
        }
        for peer in &peers {
            check(peer)?;
        }
        Ok(Peers::Static(peers))
    }
}

impl Peers {
    /// The addresses to ask now.
    async fn resolve(&self) -> Result<Vec<String>, String> {
        match self {
            Peers::Static(peers) => Ok(peers.clone()),
            Peers::Dns(name) => {
                let lookup = tokio::net::lookup_host(name.as_str());
                let addrs: Vec<SocketAddr> = tokio::time::timeout(PEER_TIMEOUT, lookup)
                    .await
                    .map_err(|_| format!("resolving {name}: no answer within {PEER_TIMEOUT:?}"))?
                    .map_err(|e| format!("resolving {name}: {e}"))?
                    .collect();
                let mut addrs: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
                addrs.sort();
                addrs.dedup();
                Ok(addrs)
            }
        }
    }
}

/// What asking the ingest nodes cost and how it went (`/metrics`).
#[derive(Debug, Default)]
pub struct PeerMetrics {
    /// Requests to ingest nodes, by `outcome` (`ok`, `failed`).
    pub fetches: prometheus_client::metrics::family::Family<
        [(&'static str, &'static str); 1],
        prometheus_client::metrics::counter::Counter,
    >,
    /// Buffered rows received from ingest nodes.
    pub rows: prometheus_client::metrics::counter::Counter,
    /// Each ingest node's last answer (for `/ready`).
    last: std::sync::Mutex<std::collections::BTreeMap<String, PeerOutcome>>,
}

/// How an ingest node last answered.
#[derive(Debug, Clone)]
pub struct PeerOutcome {
    pub at: std::time::Instant,
    /// The error, when it did not hand its rows over.
    pub error: Option<String>,
}

impl PeerMetrics {
    /// Each ingest node asked so far (by address) and its last answer.
    pub fn last_outcomes(&self) -> Vec<(String, PeerOutcome)> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn record(&self, peer: &str, error: Option<String>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        // Addresses a DNS name no longer gives are forgotten after a while.
        last.retain(|_, o| o.at.elapsed() < std::time::Duration::from_secs(300));
        last.insert(
            peer.to_string(),
            PeerOutcome {
                at: std::time::Instant::now(),
                error,
            },
        );
    }

    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "tracelake_peer_fetches",
            "Requests for buffered rows to ingest nodes, by outcome (ok, failed: the answer was \
             partial)",
            self.fetches.clone(),
        );
        registry.register(
            "tracelake_peer_rows",
            "Buffered rows received from ingest nodes",
            self.rows.clone(),
        );
    }
}

/// How a query node reaches the ingest nodes.
#[derive(Clone)]
pub struct PeersConfig {
    pub peers: Peers,
    /// TLS (the nodes' ports speak it): their certificates checked against
    /// the cluster's CAs, this node's own presented when asked.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// A token with the `query` scope on the ingest nodes, when they
    /// require tokens.
    pub token: Option<String>,
    pub metrics: std::sync::Arc<PeerMetrics>,
}

/// One tenant's rows on the ingest nodes.
pub struct IngestPeers {
    config: PeersConfig,
    tenant: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for PeersConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeersConfig")
            .field("peers", &self.peers)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl PeersConfig {
    /// The HTTP client of requests to the ingest nodes; an error only for
    /// TLS settings the client cannot take (checked at start).
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder().timeout(PEER_TIMEOUT);
        if let Some(tls) = &self.tls {
            let mut tls = (**tls).clone();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            builder = builder.use_preconfigured_tls(tls);
        }
        builder
            .build()
            .map_err(|e| format!("the client for ingest nodes: {e}"))
    }
}

impl IngestPeers {
    pub fn new(config: PeersConfig, tenant: &str) -> Self {
        // Checked at start ([`PeersConfig::client`]).
        let client = config.client().unwrap_or_else(|error| {
            tracing::error!(%error, "ingest nodes asked without TLS settings");
            reqwest::Client::default()
        });
        Self {
            config,
            tenant: tenant.to_string(),
            client,
        }
    }

    /// The node's buffered rows: its own, then those of its other writers
    /// (Kafka partitions).
    async fn ask(
        &self,
        peer: &str,
        trace_id: Option<&[u8; 16]>,
    ) -> Result<Vec<LiveSnapshot>, String> {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut url = format!("{scheme}://{peer}/api/v1/internal/buffer");
        if let Some(id) = trace_id {
            url.push_str(&format!("?trace_id={}", hex::encode(id)));
        }
        let mut request = self.client.get(&url).header("x-scope-orgid", &self.tenant);
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND
            && response.headers().contains_key(WRITER_HEADER)
        {
            // The tenant is not open there: nothing buffered.
            return Ok(vec![LiveSnapshot::default()]);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(MAX_ERROR_CHARS).collect();
            return Err(format!("{status}: {body}"));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| format!("no {name} header (not a tracelake ingest node?)"))
        };
        let writer = header(WRITER_HEADER)?;
        let groups = header(GROUPS_HEADER)?;
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let sources = decode(&groups, &body).map_err(|e| e.to_string())?;
        let mut own = LiveSnapshot {
            writer: Some(writer),
            groups: Vec::new(),
        };
        let mut others = Vec::new();
        for (source, groups) in sources {
            match source {
                None => own.groups = groups,
                Some(writer) => others.push(LiveSnapshot {
                    writer: Some(writer),
                    groups,
                }),
            }
        }
        let mut out = vec![own];
        out.extend(others);
        Ok(out)
    }
}

#[async_trait]
impl LiveSpans for IngestPeers {
    async fn snapshot(&self, trace_id: Option<&[u8; 16]>) -> Vec<LiveSnapshot> {
        let scope = Scope::current_or(PEER_TIMEOUT);
        let peers = match self.config.peers.resolve().await {
            Ok(peers) => peers,
            Err(error) => {
                scope.warn(format!(
                    "ingest nodes not asked for their newest spans ({error}): the answer may \
                     lack spans not yet in the table"
                ));
                return Vec::new();
            }
        };
        let answers =
            futures::future::join_all(peers.iter().map(|peer| self.ask(peer, trace_id))).await;
        let mut out: Vec<LiveSnapshot> = Vec::with_capacity(answers.len());
        for (peer, answer) in peers.iter().zip(answers) {
            match answer {
                Ok(snapshots) => {
                    self.config.metrics.record(peer, None);
                    self.config
                        .metrics
                        .fetches
                        .get_or_create(&[("outcome", "ok")])
                        .inc();
                    for snapshot in snapshots {
                        // One node reached twice (a name and its address,
                        // IPv4 and IPv6): its rows once.
                        if snapshot.writer.is_some()
                            && out.iter().any(|s| s.writer == snapshot.writer)
                        {
                            continue;
                        }
                        let rows: usize = snapshot
                            .groups
                            .iter()
                            .flat_map(|(_, batches)| batches)
                            .map(arrow::array::RecordBatch::num_rows)
                            .sum();
                        self.config.metrics.rows.inc_by(rows as u64);
                        out.push(snapshot);
                    }
                }
                Err(error) => {
                    self.config.metrics.record(peer, Some(error.clone()));
                    self.config
                        .metrics
                        .fetches
                        .get_or_create(&[("outcome", "failed")])
                        .inc();
                    tracing::warn!(%peer, %error, "ingest node did not hand over its buffered rows");
                    scope.warn(format!(
                        "ingest node {peer} did not answer ({error}): the answer lacks its spans \
                         not yet in the table"
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        assert_eq!(
            "a:3200, 10.0.0.2:3200".parse::<Peers>(),
            Ok(Peers::Static(vec!["a:3200".into(), "10.0.0.2:3200".into()]))
        );
        assert_eq!(
            "dns+ingest.svc:3200".parse::<Peers>(),
            Ok(Peers::Dns("ingest.svc:3200".into()))
        );
        for bad in ["", "a", "a:x", ":3200", "dns+a"] {
            assert!(bad.parse::<Peers>().is_err(), "{bad:?}");
        }
    }
}
