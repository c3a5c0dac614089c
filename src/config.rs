//! Settings of `tracelake serve`.
//!
//! Every setting can come from a flag, an environment variable or the TOML
//! file named by `--config`; the precedence, in [`Settings::resolve`], is
//! flag > environment > file > built-in default. File keys are the flag names
//! with `_` for `-` (see `tracelake.example.toml`); unknown keys are an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use url::Url;

/// Declares the settings once: clap flags (with env vars) and TOML keys share
/// the field, and [`Settings::or`] merges two sources field by field.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty, env = $env:literal; )*) => {
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
        }
    };
}

settings! {
    /// Local directory for the write-ahead log and, unless --storage-url is
    /// set, the table [default: ./data]
    data_dir: PathBuf, env = "TRACELAKE_DATA_DIR";
    /// Root URL of the table storage (file:///path; object stores later)
    /// [default: the data directory]
    storage_url: String, env = "TRACELAKE_STORAGE_URL";
    /// OTLP/gRPC listen address [default: 0.0.0.0:4317]
    otlp_grpc_listen: SocketAddr, env = "TRACELAKE_OTLP_GRPC_LISTEN";
    /// OTLP/HTTP listen address [default: 0.0.0.0:4318]
    otlp_http_listen: SocketAddr, env = "TRACELAKE_OTLP_HTTP_LISTEN";
    /// Query API, health and metrics listen address [default: 0.0.0.0:3200]
    http_listen: SocketAddr, env = "TRACELAKE_HTTP_LISTEN";
    /// Zipkin ingest and query API listen address [default: 0.0.0.0:9411]
    zipkin_listen: SocketAddr, env = "TRACELAKE_ZIPKIN_LISTEN";
    /// Jaeger thrift over HTTP (`POST /api/traces`) listen address [default: 0.0.0.0:14268]
    jaeger_http_listen: SocketAddr, env = "TRACELAKE_JAEGER_HTTP_LISTEN";
    /// Jaeger agent UDP, thrift compact [default: 0.0.0.0:6831]
    jaeger_compact_listen: SocketAddr, env = "TRACELAKE_JAEGER_COMPACT_LISTEN";
    /// Jaeger agent UDP, thrift binary [default: 0.0.0.0:6832]
    jaeger_binary_listen: SocketAddr, env = "TRACELAKE_JAEGER_BINARY_LISTEN";
    /// Arrow Flight SQL listen address [default: 0.0.0.0:4319]
    flight_sql_listen: SocketAddr, env = "TRACELAKE_FLIGHT_SQL_LISTEN";
    /// Reject spans that started longer ago than this [default: 7d]
    max_span_age: String, env = "TRACELAKE_MAX_SPAN_AGE";
    /// Remove hour partitions older than this from the table; 0s keeps everything [default: 7d]
    retention: String, env = "TRACELAKE_RETENTION";
    /// How often retention runs [default: 5m]
    retention_check_interval: String, env = "TRACELAKE_RETENTION_CHECK_INTERVAL";
    /// Delete files no longer in the table once they are this old [default: 1h]
    vacuum_grace: String, env = "TRACELAKE_VACUUM_GRACE";
    /// How often closed hour partitions are looked at for compaction; 0s
    /// turns compaction off [default: 1m]
    compaction_interval: String, env = "TRACELAKE_COMPACTION_INTERVAL";
    /// Compact an hour partition once its hour ended this long ago [default: 10m]
    compaction_delay: String, env = "TRACELAKE_COMPACTION_DELAY";
    /// Size of a compacted file [default: 268435456]
    compaction_target_bytes: u64, env = "TRACELAKE_COMPACTION_TARGET_BYTES";
    /// Reject spans that start further in the future than this [default: 1h]
    max_span_future: String, env = "TRACELAKE_MAX_SPAN_FUTURE";
    /// Largest request body, after decompression [default: 67108864]
    max_request_bytes: usize, env = "TRACELAKE_MAX_REQUEST_BYTES";
    /// Buffered bytes above which ingest pushes back with 429 /
    /// UNAVAILABLE [default: 1073741824]
    max_buffer_bytes: usize, env = "TRACELAKE_MAX_BUFFER_BYTES";
    /// Write buffered spans to the table once the oldest is this old
    /// [default: 60s]
    flush_max_age: String, env = "TRACELAKE_FLUSH_MAX_AGE";
    /// Write buffered spans once they hold this many bytes [default: 134217728]
    flush_max_bytes: usize, env = "TRACELAKE_FLUSH_MAX_BYTES";
    /// Size at which a WAL segment is closed [default: 67108864]
    wal_segment_bytes: u64, env = "TRACELAKE_WAL_SEGMENT_BYTES";
    /// Time limit of one query request, over all the statements it runs
    /// [default: 30s]
    query_timeout: String, env = "TRACELAKE_QUERY_TIMEOUT";
    /// Threads that run queries, apart from those that receive spans
    /// [default: the number of CPUs]
    query_threads: usize, env = "TRACELAKE_QUERY_THREADS";
    /// Nice value of the query threads, so that ingest wins the CPU when
    /// both want it (interactive reads run at half of it); 0 keeps the
    /// server's priority [default: 10]
    query_nice: i32, env = "TRACELAKE_QUERY_NICE";
    /// Query requests that run at once [default: 4]
    query_max_concurrent: usize, env = "TRACELAKE_QUERY_MAX_CONCURRENT";
    /// Of those, slots kept for interactive reads (trace by id, service and
    /// operation lists) [default: 1]
    query_reserved_interactive: usize, env = "TRACELAKE_QUERY_RESERVED_INTERACTIVE";
    /// Query requests that may wait for a slot; more are refused with 429
    /// [default: 32]
    query_max_queued: usize, env = "TRACELAKE_QUERY_MAX_QUEUED";
    /// Memory limit of query execution [default: 2147483648]
    query_memory_limit_bytes: usize, env = "TRACELAKE_QUERY_MEMORY_LIMIT_BYTES";
    /// Most rows a SQL result may have [default: 100000]
    query_max_rows: usize, env = "TRACELAKE_QUERY_MAX_ROWS";
    /// Log filter, tracing-subscriber syntax [default:
    /// info,buoyant_kernel=warn,deltalake=warn]
    log_filter: String, env = "TRACELAKE_LOG";
    /// Log format: text or json [default: text]
    log_format: String, env = "TRACELAKE_LOG_FORMAT";
}

/// Settings with defaults applied and values parsed.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) table_url: Url,
    pub(crate) wal_dir: PathBuf,
    pub(crate) otlp_grpc_listen: SocketAddr,
    pub(crate) otlp_http_listen: SocketAddr,
    pub(crate) http_listen: SocketAddr,
    pub(crate) flight_sql_listen: SocketAddr,
    pub(crate) zipkin_listen: SocketAddr,
    pub(crate) jaeger_http_listen: SocketAddr,
    pub(crate) jaeger_compact_listen: SocketAddr,
    pub(crate) jaeger_binary_listen: SocketAddr,
    pub(crate) max_span_age: Duration,
    pub(crate) retention: Option<Duration>,
    pub(crate) retention_check_interval: Duration,
    pub(crate) vacuum_grace: Duration,
    pub(crate) compaction_interval: Option<Duration>,
    pub(crate) compaction_delay: Duration,
    pub(crate) compaction_target_bytes: u64,
    pub(crate) max_span_future: Duration,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_buffer_bytes: usize,
    pub(crate) flush_max_age: Duration,
    pub(crate) flush_max_bytes: usize,
    pub(crate) wal_segment_bytes: u64,
    pub(crate) query: tracelake_query::ExecutorConfig,
    pub(crate) query_memory_limit_bytes: usize,
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

    fn into_config(self) -> anyhow::Result<Config> {
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data directory {}", data_dir.display()))?;
        let root = match self.storage_url {
            Some(url) => {
                Url::parse(&url).with_context(|| format!("invalid --storage-url {url:?}"))?
            }
            None => Url::from_directory_path(&data_dir).map_err(|()| {
                anyhow::anyhow!("data directory {} is not absolute", data_dir.display())
            })?,
        };
        let table_url = tenant_table_url(&root, DEFAULT_TENANT)?;
        let duration = |value: Option<String>, default: &str, name: &str| {
            let text = value.unwrap_or_else(|| default.to_string());
            parse_duration(&text).with_context(|| format!("invalid {name} {text:?}"))
        };
        if self.query_max_concurrent == Some(0) {
            bail!("query max concurrent must be at least 1");
        }
        if !(-20..=19).contains(&self.query_nice.unwrap_or(10)) {
            bail!("query nice must be between -20 and 19");
        }
        let log_format = self.log_format.unwrap_or_else(|| "text".into());
        let log_json = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("invalid log format {other:?}: use text or json"),
        };
        Ok(Config {
            wal_dir: data_dir.join("wal").join(DEFAULT_TENANT),
            table_url,
            otlp_grpc_listen: self.otlp_grpc_listen.unwrap_or(([0, 0, 0, 0], 4317).into()),
            otlp_http_listen: self.otlp_http_listen.unwrap_or(([0, 0, 0, 0], 4318).into()),
            http_listen: self.http_listen.unwrap_or(([0, 0, 0, 0], 3200).into()),
            zipkin_listen: self.zipkin_listen.unwrap_or(([0, 0, 0, 0], 9411).into()),
            jaeger_http_listen: self
                .jaeger_http_listen
                .unwrap_or(([0, 0, 0, 0], 14268).into()),
            jaeger_compact_listen: self
                .jaeger_compact_listen
                .unwrap_or(([0, 0, 0, 0], 6831).into()),
            jaeger_binary_listen: self
                .jaeger_binary_listen
                .unwrap_or(([0, 0, 0, 0], 6832).into()),
            flight_sql_listen: self
                .flight_sql_listen
                .unwrap_or(([0, 0, 0, 0], 4319).into()),
            max_span_age: duration(self.max_span_age, "7d", "max span age")?,
            retention: Some(duration(self.retention, "7d", "retention")?).filter(|d| !d.is_zero()),
            retention_check_interval: duration(
                self.retention_check_interval,
                "5m",
                "retention check interval",
            )?,
            vacuum_grace: duration(self.vacuum_grace, "1h", "vacuum grace")?,
            compaction_interval: Some(duration(
                self.compaction_interval,
                "1m",
                "compaction interval",
            )?)
            .filter(|d| !d.is_zero()),
            compaction_delay: duration(self.compaction_delay, "10m", "compaction delay")?,
            compaction_target_bytes: self.compaction_target_bytes.unwrap_or(256 << 20),
            max_span_future: duration(self.max_span_future, "1h", "max span future")?,
            max_request_bytes: self.max_request_bytes.unwrap_or(64 << 20),
            max_buffer_bytes: self.max_buffer_bytes.unwrap_or(1 << 30),
            flush_max_age: duration(self.flush_max_age, "60s", "flush max age")?,
            flush_max_bytes: self.flush_max_bytes.unwrap_or(128 << 20),
            wal_segment_bytes: self.wal_segment_bytes.unwrap_or(64 << 20),
            query: tracelake_query::ExecutorConfig {
                timeout: duration(self.query_timeout, "30s", "query timeout")?,
                threads: self
                    .query_threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                nice: self.query_nice.unwrap_or(10),
                max_concurrent: self.query_max_concurrent.unwrap_or(4),
                reserved_interactive: self.query_reserved_interactive.unwrap_or(1),
                max_queued: self.query_max_queued.unwrap_or(32),
            },
            query_memory_limit_bytes: self.query_memory_limit_bytes.unwrap_or(2 << 30),
            query_max_rows: self.query_max_rows.unwrap_or(100_000),
            log_filter: self
                .log_filter
                .unwrap_or_else(|| "info,buoyant_kernel=warn,deltalake=warn".into()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "flush_max_agee = \"5s\"\n").unwrap();
        let err = Settings::default().resolve(Some(&file)).unwrap_err();
        assert!(format!("{err:#}").contains("flush_max_agee"), "{err:#}");
    }
}
