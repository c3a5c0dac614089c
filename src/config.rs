//! Settings of `tracelake serve`.
//!
//! Every setting can come from a flag, an environment variable or the TOML
//! file named by `--config`; the precedence, in [`Settings::resolve`], is
//! flag > environment > file > built-in default. File keys are the flag names
//! with `_` for `-` (see `tracelake.example.toml`); unknown keys are an error.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use url::Url;

/// Declares the settings once: clap flags (with env vars) and TOML keys share
/// the field, [`Settings::or`] merges two sources field by field, and a
/// setting's `default` (in the form a user would write it) is both what
/// [`Settings::with_defaults`] fills in and what `--help` shows
/// ([`Settings::document_defaults`]). Settings without one are computed
/// where they are resolved.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty, env = $env:literal $(, default = $default:literal)?; )*) => {
        #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct Settings {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env)]
                pub(crate) $name: Option<$ty>,
            )*
        }

        impl Settings {
            /// `self`, with unset fields taken from `other`.
            fn or(self, other: Settings) -> Settings {
                Settings { $( $name: self.$name.or(other.$name), )* }
            }

            /// The declared defaults, as a user would write them.
            pub(crate) const DEFAULTS: &[(&str, &str)] = &[
                $( $( (stringify!($name), $default), )? )*
            ];

            /// `self`, with unset fields that have a default set to it.
            fn with_defaults(self) -> anyhow::Result<Settings> {
                Ok(Settings { $( $name: match self.$name {
                    Some(v) => Some(v),
                    None => default_of::<$ty>(stringify!($name), &[$($default)?])?,
                }, )* })
            }
        }
    };
}

/// `--dedicated-columns`: the configured columns, checked as a table's
/// layout would be (so that a bad list stops the start, naming the entry).
fn dedicated_columns(
    text: Option<&str>,
) -> anyhow::Result<Vec<tracelake_schema::layout::Configured>> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let configured = text
        .split(',')
        .map(|entry| entry.trim().parse())
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| anyhow::anyhow!("invalid --dedicated-columns: {e}"))?;
    tracelake_schema::layout::Layout::new(configured.clone())
        .map_err(|e| anyhow::anyhow!("invalid --dedicated-columns: {e}"))?;
    Ok(configured)
}

/// The default `texts` (none or one) of setting `name`, parsed.
fn default_of<T: std::str::FromStr>(name: &str, texts: &[&str]) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    texts
        .first()
        .map(|t| {
            t.parse()
                .map_err(|e| anyhow::anyhow!("the default of {name} ({t:?}) does not parse: {e}"))
        })
        .transpose()
}

settings! {
    /// What this process does: all, or a comma list of ingest (receivers,
    /// WAL, flushes), query (query APIs, Flight SQL, web UI) and compactor
    /// (compaction, retention, vacuum; one at a time per table, by a lease
    /// on object storage)
    role: String, env = "TRACELAKE_ROLE", default = "all";
    /// This node's name, unique among the nodes writing to one table and
    /// stable across restarts (its WAL's watermark is committed under it);
    /// needed by ingest nodes on object storage [default: none, the single
    /// node]
    node_id: String, env = "TRACELAKE_NODE_ID";
    /// Query nodes: the ingest nodes to ask for spans they have not
    /// committed yet, so that every acknowledged span is visible at once:
    /// host:port of their HTTP ports, comma-separated, or dns+name:port for
    /// every address a name resolves to [default: none: read the table
    /// only]
    ingest_peers: String, env = "TRACELAKE_INGEST_PEERS";
    /// Query nodes: serve a distributed SQL worker on this address (gRPC,
    /// plain HTTP/2: keep it on the cluster's private network)
    /// [default: none]
    sql_worker_listen: SocketAddr, env = "TRACELAKE_SQL_WORKER_LISTEN";
    /// Query nodes: plan users' SQL across these SQL workers (every query
    /// node's --sql-worker-listen, this one's included): host:port,
    /// comma-separated, or dns+name:port [default: none: this node alone]
    sql_workers: String, env = "TRACELAKE_SQL_WORKERS";
    /// Parquet bytes one distributed scan task reads: SQL scanning less
    /// stays on the node asked
    sql_worker_task_bytes: usize, env = "TRACELAKE_SQL_WORKER_TASK_BYTES", default = "16777216";
    /// Token sent to the ingest peers when they require tokens (a token
    /// with the query scope there), and the secret every call to a SQL
    /// worker must carry; set it in the environment
    peer_token: String, env = "TRACELAKE_PEER_TOKEN";
    /// Kafka receiver: bootstrap brokers, host:port comma-separated; set,
    /// an ingest node consumes --kafka-topics into the default tenant
    /// [default: none, no Kafka receiver]
    kafka_brokers: String, env = "TRACELAKE_KAFKA_BROKERS";
    /// Kafka topics and their encodings, topic=encoding comma-separated;
    /// encodings: otlp_proto, otlp_json, zipkin_proto, zipkin_json,
    /// jaeger_proto, jaeger_json
    kafka_topics: String, env = "TRACELAKE_KAFKA_TOPICS", default = "otlp_spans=otlp_proto";
    /// This node's share of the Kafka partitions, i/n: it consumes the
    /// partitions p with p % n == i of every topic (give each ingest node
    /// its own i)
    kafka_member: String, env = "TRACELAKE_KAFKA_MEMBER", default = "0/1";
    /// Kafka client id
    kafka_client_id: String, env = "TRACELAKE_KAFKA_CLIENT_ID", default = "tracelake";
    /// Where to start in a partition the table holds nothing of: earliest
    /// or latest
    kafka_start: String, env = "TRACELAKE_KAFKA_START", default = "earliest";
    /// TLS to the Kafka brokers (server certificates checked against
    /// --kafka-tls-ca-file, or the system's roots)
    kafka_tls: bool, env = "TRACELAKE_KAFKA_TLS", default = "false";
    /// PEM file of the CA certificates the Kafka brokers' certificates are
    /// checked against [default: the system's roots]
    kafka_tls_ca_file: PathBuf, env = "TRACELAKE_KAFKA_TLS_CA_FILE";
    /// SASL/PLAIN user name for the Kafka brokers (the password from
    /// TRACELAKE_KAFKA_SASL_PASSWORD) [default: no SASL]
    kafka_sasl_username: String, env = "TRACELAKE_KAFKA_SASL_USERNAME";
    /// SASL/PLAIN password for the Kafka brokers; set it in the environment
    kafka_sasl_password: String, env = "TRACELAKE_KAFKA_SASL_PASSWORD";
    /// Kafka topic that messages which do not decode are copied to (with
    /// headers saying why and whence) before they are skipped [default:
    /// none, they are only counted and logged]
    kafka_dead_letter_topic: String, env = "TRACELAKE_KAFKA_DEAD_LETTER_TOPIC";
    /// How often the Kafka topics' partitions are listed again: partitions
    /// added to a topic are consumed from then on
    kafka_metadata_refresh: String, env = "TRACELAKE_KAFKA_METADATA_REFRESH", default = "30s";
    /// Most bytes a Kafka partition's fetch asks for (a larger first
    /// record batch still comes whole); fetches stop while the buffered
    /// rows are over the ingest buffer's limit
    kafka_fetch_max_bytes: usize, env = "TRACELAKE_KAFKA_FETCH_MAX_BYTES", default = "4194304";
    /// How long a compactor's lease lasts without renewal (renewed every
    /// third of it): a compactor that dies is replaced after this
    compactor_lease_ttl: String, env = "TRACELAKE_COMPACTOR_LEASE_TTL", default = "30s";
    /// Local directory for the write-ahead log and, unless --storage-url is
    /// set, the table
    data_dir: PathBuf, env = "TRACELAKE_DATA_DIR", default = "./data";
    /// Root URL of the tables: file:///path, or s3://bucket/prefix (S3 or
    /// an S3-compatible store that honours conditional writes; credentials
    /// from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN)
    /// [default: the data directory]
    storage_url: String, env = "TRACELAKE_STORAGE_URL";
    /// Endpoint of an S3-compatible store for an s3:// --storage-url, e.g.
    /// http://127.0.0.1:9000 [default: AWS, by region; or AWS_ENDPOINT_URL]
    s3_endpoint: String, env = "TRACELAKE_S3_ENDPOINT";
    /// S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]
    s3_region: String, env = "TRACELAKE_S3_REGION";
    /// Path-style S3 requests (endpoint/bucket/key), which most
    /// S3-compatible stores need, instead of virtual-hosted style
    s3_path_style: bool, env = "TRACELAKE_S3_PATH_STYLE", default = "false";
    /// The address every listener binds to unless its own address is set
    /// (e.g. 127.0.0.1 to keep all ports on this machine)
    listen_address: IpAddr, env = "TRACELAKE_LISTEN_ADDRESS", default = "0.0.0.0";
    /// OTLP/gRPC listen address [default: <listen-address>:4317]
    otlp_grpc_listen: SocketAddr, env = "TRACELAKE_OTLP_GRPC_LISTEN";
    /// OTLP/HTTP listen address [default: <listen-address>:4318]
    otlp_http_listen: SocketAddr, env = "TRACELAKE_OTLP_HTTP_LISTEN";
    /// Query API, health and metrics listen address [default:
    /// <listen-address>:3200]
    http_listen: SocketAddr, env = "TRACELAKE_HTTP_LISTEN";
    /// Zipkin ingest and query API listen address [default:
    /// <listen-address>:9411]
    zipkin_listen: SocketAddr, env = "TRACELAKE_ZIPKIN_LISTEN";
    /// Jaeger thrift over HTTP (`POST /api/traces`) listen address [default:
    /// <listen-address>:14268]
    jaeger_http_listen: SocketAddr, env = "TRACELAKE_JAEGER_HTTP_LISTEN";
    /// Jaeger agent UDP, thrift compact [default: <listen-address>:6831]
    jaeger_compact_listen: SocketAddr, env = "TRACELAKE_JAEGER_COMPACT_LISTEN";
    /// Jaeger agent UDP, thrift binary [default: <listen-address>:6832]
    jaeger_binary_listen: SocketAddr, env = "TRACELAKE_JAEGER_BINARY_LISTEN";
    /// Jaeger remote sampling (`GET /sampling?service=`), served with
    /// --sampling-strategies-file [default: <listen-address>:5778]
    jaeger_sampling_listen: SocketAddr, env = "TRACELAKE_JAEGER_SAMPLING_LISTEN";
    /// Jaeger's sampling strategies file (JSON: service_strategies,
    /// default_strategy) answered to Jaeger SDKs on the sampling port and
    /// at /jaeger/api/sampling; reread when it changes and on SIGHUP
    /// [default: none: no sampling endpoint]
    sampling_strategies_file: PathBuf, env = "TRACELAKE_SAMPLING_STRATEGIES_FILE";
    /// Adaptive sampling, as Jaeger's: the traces per second to sample of
    /// each service's root operation. Probabilities are computed from the
    /// default tenant's stored root spans and answered on the sampling port
    /// for the services the strategies file does not list (query nodes)
    /// [default: none: off]
    adaptive_sampling_target: f64, env = "TRACELAKE_ADAPTIVE_SAMPLING_TARGET";
    /// How often adaptive sampling recomputes its probabilities
    adaptive_sampling_interval: String, env = "TRACELAKE_ADAPTIVE_SAMPLING_INTERVAL", default = "60s";
    /// The stored traffic adaptive sampling estimates each operation's rate from
    adaptive_sampling_lookback: String, env = "TRACELAKE_ADAPTIVE_SAMPLING_LOOKBACK", default = "10m";
    /// Arrow Flight SQL listen address [default: <listen-address>:4319]
    flight_sql_listen: SocketAddr, env = "TRACELAKE_FLIGHT_SQL_LISTEN";
    /// TOML file of access tokens (`[[tokens]]` with name, token_sha256,
    /// tenant, scopes); when set, every request on every TCP port but
    /// /health and /ready needs a token. Reread when it changes and on
    /// SIGHUP [default: none: anyone who reaches the ports may read and
    /// write]
    auth_tokens_file: PathBuf, env = "TRACELAKE_AUTH_TOKENS_FILE";
    /// With --auth-tokens-file, still receive Jaeger agent UDP (6831, 6832),
    /// which cannot carry a token: anyone who reaches those ports can then
    /// write spans
    jaeger_udp_without_auth: bool, env = "TRACELAKE_JAEGER_UDP_WITHOUT_AUTH", default = "false";
    /// PEM certificate chain (leaf first): with --tls-key-file, every TCP
    /// listener speaks TLS only. Reread when it changes and on SIGHUP
    /// [default: none: plain text]
    tls_cert_file: PathBuf, env = "TRACELAKE_TLS_CERT_FILE";
    /// PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1)
    tls_key_file: PathBuf, env = "TRACELAKE_TLS_KEY_FILE";
    /// PEM CA certificates: with TLS on, every client must present a
    /// certificate signed by one of them (mutual TLS) [default: none]
    tls_client_ca_file: PathBuf, env = "TRACELAKE_TLS_CLIENT_CA_FILE";
    /// Oldest TLS version accepted: 1.2 or 1.3
    tls_min_version: String, env = "TRACELAKE_TLS_MIN_VERSION", default = "1.2";
    /// PEM CA certificates that the other nodes' certificates are checked
    /// against when this node calls them over TLS (ingest nodes asked by
    /// --ingest-peers, SQL workers); it presents its own --tls-cert-file
    /// when they ask for one [default: the system's roots]
    cluster_ca_file: PathBuf, env = "TRACELAKE_CLUSTER_CA_FILE";
    /// TOML file of per-tenant limits (`[defaults]` and `[tenants.<id>]`:
    /// ingestion_rate_bytes, ingestion_burst_bytes, max_spans_per_request,
    /// retention, max_search_window, max_concurrent_queries); reread when
    /// it changes and on SIGHUP [default: none: no limits]
    tenant_limits_file: PathBuf, env = "TRACELAKE_TENANT_LIMITS_FILE";
    /// Tenants open at once (each has its own WAL, buffer, table and
    /// threads); a request for one more is refused with 429
    max_tenants: usize, env = "TRACELAKE_MAX_TENANTS", default = "100";
    /// Reject spans that started longer ago than this
    max_span_age: String, env = "TRACELAKE_MAX_SPAN_AGE", default = "7d";
    /// Remove hour partitions older than this from the table; 0s keeps
    /// everything
    retention: String, env = "TRACELAKE_RETENTION", default = "7d";
    /// How often retention runs
    retention_check_interval: String, env = "TRACELAKE_RETENTION_CHECK_INTERVAL", default = "5m";
    /// Delete files no longer in the table once they are this old
    vacuum_grace: String, env = "TRACELAKE_VACUUM_GRACE", default = "1h";
    /// How often closed hour partitions are looked at for compaction; 0s turns
    /// compaction off
    compaction_interval: String, env = "TRACELAKE_COMPACTION_INTERVAL", default = "1m";
    /// Compact an hour partition once its hour ended this long ago
    compaction_delay: String, env = "TRACELAKE_COMPACTION_DELAY", default = "10m";
    /// Size of a compacted file (an hour of more than 32 files first
    /// merges its smallest into one of up to 32 times this)
    compaction_target_bytes: u64, env = "TRACELAKE_COMPACTION_TARGET_BYTES", default = "268435456";
    /// Nice value of the compaction thread, so that ingest wins the CPU
    /// when both want it; 0 keeps the server's priority (compaction also
    /// waits while ingest keeps the flush busy)
    compaction_nice: i32, env = "TRACELAKE_COMPACTION_NICE", default = "10";
    /// Attributes that get a typed column of their own in every tenant's
    /// table, beside the built-in ones (Tempo's dedicated columns): a comma
    /// list of SET:KEY or SET:TYPE:KEY, SET span or resource, TYPE string
    /// (the default) or int; at most 20 string and 5 int columns per set.
    /// Columns are added, never removed [default: none]
    dedicated_columns: String, env = "TRACELAKE_DEDICATED_COLUMNS";
    /// Reject spans that start further in the future than this
    max_span_future: String, env = "TRACELAKE_MAX_SPAN_FUTURE", default = "1h";
    /// Largest request body, after decompression
    max_request_bytes: usize, env = "TRACELAKE_MAX_REQUEST_BYTES", default = "67108864";
    /// Buffered bytes above which ingest pushes back with 429 / UNAVAILABLE
    max_buffer_bytes: usize, env = "TRACELAKE_MAX_BUFFER_BYTES", default = "1073741824";
    /// Write buffered spans to the table once the oldest is this old
    flush_max_age: String, env = "TRACELAKE_FLUSH_MAX_AGE", default = "60s";
    /// Write buffered spans once they hold this many bytes
    flush_max_bytes: usize, env = "TRACELAKE_FLUSH_MAX_BYTES", default = "134217728";
    /// Size at which a WAL segment is closed
    wal_segment_bytes: u64, env = "TRACELAKE_WAL_SEGMENT_BYTES", default = "67108864";
    /// Time limit of one query request, over all the statements it runs
    query_timeout: String, env = "TRACELAKE_QUERY_TIMEOUT", default = "30s";
    /// Threads that run queries, apart from those that receive spans [default:
    /// the number of CPUs]
    query_threads: usize, env = "TRACELAKE_QUERY_THREADS";
    /// Nice value of the query threads, so that ingest wins the CPU when both
    /// want it (interactive reads run at half of it); 0 keeps the server's
    /// priority
    query_nice: i32, env = "TRACELAKE_QUERY_NICE", default = "10";
    /// Query requests that run at once
    query_max_concurrent: usize, env = "TRACELAKE_QUERY_MAX_CONCURRENT", default = "4";
    /// Of those, slots kept for interactive reads (trace by id, service and
    /// operation lists)
    query_reserved_interactive: usize, env = "TRACELAKE_QUERY_RESERVED_INTERACTIVE", default = "1";
    /// Query requests that may wait for a slot; more are refused with 429
    query_max_queued: usize, env = "TRACELAKE_QUERY_MAX_QUEUED", default = "32";
    /// Memory limit of query execution
    query_memory_limit_bytes: usize, env = "TRACELAKE_QUERY_MEMORY_LIMIT_BYTES", default = "2147483648";
    /// Memory the data files' footers and page indexes read by trace
    /// lookups may keep (least recently used first out)
    query_trace_metadata_bytes: usize, env = "TRACELAKE_QUERY_TRACE_METADATA_BYTES", default = "268435456";
    /// Most rows a SQL result may have
    query_max_rows: usize, env = "TRACELAKE_QUERY_MAX_ROWS", default = "100000";
    /// Log filter, tracing-subscriber syntax
    log_filter: String, env = "TRACELAKE_LOG", default = "info,buoyant_kernel=warn,deltalake=warn,rskafka=warn";
    /// Log format: text or json
    log_format: String, env = "TRACELAKE_LOG_FORMAT", default = "text";
}

/// What a process does (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Roles {
    pub(crate) ingest: bool,
    pub(crate) query: bool,
    pub(crate) compactor: bool,
}

impl std::str::FromStr for Roles {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut roles = Roles {
            ingest: false,
            query: false,
            compactor: false,
        };
        for role in text.split(',').map(str::trim) {
            match role {
                "all" => {
                    roles = Roles {
                        ingest: true,
                        query: true,
                        compactor: true,
                    }
                }
                "ingest" => roles.ingest = true,
                "query" => roles.query = true,
                "compactor" => roles.compactor = true,
                other => bail!(
                    "invalid role {other:?}: use all, or a comma list of ingest, query and \
                     compactor"
                ),
            }
        }
        Ok(roles)
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [
            (self.ingest, "ingest"),
            (self.query, "query"),
            (self.compactor, "compactor"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&names.join(","))
    }
}

/// Adaptive sampling's settings (`--adaptive-sampling-*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdaptiveSampling {
    /// Traces per second per root operation.
    pub(crate) target: f64,
    pub(crate) interval: Duration,
    pub(crate) lookback: Duration,
}

/// Settings with defaults applied and values parsed.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) roles: Roles,
    /// The Kafka receiver, without the flush settings (the collector's).
    pub(crate) kafka: Option<tracelake_collector::kafka::KafkaConfig>,
    pub(crate) node_id: Option<String>,
    pub(crate) peers: Option<tracelake_query::peers::PeersConfig>,
    pub(crate) sql_worker_listen: Option<SocketAddr>,
    /// The cluster's secret for calls between nodes.
    pub(crate) peer_token: Option<String>,
    /// The CAs other nodes' certificates are checked against.
    pub(crate) cluster_ca_file: Option<PathBuf>,
    /// How this node calls other nodes over TLS (with TLS on): made at
    /// start ([`Config::with_cluster_tls`]), once the certificate loaded.
    pub(crate) cluster_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub(crate) distributed: Option<tracelake_query::distributed::DistributedConfig>,
    pub(crate) compactor_lease_ttl: Duration,
    /// The default tenant's table and WAL directory.
    pub(crate) table_url: Url,
    pub(crate) wal_dir: PathBuf,
    /// Where every tenant's table and WAL directory are.
    pub(crate) storage_root: Url,
    /// How to reach S3, for an `s3://` storage root.
    pub(crate) s3: tracelake_collector::s3::S3Settings,
    pub(crate) wal_root: PathBuf,
    pub(crate) max_tenants: usize,
    pub(crate) tenant_limits_file: Option<PathBuf>,
    pub(crate) otlp_grpc_listen: SocketAddr,
    pub(crate) otlp_http_listen: SocketAddr,
    pub(crate) http_listen: SocketAddr,
    pub(crate) flight_sql_listen: SocketAddr,
    pub(crate) jaeger_sampling_listen: SocketAddr,
    pub(crate) sampling_strategies_file: Option<PathBuf>,
    pub(crate) adaptive_sampling: Option<AdaptiveSampling>,
    pub(crate) zipkin_listen: SocketAddr,
    pub(crate) jaeger_http_listen: SocketAddr,
    pub(crate) jaeger_compact_listen: SocketAddr,
    pub(crate) jaeger_binary_listen: SocketAddr,
    pub(crate) auth_tokens_file: Option<PathBuf>,
    pub(crate) jaeger_udp_without_auth: bool,
    pub(crate) tls: Option<crate::tls::TlsSettings>,
    pub(crate) max_span_age: Duration,
    pub(crate) retention: Option<Duration>,
    pub(crate) retention_check_interval: Duration,
    pub(crate) vacuum_grace: Duration,
    pub(crate) compaction_interval: Option<Duration>,
    pub(crate) compaction_delay: Duration,
    pub(crate) compaction_target_bytes: u64,
    pub(crate) compaction_nice: i32,
    /// `--dedicated-columns`, checked.
    pub(crate) dedicated: Vec<tracelake_schema::layout::Configured>,
    pub(crate) max_span_future: Duration,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_buffer_bytes: usize,
    pub(crate) flush_max_age: Duration,
    pub(crate) flush_max_bytes: usize,
    pub(crate) wal_segment_bytes: u64,
    pub(crate) query: tracelake_query::ExecutorConfig,
    pub(crate) query_memory_limit_bytes: usize,
    pub(crate) query_trace_metadata_bytes: usize,
    pub(crate) query_max_rows: usize,
    pub(crate) log_filter: String,
    pub(crate) log_json: bool,
}

/// The tenant whose table requests without `X-Scope-OrgID` use.
pub(crate) const DEFAULT_TENANT: &str = "default";

impl Settings {
    /// Flags and environment (`self`, already merged by clap) over the file.
    pub(crate) fn resolve(self, file: Option<&Path>) -> anyhow::Result<Config> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<Settings>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Settings::default(),
        };
        self.or(from_file).into_config()
    }

    /// Appends each declared default to its flag's help.
    pub(crate) fn document_defaults(mut cmd: clap::Command) -> clap::Command {
        for (name, default) in Self::DEFAULTS {
            cmd = cmd.mut_arg(*name, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            });
        }
        cmd
    }

    /// Parses and checks every value; touches nothing on disk.
    fn into_config(self) -> anyhow::Result<Config> {
        let s = self.with_defaults()?;
        // Declared with a default, so set by `with_defaults`.
        fn set<T>(value: Option<T>) -> T {
            value.expect("a setting with a declared default")
        }
        let data_dir = set(s.data_dir);
        let data_dir = std::path::absolute(&data_dir)
            .with_context(|| format!("cannot resolve data directory {}", data_dir.display()))?;
        let root = match s.storage_url {
            Some(url) => {
                Url::parse(&url).with_context(|| format!("invalid --storage-url {url:?}"))?
            }
            None => Url::from_directory_path(&data_dir).map_err(|()| {
                anyhow::anyhow!("data directory {} is not absolute", data_dir.display())
            })?,
        };
        match root.scheme() {
            "file" => {}
            "s3" => tracelake_collector::s3::check_environment(|k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("--storage-url {root}: {e}"))?,
            other => bail!(
                "--storage-url {root}: {other}:// is not supported; use file:// or s3:// (S3 and \
                 S3-compatible stores)"
            ),
        }
        let table_url = tenant_table_url(&root, DEFAULT_TENANT)?;
        let roles: Roles = set(s.role).parse()?;
        if let Some(id) = &s.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            bail!("invalid node id {id:?}: use 1 to 64 letters, digits, '.', '_' and '-'");
        }
        if roles.ingest && root.scheme() != "file" && s.node_id.is_none() {
            bail!(
                "an ingest node on object storage needs --node-id: a name unique among the \
                 nodes writing to {root} and kept across restarts (its write-ahead log's \
                 watermark is committed under it)"
            );
        }
        let duration = |value: Option<String>, name: &str| {
            let text = set(value);
            parse_duration(&text).with_context(|| format!("invalid {name} {text:?}"))
        };
        let max_concurrent = set(s.query_max_concurrent);
        if max_concurrent == 0 {
            bail!("query max concurrent must be at least 1");
        }
        let nice = set(s.query_nice);
        if !(-20..=19).contains(&nice) {
            bail!("query nice must be between -20 and 19");
        }
        let adaptive_sampling = match s.adaptive_sampling_target {
            None => None,
            Some(target) => {
                if !(target.is_finite() && target > 0.0) {
                    bail!(
                        "--adaptive-sampling-target must be a positive number of traces per second, not {target}"
                    );
                }
                if !roles.query {
                    bail!(
                        "--adaptive-sampling-target is for query nodes (--role query or all): it reads the stored spans"
                    );
                }
                let interval = duration(
                    s.adaptive_sampling_interval.clone(),
                    "adaptive sampling interval",
                )?;
                let lookback = duration(
                    s.adaptive_sampling_lookback.clone(),
                    "adaptive sampling lookback",
                )?;
                if interval < Duration::from_millis(100) || lookback < Duration::from_secs(1) {
                    bail!(
                        "--adaptive-sampling-interval must be at least 100ms and --adaptive-sampling-lookback at least 1s"
                    );
                }
                Some(AdaptiveSampling {
                    target,
                    interval,
                    lookback,
                })
            }
        };
        let compaction_nice = set(s.compaction_nice);
        if !(0..=19).contains(&compaction_nice) {
            bail!("compaction nice must be between 0 and 19 (it can only lower the priority)");
        }
        let max_tenants = set(s.max_tenants);
        if max_tenants == 0 {
            bail!("max tenants must be at least 1 (the default tenant)");
        }
        let listen_address = set(s.listen_address);
        let listen = |port: u16| SocketAddr::new(listen_address, port);
        let min_version = set(s.tls_min_version);
        let min_version = min_version
            .parse()
            .with_context(|| format!("invalid tls min version {min_version:?}"))?;
        let tls = match (s.tls_cert_file, s.tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(crate::tls::TlsSettings {
                cert_file,
                key_file,
                client_ca_file: s.tls_client_ca_file,
                min_version,
            }),
            (None, None) if s.tls_client_ca_file.is_some() => {
                bail!("--tls-client-ca-file needs TLS on: set --tls-cert-file and --tls-key-file")
            }
            (None, None) => None,
            (Some(_), None) => bail!("--tls-cert-file needs --tls-key-file"),
            (None, Some(_)) => bail!("--tls-key-file needs --tls-cert-file"),
        };
        let log_json = match set(s.log_format).as_str() {
            "text" => false,
            "json" => true,
            other => bail!("invalid log format {other:?}: use text or json"),
        };
        let compactor_lease_ttl = duration(s.compactor_lease_ttl, "compactor lease ttl")?;
        if compactor_lease_ttl < Duration::from_secs(1) {
            bail!("compactor lease ttl must be at least 1s");
        }
        if !roles.query && (s.sql_worker_listen.is_some() || s.sql_workers.is_some()) {
            bail!("--sql-worker-listen and --sql-workers are for query nodes");
        }
        if s.sql_worker_listen.is_some() && s.peer_token.is_none() {
            // A worker runs any plan it is sent, over every tenant's files.
            bail!(
                "--sql-worker-listen needs the cluster's peer token (TRACELAKE_PEER_TOKEN): \
                 a SQL worker runs whatever plan it is sent"
            );
        }
        // Calls to the other nodes (ingest nodes, SQL workers) speak TLS
        // when this node's ports do: the cluster's nodes share the setting
        // (the client side is made at start, [`Config::with_cluster_tls`]).
        if tls.is_none() && s.cluster_ca_file.is_some() {
            bail!("--cluster-ca-file needs TLS on: set --tls-cert-file and --tls-key-file");
        }
        let distributed = match s.sql_workers {
            Some(text) => Some(tracelake_query::distributed::DistributedConfig {
                tls: None,
                workers: text
                    .parse()
                    .map_err(|e| anyhow::anyhow!("invalid --sql-workers {text:?}: {e}"))?,
                token: s.peer_token.clone(),
                bytes_per_task: set(s.sql_worker_task_bytes),
            }),
            None => None,
        };
        let kafka = match s.kafka_brokers {
            Some(brokers) => {
                if !roles.ingest {
                    bail!("--kafka-brokers is for ingest nodes (--role ingest or all)");
                }
                if s.kafka_tls_ca_file.is_some() && !set(s.kafka_tls) {
                    bail!("--kafka-tls-ca-file needs --kafka-tls");
                }
                let sasl_plain = match (s.kafka_sasl_username, s.kafka_sasl_password) {
                    (Some(user), Some(password)) => Some((user, password)),
                    (None, None) => None,
                    _ => bail!(
                        "SASL/PLAIN needs both --kafka-sasl-username and \
                         TRACELAKE_KAFKA_SASL_PASSWORD"
                    ),
                };
                let mut config = kafka_config(
                    &brokers,
                    &set(s.kafka_topics),
                    &set(s.kafka_member),
                    set(s.kafka_client_id),
                    &set(s.kafka_start),
                    set(s.kafka_tls).then_some(s.kafka_tls_ca_file.as_deref()),
                    sasl_plain,
                )?;
                if let Some(topic) = s.kafka_dead_letter_topic {
                    if topic.trim().is_empty() {
                        bail!(
                            "--kafka-dead-letter-topic is empty: name a topic, or leave it unset"
                        );
                    }
                    if config.topics.iter().any(|(t, _)| *t == topic) {
                        bail!(
                            "--kafka-dead-letter-topic {topic} is also in --kafka-topics: bad \
                             messages would be consumed again"
                        );
                    }
                    config.dead_letter_topic = Some(topic);
                }
                config.metadata_refresh =
                    duration(s.kafka_metadata_refresh, "kafka metadata refresh")?;
                if config.metadata_refresh < Duration::from_millis(100) {
                    bail!("--kafka-metadata-refresh must be at least 100ms");
                }
                config.fetch_max_bytes = match i32::try_from(set(s.kafka_fetch_max_bytes)) {
                    Ok(bytes) if (1..=1 << 30).contains(&bytes) => bytes,
                    _ => bail!("--kafka-fetch-max-bytes must be from 1 to 1073741824"),
                };
                Some(config)
            }
            None => None,
        };
        let peers = match s.ingest_peers {
            Some(text) => {
                if roles.ingest {
                    bail!(
                        "--ingest-peers is for query nodes: a node that ingests reads its own \
                         buffer (use --role query)"
                    );
                }
                let peers = text
                    .parse()
                    .map_err(|e| anyhow::anyhow!("invalid --ingest-peers {text:?}: {e}"))?;
                Some(tracelake_query::peers::PeersConfig {
                    peers,
                    tls: None,
                    token: s.peer_token.clone(),
                    metrics: Default::default(),
                })
            }
            None => None,
        };
        Ok(Config {
            roles,
            kafka,
            node_id: s.node_id,
            peers,
            sql_worker_listen: s.sql_worker_listen,
            peer_token: s.peer_token,
            cluster_ca_file: s.cluster_ca_file,
            cluster_tls: None,
            distributed,
            compactor_lease_ttl,
            wal_dir: data_dir.join("wal").join(DEFAULT_TENANT),
            wal_root: data_dir.join("wal"),
            table_url,
            storage_root: root,
            s3: tracelake_collector::s3::S3Settings {
                endpoint: s.s3_endpoint,
                region: s.s3_region,
                path_style: set(s.s3_path_style),
                credentials: None,
            },
            max_tenants,
            tenant_limits_file: s.tenant_limits_file,
            otlp_grpc_listen: s.otlp_grpc_listen.unwrap_or(listen(4317)),
            otlp_http_listen: s.otlp_http_listen.unwrap_or(listen(4318)),
            http_listen: s.http_listen.unwrap_or(listen(3200)),
            zipkin_listen: s.zipkin_listen.unwrap_or(listen(9411)),
            jaeger_http_listen: s.jaeger_http_listen.unwrap_or(listen(14268)),
            jaeger_compact_listen: s.jaeger_compact_listen.unwrap_or(listen(6831)),
            jaeger_binary_listen: s.jaeger_binary_listen.unwrap_or(listen(6832)),
            flight_sql_listen: s.flight_sql_listen.unwrap_or(listen(4319)),
            jaeger_sampling_listen: s.jaeger_sampling_listen.unwrap_or(listen(5778)),
            sampling_strategies_file: s.sampling_strategies_file,
            adaptive_sampling,
            auth_tokens_file: s.auth_tokens_file,
            jaeger_udp_without_auth: set(s.jaeger_udp_without_auth),
            tls,
            max_span_age: duration(s.max_span_age, "max span age")?,
            retention: Some(duration(s.retention, "retention")?).filter(|d| !d.is_zero()),
            retention_check_interval: duration(
                s.retention_check_interval,
                "retention check interval",
            )?,
            vacuum_grace: duration(s.vacuum_grace, "vacuum grace")?,
            compaction_interval: Some(duration(s.compaction_interval, "compaction interval")?)
                .filter(|d| !d.is_zero()),
            compaction_delay: duration(s.compaction_delay, "compaction delay")?,
            compaction_target_bytes: set(s.compaction_target_bytes),
            dedicated: dedicated_columns(s.dedicated_columns.as_deref())?,
            compaction_nice,
            max_span_future: duration(s.max_span_future, "max span future")?,
            max_request_bytes: set(s.max_request_bytes),
            max_buffer_bytes: set(s.max_buffer_bytes),
            flush_max_age: duration(s.flush_max_age, "flush max age")?,
            flush_max_bytes: set(s.flush_max_bytes),
            wal_segment_bytes: set(s.wal_segment_bytes),
            query: tracelake_query::ExecutorConfig {
                timeout: duration(s.query_timeout, "query timeout")?,
                threads: s
                    .query_threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                nice,
                max_concurrent,
                reserved_interactive: set(s.query_reserved_interactive),
                max_queued: set(s.query_max_queued),
            },
            query_memory_limit_bytes: set(s.query_memory_limit_bytes),
            query_trace_metadata_bytes: set(s.query_trace_metadata_bytes),
            query_max_rows: set(s.query_max_rows),
            log_filter: set(s.log_filter),
            log_json,
        })
    }
}

/// `<root>/tenants/<tenant>/spans/`: one table per tenant (design.md).
pub(crate) fn tenant_table_url(root: &Url, tenant: &str) -> anyhow::Result<Url> {
    let mut root = root.clone();
    if !root.path().ends_with('/') {
        root.set_path(&format!("{}/", root.path()));
    }
    Ok(root.join(&format!("tenants/{tenant}/spans/"))?)
}

/// Parses a duration in the grammar every setting and query parameter
/// shares (`500ms`, `1h30m`, `7d`: `tracelake_protocols::duration`).
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    Ok(tracelake_protocols::duration::parse(text)?)
}

impl Config {
    /// With TLS on, the client side of calls to the other nodes (ingest
    /// nodes, SQL workers): their certificates checked against
    /// `--cluster-ca-file`, this node's presented when asked.
    pub(crate) fn with_cluster_tls(mut self) -> anyhow::Result<Self> {
        let Some(settings) = &self.tls else {
            return Ok(self);
        };
        let client = std::sync::Arc::new(settings.cluster_client(self.cluster_ca_file.as_deref())?);
        if let Some(peers) = self.peers.as_mut() {
            peers.tls = Some(std::sync::Arc::clone(&client));
            peers
                .client()
                .map_err(|e| anyhow::anyhow!("--ingest-peers: {e}"))?;
        }
        if let Some(distributed) = self.distributed.as_mut() {
            distributed.tls = Some(std::sync::Arc::clone(&client));
        }
        self.cluster_tls = Some(client);
        Ok(self)
    }
}

/// The Kafka receiver's settings from the flags' texts.
fn kafka_config(
    brokers: &str,
    topics: &str,
    member: &str,
    client_id: String,
    start: &str,
    tls: Option<Option<&Path>>,
    sasl_plain: Option<(String, String)>,
) -> anyhow::Result<tracelake_collector::kafka::KafkaConfig> {
    use tracelake_collector::kafka::{KafkaConfig, StartAt};
    let brokers: Vec<String> = brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect();
    if brokers.is_empty() {
        bail!("--kafka-brokers names no broker");
    }
    let topics = topics
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|entry| {
            let (topic, encoding) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("invalid --kafka-topics entry {entry:?}: use topic=encoding")
            })?;
            let encoding = encoding
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("--kafka-topics {topic}: {e}"))?;
            if topic.trim().is_empty() {
                bail!("invalid --kafka-topics entry {entry:?}: no topic name");
            }
            Ok((topic.trim().to_string(), encoding))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some((dup, _)) = topics
        .iter()
        .enumerate()
        .find_map(|(i, (t, _))| topics[..i].iter().find(|(u, _)| u == t))
    {
        bail!("--kafka-topics names {dup} twice (a topic has one encoding)");
    }
    if topics.is_empty() {
        bail!("--kafka-topics names no topic");
    }
    let member = member
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)))
        .filter(|&(i, n)| n > 0 && i < n)
        .ok_or_else(|| anyhow::anyhow!("invalid --kafka-member {member:?}: use i/n with i < n"))?;
    let start_at = match start {
        "earliest" => StartAt::Earliest,
        "latest" => StartAt::Latest,
        other => bail!("invalid --kafka-start {other:?}: use earliest or latest"),
    };
    let tls = match tls {
        None => None,
        Some(ca_file) => {
            let roots = crate::tls::roots(ca_file, "--kafka-tls-ca-file")?;
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .context("TLS settings for Kafka")?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(std::sync::Arc::new(config))
        }
    };
    Ok(KafkaConfig {
        brokers,
        topics,
        member,
        client_id,
        tls,
        sasl_plain,
        start_at,
        fetch_max_bytes: 4 << 20,
        dead_letter_topic: None,
        metadata_refresh: Duration::from_secs(30),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_default_parses_and_resolving_touches_no_disk() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("not-yet");
        let config = Settings {
            data_dir: Some(data.clone()),
            ..Settings::default()
        }
        .resolve(None)
        .unwrap();
        assert!(
            !data.exists(),
            "resolving settings created {}",
            data.display()
        );
        assert_eq!(config.otlp_grpc_listen, ([0, 0, 0, 0], 4317).into());
        assert_eq!(config.compaction_target_bytes, 256 << 20);
        assert_eq!(config.query.timeout, Duration::from_secs(30));
        assert_eq!(config.retention, Some(Duration::from_secs(7 * 86400)));
        // The relative default resolves against the working directory.
        let config = Settings::default().resolve(None).unwrap();
        assert!(config.wal_dir.is_absolute(), "{}", config.wal_dir.display());
        assert!(config.wal_dir.ends_with("data/wal/default"));
    }

    #[test]
    fn help_shows_each_default_from_its_declaration() {
        let cmd = Settings::document_defaults(<Settings as clap::Args>::augment_args(
            clap::Command::new("serve"),
        ));
        let help = cmd.clone().render_help().to_string();
        for (name, default) in Settings::DEFAULTS {
            let flag = format!("--{}", name.replace('_', "-"));
            let line = help
                .lines()
                .skip_while(|l| !l.contains(&flag))
                .take_while(|l| !l.trim_start().starts_with("--") || l.contains(&flag))
                .collect::<Vec<_>>()
                .join(" ");
            // Wrapping may split a default over lines.
            let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                line.contains(&format!("[default: {default}]")),
                "{flag}: {line}"
            );
        }
        assert_eq!(
            help.matches("[default:").count(),
            Settings::DEFAULTS.len() + 29,
            "each default once, plus the twenty-nine computed ones written in their help (node id, \
             ingest peers, SQL worker listener and workers, dedicated columns, \
             query threads, storage URL, S3 endpoint and region, nine listeners, the tokens file, the \
             TLS certificate, client CA and cluster CA files, the tenant limits file, the sampling \
             strategies file, the adaptive sampling target, the Kafka brokers, CA file, SASL user and \
             dead-letter topic)"
        );
    }

    #[test]
    fn listen_address_binds_every_listener_without_an_address_of_its_own() {
        let config = Settings {
            listen_address: Some([127, 0, 0, 1].into()),
            zipkin_listen: Some(([0, 0, 0, 0], 19411).into()),
            ..Settings::default()
        }
        .resolve(None)
        .unwrap();
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(config.otlp_grpc_listen, local(4317));
        assert_eq!(config.otlp_http_listen, local(4318));
        assert_eq!(config.http_listen, local(3200));
        assert_eq!(config.flight_sql_listen, local(4319));
        assert_eq!(config.jaeger_http_listen, local(14268));
        assert_eq!(config.jaeger_compact_listen, local(6831));
        assert_eq!(config.jaeger_binary_listen, local(6832));
        assert_eq!(config.zipkin_listen, ([0, 0, 0, 0], 19411).into());
        assert!(config.auth_tokens_file.is_none());
        assert!(!config.jaeger_udp_without_auth);
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key() {
        let with = |cert: bool, key: bool, ca: bool, min: Option<&str>| {
            Settings {
                tls_cert_file: cert.then(|| "c.pem".into()),
                tls_key_file: key.then(|| "k.pem".into()),
                tls_client_ca_file: ca.then(|| "ca.pem".into()),
                tls_min_version: min.map(Into::into),
                ..Settings::default()
            }
            .resolve(None)
        };
        assert!(with(false, false, false, None).unwrap().tls.is_none());
        let tls = with(true, true, true, Some("1.3")).unwrap().tls.unwrap();
        assert_eq!(tls.min_version, crate::tls::MinVersion::Tls13);
        assert_eq!(tls.client_ca_file, Some("ca.pem".into()));
        for (cert, key, ca, min, error) in [
            (
                true,
                false,
                false,
                None,
                "--tls-cert-file needs --tls-key-file",
            ),
            (
                false,
                true,
                false,
                None,
                "--tls-key-file needs --tls-cert-file",
            ),
            (
                false,
                false,
                true,
                None,
                "--tls-client-ca-file needs TLS on",
            ),
            (
                true,
                true,
                false,
                Some("1.1"),
                "invalid tls min version \"1.1\"",
            ),
        ] {
            let text = format!("{:#}", with(cert, key, ca, min).unwrap_err());
            assert!(text.contains(error), "{text}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tracelake.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = {:?}\nflush_max_age = \"5s\"\nquery_max_rows = 7\n",
                dir.path().join("d")
            ),
        )
        .unwrap();
        let flags = Settings {
            flush_max_age: Some("2s".into()),
            ..Settings::default()
        };
        let config = flags.resolve(Some(&file)).unwrap();
        assert_eq!(config.flush_max_age, Duration::from_secs(2));
        assert_eq!(config.query_max_rows, 7);
        assert_eq!(config.flush_max_bytes, 128 << 20);
        assert!(
            config
                .table_url
                .as_str()
                .ends_with("/d/tenants/default/spans/")
        );
    }

    #[test]
    fn roles_and_node_ids() {
        let roles = |text: &str| text.parse::<Roles>().map(|r| r.to_string());
        assert_eq!(roles("all").unwrap(), "ingest,query,compactor");
        assert_eq!(roles("query, compactor").unwrap(), "query,compactor");
        let err = roles("ingest,reader").unwrap_err().to_string();
        assert!(
            err.contains("\"reader\"") && err.contains("compactor"),
            "{err}"
        );
        let resolve = |role: &str, url: &str, node: Option<&str>| {
            Settings {
                role: Some(role.into()),
                storage_url: Some(url.into()),
                node_id: node.map(String::from),
                ..Settings::default()
            }
            .resolve(None)
        };
        // An ingest node on object storage must be named; others need not.
        let err = resolve("ingest", "s3://b/p", None).unwrap_err().to_string();
        assert!(err.contains("--node-id"), "{err}");
        resolve("ingest", "s3://b/p", Some("ingest-1")).unwrap();
        resolve("query,compactor", "s3://b/p", None).unwrap();
        resolve("all", "file:///tmp/t", None).unwrap();
        let err = resolve("all", "s3://b/p", Some("a/b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid node id"), "{err}");
    }

    #[test]
    fn adaptive_sampling_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |f: fn(&mut Settings)| {
            let mut settings = Settings {
                data_dir: Some(dir.path().to_path_buf()),
                adaptive_sampling_target: Some(2.0),
                ..Settings::default()
            };
            f(&mut settings);
            settings.resolve(None).map(|c| c.adaptive_sampling)
        };
        assert_eq!(
            resolve(|_| {}).unwrap(),
            Some(AdaptiveSampling {
                target: 2.0,
                interval: Duration::from_secs(60),
                lookback: Duration::from_secs(600),
            })
        );
        assert_eq!(
            resolve(|s| s.adaptive_sampling_target = None).unwrap(),
            None
        );
        for (f, needle) in [
            (
                (|s: &mut Settings| s.adaptive_sampling_target = Some(0.0)) as fn(&mut Settings),
                "positive number",
            ),
            (
                |s| s.adaptive_sampling_target = Some(f64::NAN),
                "positive number",
            ),
            (|s| s.role = Some("ingest".into()), "for query nodes"),
            (
                |s| s.adaptive_sampling_interval = Some("10ms".into()),
                "at least 100ms",
            ),
            (
                |s| s.adaptive_sampling_lookback = Some("soon".into()),
                "lookback",
            ),
        ] {
            let e = format!("{:#}", resolve(f).unwrap_err());
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn kafka_limits_and_topics_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |f: fn(&mut Settings)| {
            let mut settings = Settings {
                data_dir: Some(dir.path().to_path_buf()),
                kafka_brokers: Some("127.0.0.1:9092".into()),
                ..Settings::default()
            };
            f(&mut settings);
            settings.resolve(None).map(|c| c.kafka.unwrap())
        };
        let err = |f: fn(&mut Settings)| format!("{:#}", resolve(f).unwrap_err());
        let kafka = resolve(|_| {}).unwrap();
        assert_eq!(kafka.fetch_max_bytes, 4 << 20);
        assert_eq!(kafka.metadata_refresh, Duration::from_secs(30));
        let kafka = resolve(|s| s.kafka_fetch_max_bytes = Some(512)).unwrap();
        assert_eq!(kafka.fetch_max_bytes, 512);
        for bad in [0, (1 << 30) + 1, usize::MAX] {
            let settings = Settings {
                data_dir: Some(dir.path().to_path_buf()),
                kafka_brokers: Some("127.0.0.1:9092".into()),
                kafka_fetch_max_bytes: Some(bad),
                ..Settings::default()
            };
            let e = format!("{:#}", settings.resolve(None).unwrap_err());
            assert!(e.contains("--kafka-fetch-max-bytes"), "{bad}: {e}");
        }
        let e = err(|s| s.kafka_metadata_refresh = Some("10ms".into()));
        assert!(e.contains("--kafka-metadata-refresh"), "{e}");
        let e = err(|s| s.kafka_dead_letter_topic = Some("otlp_spans".into()));
        assert!(e.contains("also in --kafka-topics"), "{e}");
        let e = err(|s| s.kafka_dead_letter_topic = Some(" ".into()));
        assert!(e.contains("--kafka-dead-letter-topic is empty"), "{e}");
        let e = err(|s| s.kafka_sasl_username = Some("u".into()));
        assert!(e.contains("SASL/PLAIN needs both"), "{e}");
    }

    #[test]
    fn a_sql_worker_needs_a_query_role_and_the_peer_token() {
        let resolve = |role: &str, token: Option<&str>| {
            Settings {
                role: Some(role.into()),
                sql_worker_listen: Some("127.0.0.1:4320".parse().unwrap()),
                sql_workers: Some("127.0.0.1:4320,127.0.0.1:4321".into()),
                peer_token: token.map(String::from),
                ..Settings::default()
            }
            .resolve(None)
        };
        let err = resolve("query", None).unwrap_err().to_string();
        assert!(err.contains("TRACELAKE_PEER_TOKEN"), "{err}");
        let err = resolve("ingest", Some("s")).unwrap_err().to_string();
        assert!(err.contains("query nodes"), "{err}");
        let config = resolve("query", Some("s")).unwrap();
        let distributed = config.distributed.unwrap();
        assert_eq!(distributed.token.as_deref(), Some("s"));
        assert_eq!(distributed.bytes_per_task, 16 << 20);
    }

    #[test]
    fn dedicated_columns_are_parsed_and_checked() {
        use tracelake_schema::layout::{AttributeSet, Configured};
        assert_eq!(
            dedicated_columns(Some("span:app.tenant, resource:int:team.size")).unwrap(),
            [
                Configured::text(AttributeSet::Span, "app.tenant"),
                Configured::int(AttributeSet::Resource, "team.size"),
            ]
        );
        assert!(dedicated_columns(None).unwrap().is_empty());
        assert!(dedicated_columns(Some(" ")).unwrap().is_empty());
        for (bad, says) in [
            ("span:http.route", "built-in column http_route"),
            ("span:a,span:a", "configured twice"),
            ("tenant", "SET:KEY"),
        ] {
            let err = dedicated_columns(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("invalid --dedicated-columns"), "{err}");
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_example_file_parses_and_resolves() {
        let example: Settings = toml::from_str(include_str!("../tracelake.example.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let flags = Settings {
            data_dir: Some(dir.path().to_path_buf()),
            ..Settings::default()
        };
        let config = flags.or(example).into_config().unwrap();
        assert_eq!(config.flush_max_age, Duration::from_secs(60));
        assert_eq!(config.http_listen.port(), 3200);
        // What the example shows is what the declarations say.
        let shown: toml::Table = toml::from_str(include_str!("../tracelake.example.toml")).unwrap();
        for (name, value) in &shown {
            let default = Settings::DEFAULTS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, d)| *d)
                .unwrap_or_else(|| panic!("{name} has no declared default"));
            let value = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => panic!("{name}: unexpected {other:?}"),
            };
            assert_eq!(value, default, "{name} in tracelake.example.toml");
        }
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "flush_max_agee = \"5s\"\n").unwrap();
        let err = Settings::default().resolve(Some(&file)).unwrap_err();
        assert!(format!("{err:#}").contains("flush_max_agee"), "{err:#}");
    }

    #[test]
    fn kafka_settings_parse_and_bad_ones_are_named() {
        let k = kafka_config(
            "a:9092, b:9092",
            "otlp_spans=otlp_proto,zipkin=zipkin_json",
            "1/3",
            "tl".into(),
            "latest",
            None,
            None,
        )
        .unwrap();
        assert_eq!(k.brokers, ["a:9092", "b:9092"]);
        assert_eq!(k.topics.len(), 2);
        assert_eq!(k.member, (1, 3));
        assert_eq!(k.start_at, tracelake_collector::kafka::StartAt::Latest);
        let err = |topics: &str, member: &str, start: &str| {
            kafka_config("a:1", topics, member, "tl".into(), start, None, None)
                .unwrap_err()
                .to_string()
        };
        assert!(err("t", "0/1", "earliest").contains("topic=encoding"));
        assert!(err("=otlp_proto", "0/1", "earliest").contains("no topic name"));
        assert!(err("t=otlp_proto,t=zipkin_json", "0/1", "earliest").contains("twice"));
        assert!(err("t=avro", "0/1", "earliest").contains("unknown Kafka encoding"));
        assert!(err("t=otlp_proto", "2/2", "earliest").contains("--kafka-member"));
        assert!(err("t=otlp_proto", "0/1", "middle").contains("--kafka-start"));
        let missing = kafka_config(
            "a:1",
            "t=otlp_proto",
            "0/1",
            "tl".into(),
            "earliest",
            Some(Some(Path::new("/nonexistent/ca.pem"))),
            None,
        )
        .unwrap_err();
        assert!(format!("{missing:#}").contains("--kafka-tls-ca-file"));
    }
}
