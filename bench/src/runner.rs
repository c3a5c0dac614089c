//! The benchmark runner (`tracelake-bench run`): starts the real server on
//! loopback with a fresh data directory, measures the decode-only ceiling,
//! ingests a workload of the given size spread over closed hours, waits for
//! the flushes and the compaction, runs the query suite through the HTTP API
//! and the same SQL through DuckDB over the same Parquet files, and reports
//! medians and p99s, bytes per span on disk and the server's peak RSS.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::ceiling;
use crate::driver::{self, Config};
use crate::workload::{Generator, Topology};

const HOUR_NS: u64 = 3_600_000_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `tracelake` binary.
    pub server: PathBuf,
    /// Spans to ingest.
    pub spans: u64,
    /// The spans are spread over this many closed hours before the current
    /// one.
    pub hours: u64,
    /// `http` or `grpc`.
    pub protocol: String,
    pub streams: usize,
    pub batch: usize,
    pub seed: u64,
    /// Pre-encoded request memory, MiB.
    pub pool_mib: usize,
    /// Runs of each query.
    pub repeat: usize,
    /// Also run the SQL suite in DuckDB.
    pub duckdb: bool,
    /// Keep the data here instead of a temporary directory.
    pub data_dir: Option<PathBuf>,
    /// Longest wait for flushes and compaction.
    pub settle_timeout: Duration,
}

/// Latency samples of one query kind, ms.
#[derive(Debug, Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn json(&self) -> Value {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            if v.is_empty() {
                0.0
            } else {
                v[((v.len() - 1) as f64 * p).round() as usize]
            }
        };
        json!({ "runs": v.len(), "median_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0) })
    }

    fn median(&self) -> f64 {
        self.json()["median_ms"].as_f64().unwrap_or(0.0)
    }
}

/// The running server, in a process group of its own with a watchdog: `sh`
/// blocked reading a pipe only this process holds, which kills the group
/// when the pipe closes, on drop or however this process ends. It carries
/// `TRACELAKE_OWNER=<pid>:<start time>:bench-server` naming this process,
/// as every process the end-to-end tests start does, so that the tests
/// can kill it, and `tests/leaked-processes.sh` name it, once this process
/// is gone.
struct Server {
    child: Child,
    watchdog: Option<Child>,
    api: Api,
    otlp_http: SocketAddr,
    otlp_grpc: SocketAddr,
}

impl std::ops::Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A server's HTTP API (`http://host:port`), started here or already
/// running.
pub struct Api {
    http: String,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
        let _ = self.child.wait();
    }
}

/// `<pid>:<start time>:bench-server`: the start time (field 22 of
/// `/proc/self/stat`) tells this process from a later one with its pid.
fn owner_marker() -> String {
    let start = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().nth(19)?.to_owned()))
        .unwrap_or_default();
    format!("{}:{start}:bench-server", std::process::id())
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

impl Server {
    async fn start(binary: &Path, data: &Path) -> anyhow::Result<Self> {
        let (grpc, otlp_http, http) = (free_tcp()?, free_tcp()?, free_tcp()?);
        let log = std::fs::File::create(data.join("server.log"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data.join("store"))
            .args(["--otlp-grpc-listen", &grpc.to_string()])
            .args(["--otlp-http-listen", &otlp_http.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--zipkin-listen", &free_tcp()?.to_string()])
            .args(["--jaeger-http-listen", &free_tcp()?.to_string()])
            .args(["--flight-sql-listen", &free_tcp()?.to_string()])
            .args(["--jaeger-compact-listen", &free_udp()?.to_string()])
            .args(["--jaeger-binary-listen", &free_udp()?.to_string()])
            // The workload lies in the past hours; keep all of it and
            // compact every closed hour at once. The vacuum grace outlasts
            // any compaction job: a job's output is committed only if no
            // vacuum ran more than the grace after it was written (the
            // vacuum may have deleted it), so with a grace of 0s a job
            // longer than the check interval (an hour of a 100 M run takes
            // ~40 s) was never committed. Sizes come from the table, not
            // the disk, so replaced files left on disk count for nothing.
            .args(["--max-span-age", "30d", "--retention", "0s"])
            .args(["--compaction-interval", "2s", "--compaction-delay", "0s"])
            .args(["--vacuum-grace", "1h", "--retention-check-interval", "10s"])
            .args(["--flush-max-age", "5s"])
            .args(["--query-timeout", "300s", "--query-max-rows", "1000000"])
            .args(["--log-filter", "warn,tracelake_collector::compact=info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .env("TRACELAKE_OWNER", owner_marker());
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let watchdog = i32::try_from(child.id()).ok().and_then(|group| {
            Command::new("sh")
                .args(["-c", "read -r _; kill -9 0"])
                .process_group(group)
                .env("TRACELAKE_OWNER", owner_marker())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .inspect_err(|e| eprintln!("[bench] no watchdog for the server: {e}"))
                .ok()
        });
        let server = Self {
            child,
            watchdog,
            api: Api::new(format!("http://{http}")),
            otlp_http,
            otlp_grpc: grpc,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server.client.get(server.url("/ready")).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "the server did not become ready; see {}",
                    data.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident memory so far, bytes (Linux `VmHWM`).
    fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Api {
    pub fn new(http: impl Into<String>) -> Self {
        Self {
            http: http.into().trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// GET `path` with `query`; (status, body, ms).
    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<(u16, Value, f64)> {
        let started = Instant::now();
        let r = self.client.get(self.url(path)).query(query).send().await?;
        let status = r.status().as_u16();
        let body = r.bytes().await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok((
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            ms,
        ))
    }

    /// Runs `sql`; (rows, ms).
    async fn sql(&self, sql: &str) -> anyhow::Result<(Vec<Value>, f64)> {
        post_sql(&self.client, self.url("/api/v1/sql"), sql).await
    }

    async fn storage(&self) -> anyhow::Result<Value> {
        let (status, body, _) = self.get("/api/v1/storage", &[]).await?;
        if status != 200 {
            bail!("storage: HTTP {status}: {body}");
        }
        Ok(body)
    }
}

/// The SQL suite: run by tracelake and by DuckDB on the same files.
/// `{start}`/`{end}` are the last hour of the store (RFC 3339).
pub const SQL_SUITE: &[(&str, &str)] = &[
    (
        "p99 per operation",
        "SELECT service_name, name, count(*) AS spans, \
         percentile_cont(0.99) WITHIN GROUP (ORDER BY CAST(duration_ns AS DOUBLE)) AS p99_ns \
         FROM spans GROUP BY service_name, name ORDER BY p99_ns DESC, service_name, name LIMIT 20",
    ),
    (
        "error rate per service",
        "SELECT service_name, count(*) AS spans, \
         avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate \
         FROM spans GROUP BY service_name ORDER BY error_rate DESC, service_name",
    ),
    (
        "spans per hour",
        "SELECT date_trunc('hour', start_time) AS hour, count(*) AS spans \
         FROM spans GROUP BY 1 ORDER BY 1",
    ),
    (
        "slowest routes, last hour",
        "SELECT http_route, count(*) AS spans, avg(duration_ns) AS avg_ns, max(duration_ns) AS max_ns \
         FROM spans WHERE http_route IS NOT NULL \
         AND start_time >= TIMESTAMP '{start}' AND start_time < TIMESTAMP '{end}' \
         GROUP BY http_route ORDER BY avg_ns DESC, http_route LIMIT 10",
    ),
    (
        "database calls per system and server",
        "SELECT db_system, server_address, count(*) AS calls, sum(duration_ns) AS total_ns \
         FROM spans WHERE db_system IS NOT NULL \
         GROUP BY db_system, server_address ORDER BY calls DESC, server_address LIMIT 20",
    ),
];

/// Runs [`SQL_SUITE`] against servers already running (their HTTP
/// addresses, `http://host:port`), interleaved round by round so that every
/// server is measured in the same sitting: the median per query and
/// server, the ratio of each to the first server, and whether every server
/// gave the first one's rows. `{start}`/`{end}` cover the day before now
/// and the hour after. With `duckdb` (the input a runner leaves in its
/// data directory, `D/duckdb_input.json`: the live files of its store),
/// DuckDB too, last in each round, its rows compared by count.
pub async fn sql_suite(
    endpoints: &[String],
    repeat: usize,
    duckdb: Option<&Path>,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let now = now_ns();
    let (start, end) = (rfc3339(now - 24 * HOUR_NS), rfc3339(now + HOUR_NS));
    let temp = tempfile::tempdir()?;
    let mut duckdb = match duckdb {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| {
                format!(
                    "{} (a runner's data directory has it after a run with DuckDB)",
                    path.display()
                )
            })?;
            let input: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let files: Vec<PathBuf> = input["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect();
            if files.is_empty() {
                bail!("{} lists no files", path.display());
            }
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            Some(DuckDb::start(temp.path(), &files, threads)?)
        }
        None => None,
    };
    let mut queries = serde_json::Map::new();
    for (name, text) in SQL_SUITE {
        let text = text.replace("{start}", &start).replace("{end}", &end);
        let run = |endpoint: &str| {
            let url = format!("{endpoint}/api/v1/sql");
            let (client, text) = (&client, &text);
            async move {
                let (rows, ms) = post_sql(client, url, text).await?;
                anyhow::Ok((Value::Array(rows), ms))
            }
        };
        let mut samples = vec![Samples::default(); endpoints.len()];
        let mut answers = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            answers.push(run(endpoint).await?.0); // warm
        }
        let mut duck = (Samples::default(), 0);
        if let Some(duckdb) = &mut duckdb {
            duck.1 = duckdb.run(&text)?.0;
        }
        for _ in 0..repeat.max(1) {
            for (i, endpoint) in endpoints.iter().enumerate() {
                samples[i].0.push(run(endpoint).await?.1);
            }
            if let Some(duckdb) = &mut duckdb {
                duck.0.0.push(duckdb.run(&text)?.1);
            }
        }
        let first = samples[0].median();
        let mut per_server: Vec<Value> = endpoints
            .iter()
            .zip(&samples)
            .zip(&answers)
            .map(|((endpoint, s), rows)| {
                json!({
                    "endpoint": endpoint,
                    "median_ms": s.median(),
                    "ratio_to_first": s.median() / first,
                    "same_rows_as_first": rows_equal(rows, &answers[0]),
                })
            })
            .collect();
        if duckdb.is_some() {
            // Its rows are compared by count: DuckDB's types print
            // otherwise.
            let rows = answers[0].as_array().map_or(0, Vec::len);
            per_server.push(json!({
                "endpoint": "duckdb",
                "median_ms": duck.0.median(),
                "ratio_to_first": duck.0.median() / first,
                "first_x_duckdb": first / duck.0.median().max(1e-9),
                "same_row_count_as_first": duck.1 == rows,
            }));
        }
        queries.insert(name.to_string(), Value::Array(per_server));
    }
    Ok(json!({ "repeat": repeat, "queries": queries }))
}

/// The table's directory and its live files (relative to it) in a
/// server's `/api/v1/storage` report.
fn store_files(storage: &Value) -> (PathBuf, Vec<String>) {
    let files = storage["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["paths"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    let table_dir = PathBuf::from(
        storage["tableUrl"]
            .as_str()
            .and_then(|u| u.strip_prefix("file://"))
            .unwrap_or_default(),
    );
    (table_dir, files)
}

/// Posts `sql` to `url` (a server's `/api/v1/sql`); (rows, ms).
async fn post_sql(
    client: &reqwest::Client,
    url: String,
    sql: &str,
) -> anyhow::Result<(Vec<Value>, f64)> {
    let started = Instant::now();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(json!({ "sql": sql }).to_string())
        .send()
        .await?;
    let status = r.status();
    let body: Value = serde_json::from_slice(&r.bytes().await?)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        bail!("{sql}: HTTP {status}: {body}");
    }
    Ok((body["rows"].as_array().cloned().unwrap_or_default(), ms))
}

/// Equal rows, numbers within a relative 1e-9 (sums' last bits depend on
/// the order partial sums meet).
pub fn rows_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| rows_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| rows_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The DuckDB side, run by `python3` (or `TRACELAKE_PYTHON`).
const DUCKDB_SCRIPT: &str = include_str!("../duckdb_suite.py");

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn rfc3339(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Mean trace interval that spreads `spans` over `span_ns`.
fn trace_interval(seed: u64, spans: u64, span_ns: u64) -> u64 {
    let mut g = Generator::new(Topology::new(seed), seed, 0);
    let mut sample = 0;
    while sample < 50_000 {
        sample += g.request(1000).1 as u64;
    }
    let per_trace = sample as f64 / g.traces() as f64;
    (span_ns as f64 * per_trace / spans.max(1) as f64) as u64
}

/// Runs the benchmark; returns the report as JSON.
pub async fn run(config: &RunConfig) -> anyhow::Result<Value> {
    let temp;
    let data = match &config.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // Before the hour of ingest a large run takes, not after it.
    if config.duckdb {
        ensure_duckdb()?;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!("[bench] decode-only ceiling on {threads} threads");
    let ceiling_config = Config {
        spans: Some(200_000.min(config.spans.max(20_000))),
        batch: config.batch,
        seed: config.seed,
        pool_bytes: usize::MAX,
        ..Config::new("")
    };
    let (decoded, seconds) = ceiling::run(&ceiling_config, threads, 3, ceiling::Path::Protobuf);
    let ceiling_rate = decoded as f64 / seconds;

    let server = Server::start(&config.server, &data).await?;
    let hour_start = now_ns() / HOUR_NS * HOUR_NS;
    let store_ns = config.hours.max(1) * HOUR_NS;
    let store_start = hour_start - store_ns;
    let endpoint = match config.protocol.as_str() {
        "grpc" => format!("grpc://{}", server.otlp_grpc),
        "http" => format!("http://{}", server.otlp_http),
        other => bail!("protocol {other:?}: use http or grpc"),
    };
    eprintln!("[bench] ingesting {} spans over {endpoint}", config.spans);
    let ingest = driver::run(Config {
        streams: config.streams,
        spans: Some(config.spans),
        batch: config.batch,
        seed: config.seed,
        pool_bytes: config.pool_mib << 20,
        start_unix_ns: Some(store_start),
        // A little inside the window so the last traces end before the hour.
        trace_interval_ns: Some(trace_interval(
            config.seed,
            config.spans,
            store_ns - store_ns / 50,
        )),
        ..Config::new(endpoint)
    })
    .await?;
    if ingest.failed_requests > 0 {
        bail!(
            "{} requests failed during ingest, the first with: {}",
            ingest.failed_requests,
            ingest.first_error.as_deref().unwrap_or("?")
        );
    }
    let rss_ingest = server.peak_rss();
    let acked = ingest.spans_acked;

    eprintln!("[bench] waiting for every span to be committed");
    let settle = Instant::now();
    let flushed = wait_for(&server, config.settle_timeout, |s| {
        s["rows"].as_u64() == Some(acked)
    })
    .await?;
    let flushed_bytes = flushed["bytes"].as_u64().unwrap_or(0);
    let flushed_files = flushed["files"].as_u64().unwrap_or(0);
    eprintln!("[bench] waiting for compaction");
    let compacted = wait_for(&server, config.settle_timeout, |s| {
        s["rows"].as_u64() == Some(acked)
            && s["partitions"]
                .as_array()
                .is_some_and(|p| p.iter().all(|p| p["compacted"] == true))
    })
    .await?;
    let settle_seconds = settle.elapsed().as_secs_f64();
    let bytes = compacted["bytes"].as_u64().unwrap_or(0);
    let (table_dir, files) = store_files(&compacted);

    eprintln!("[bench] query suite");
    let reads = query_suite(
        &[&server.api],
        config.repeat.max(3),
        (hour_start - HOUR_NS, hour_start),
        (store_start, hour_start),
    )
    .await?;
    let queries: serde_json::Map<String, Value> = reads
        .iter()
        .map(|(name, per_server)| {
            let (samples, results) = &per_server[0];
            (name.to_string(), read_report(samples, *results, name))
        })
        .collect();
    let sql_window = (rfc3339(hour_start - HOUR_NS), rfc3339(hour_start));
    let mut duckdb = match config.duckdb {
        true => {
            eprintln!("[bench] the SQL suite, in tracelake and DuckDB over the same files");
            let paths: Vec<PathBuf> = files.iter().map(|f| table_dir.join(f)).collect();
            Some(DuckDb::start(&data, &paths, threads)?)
        }
        false => None,
    };
    let suite: Vec<(&str, String)> = SQL_SUITE
        .iter()
        .map(|(name, text)| {
            let text = text
                .replace("{start}", &sql_window.0)
                .replace("{end}", &sql_window.1);
            (*name, text)
        })
        .collect();
    let mut sql: BTreeMap<&str, Samples> = BTreeMap::new();
    let mut sql_rows: BTreeMap<&str, usize> = BTreeMap::new();
    let mut duck: BTreeMap<&str, Samples> = BTreeMap::new();
    let mut duck_rows: BTreeMap<&str, usize> = BTreeMap::new();
    // Warm, then round by round: each query in tracelake, then in DuckDB.
    for (name, text) in &suite {
        sql_rows.insert(name, server.sql(text).await?.0.len());
        if let Some(duckdb) = &mut duckdb {
            duck_rows.insert(name, duckdb.run(text)?.0);
        }
    }
    for _ in 0..config.repeat.max(3) {
        for (name, text) in &suite {
            sql.entry(name)
                .or_default()
                .0
                .push(server.sql(text).await?.1);
            if let Some(duckdb) = &mut duckdb {
                duck.entry(name).or_default().0.push(duckdb.run(text)?.1);
            }
        }
    }
    drop(duckdb);
    let rss_peak = server.peak_rss();
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };

    let sql_json: serde_json::Map<String, Value> = sql
        .iter()
        .map(|(name, s)| {
            let mut v = s.json();
            v["rows"] = json!(sql_rows[name]);
            if let Some(d) = duck.get(name) {
                v["duckdb_runs"] = json!(d.0.len());
                v["duckdb_median_ms"] = json!(d.median());
                v["duckdb_rows"] = json!(duck_rows[name]);
                v["ratio_to_duckdb"] = json!(s.median() / d.median().max(1e-9));
            }
            (name.to_string(), v)
        })
        .collect();
    Ok(json!({
        "workload": {
            "spans": config.spans,
            "seed": config.seed,
            "hours": config.hours,
            "protocol": config.protocol,
            "streams": config.streams,
            "batch": config.batch,
        },
        "machine": { "threads": threads },
        "ceiling": { "spans_per_second": ceiling_rate, "threads": threads },
        "ingest": ingest.json(),
        "ingest_fraction_of_ceiling": ingest.spans_per_second() / ceiling_rate,
        "storage": {
            "rows": acked,
            "flushed_files": flushed_files,
            "flushed_bytes_per_span": flushed_bytes as f64 / acked.max(1) as f64,
            "compacted_files": files.len(),
            "bytes": bytes,
            "bytes_per_span": bytes as f64 / acked.max(1) as f64,
            "settle_seconds": settle_seconds,
            "compaction_seconds_total": counter("tracelake_compaction_seconds_sum"),
            "compaction_rows_total": counter("tracelake_compaction_rows_total"),
        },
        "server_peak_rss_bytes": { "after_ingest": rss_ingest, "end": rss_peak },
        "queries": queries,
        "sql": sql_json,
    }))
}

/// Polls the storage description until `done`.
async fn wait_for(
    server: &Server,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let storage = server.storage().await?;
        if done(&storage) {
            return Ok(storage);
        }
        if Instant::now() > deadline {
            bail!("not settled within {timeout:?}: {storage}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Query-string parameters.
type Query = Vec<(&'static str, String)>;

/// Seconds since the epoch, as a query parameter.
fn secs(ns: u64) -> String {
    (ns / 1_000_000_000).to_string()
}

/// One read of the suite on every endpoint, starting with endpoint
/// `first` (so that no endpoint always goes first): per endpoint, in
/// `apis`' order, the latency in ms and what the answer held (spans of a
/// trace, traces found, requests broken down).
async fn read_everywhere(
    apis: &[&Api],
    first: usize,
    name: &str,
    path: &str,
    query: &[(&str, String)],
    expect: u16,
) -> anyhow::Result<Vec<(f64, u64)>> {
    let mut out = vec![(0.0, 0); apis.len()];
    for k in 0..apis.len() {
        let i = (first + k) % apis.len();
        let api = apis[i];
        let (status, body, ms) = api.get(path, query).await?;
        if status != expect {
            bail!("{name} on {}: HTTP {status}: {body}", api.http);
        }
        let results = body["spanCount"]
            .as_u64()
            .or_else(|| body["traces"].as_array().map(|t| t.len() as u64))
            .or_else(|| body["requestCount"].as_u64())
            .unwrap_or(0);
        out[i] = (ms, results);
    }
    Ok(out)
}

/// A read's latencies and answer sizes, one entry per endpoint.
type Reads = BTreeMap<&'static str, Vec<(Samples, u64)>>;

/// Trace by id, search and the cross-trace breakdown through the HTTP API
/// of every endpoint in `apis`, interleaved request by request, `n` of
/// each; the ids, operations and attribute values are looked up on the
/// first endpoint. `last_hour` and `whole` are the searches' time ranges
/// (ns).
async fn query_suite(
    apis: &[&Api],
    n: usize,
    last_hour: (u64, u64),
    whole: (u64, u64),
) -> anyhow::Result<Reads> {
    let first = apis[0];
    let mut reads = Reads::new();
    let mut record = |name: &'static str, got: Vec<(f64, u64)>| {
        let entry = reads
            .entry(name)
            .or_insert_with(|| vec![(Samples::default(), 0); got.len()]);
        for ((samples, results), (ms, found)) in entry.iter_mut().zip(got) {
            samples.0.push(ms);
            *results += found;
        }
    };

    // Ids known to exist; ids that do not.
    let (ids, _) = first
        .sql(&format!(
            // Root spans in span-id order: random traces of every hour.
            "SELECT encode(trace_id, 'hex') AS id FROM spans \
             WHERE parent_span_id IS NULL ORDER BY span_id LIMIT {n}"
        ))
        .await?;
    for (i, id) in ids.iter().filter_map(|r| r["id"].as_str()).enumerate() {
        let path = format!("/api/v1/traces/{id}");
        record(
            "trace by id",
            read_everywhere(apis, i, "trace by id", &path, &[], 200).await?,
        );
    }
    for i in 0..n as u64 {
        let id = format!("{:016x}{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), !i);
        let path = format!("/api/v1/traces/{id}");
        record(
            "trace by id, absent",
            read_everywhere(apis, i as usize, "absent trace", &path, &[], 404).await?,
        );
    }

    // Operations with many requests, and attribute values.
    let (ops, _) = first
        .sql(
            "SELECT service_name AS s, name AS o, count(*) AS n, \
             approx_percentile_cont(CAST(duration_ns AS DOUBLE), 0.9) AS p90 \
             FROM spans WHERE kind = 'SERVER' GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT 10",
        )
        .await?;
    let (tables, _) = first
        .sql(
            "SELECT span_attributes['db.collection.name'] AS v, count(*) AS n FROM spans \
             WHERE db_system IS NOT NULL GROUP BY 1 ORDER BY n DESC, 1 LIMIT 10",
        )
        .await?;
    // Paths that one request of the last hour had (an id in the path):
    // the search for a rare value, which the bloom filters of the
    // dedicated columns answer without reading the column.
    let (paths, _) = first
        .sql(&format!(
            "SELECT url_path AS v FROM spans WHERE url_path IS NOT NULL \
             AND start_time_unix_nano >= {} AND start_time_unix_nano < {} \
             GROUP BY 1 HAVING count(*) = 1 ORDER BY 1 LIMIT {n}",
            last_hour.0, last_hour.1
        ))
        .await?;
    let (p99, _) = first
        .sql("SELECT approx_percentile_cont(CAST(duration_ns AS DOUBLE), 0.99) AS p FROM spans")
        .await?;
    let p99_ms = (p99[0]["p"].as_f64().unwrap_or(1e6) / 1e6).max(1.0) as u64;
    let pick = |rows: &[Value], i: usize| rows[i % rows.len().max(1)].clone();
    if ops.is_empty() || tables.is_empty() {
        bail!("the store has no server spans or database spans");
    }

    for i in 0..n {
        let op = pick(&ops, i);
        let service = op["s"].as_str().unwrap_or_default().to_string();
        let operation = op["o"].as_str().unwrap_or_default().to_string();
        let min_ms = (op["p90"].as_f64().unwrap_or(1e6) / 1e6).max(1.0) as u64;
        let table = pick(&tables, i)["v"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut cases: Vec<(&'static str, &str, Query)> = vec![
            (
                "search service+operation+minDuration, last hour",
                "/api/v1/search",
                vec![
                    ("service", service.clone()),
                    ("operation", operation.clone()),
                    ("minDuration", format!("{min_ms}ms")),
                    ("limit", "20".into()),
                ],
            ),
            (
                "search attribute only, last hour",
                "/api/v1/search",
                vec![
                    ("attr", format!("db.collection.name={table}")),
                    ("limit", "20".into()),
                ],
            ),
            (
                "search minDuration only, whole store",
                "/api/v1/search",
                vec![
                    ("minDuration", format!("{p99_ms}ms")),
                    ("limit", "20".into()),
                ],
            ),
            (
                "cross-trace breakdown, last hour",
                "/api/v1/breakdown",
                vec![
                    ("service", service.clone()),
                    ("operation", operation.clone()),
                    ("limit", "2000".into()),
                ],
            ),
        ];
        // Left out where no path of the last hour is one request's.
        if let Some(value) = paths.get(i % paths.len().max(1)) {
            cases.push((
                "search attribute, one request's url.path, last hour",
                "/api/v1/search",
                vec![
                    (
                        "attr",
                        format!("url.path={}", value["v"].as_str().unwrap_or_default()),
                    ),
                    ("limit", "20".into()),
                ],
            ));
        }
        for (name, path, mut query) in cases {
            let (start, end) = if name.contains("whole store") {
                whole
            } else {
                last_hour
            };
            query.extend([("start", secs(start)), ("end", secs(end))]);
            record(
                name,
                read_everywhere(apis, i, name, path, &query, 200).await?,
            );
        }
    }
    Ok(reads)
}

/// The report of one endpoint's reads: latencies, and what a query found
/// on average (spans per trace for trace by id).
fn read_report(samples: &Samples, results: u64, name: &str) -> Value {
    let mut v = samples.json();
    let per = results as f64 / samples.0.len().max(1) as f64;
    if name == "trace by id" {
        v["spans_per_trace"] = json!(per);
    } else if name != "trace by id, absent" {
        v["results_per_query"] = json!(per);
    }
    v
}

/// [`query_suite`] against servers already running (their HTTP addresses),
/// `repeat` reads of each kind (at least 3), interleaved, each read
/// starting on another server: per read and server the latencies, the
/// ratio of the median to the first server's, and whether the answers held
/// as much as the first server's (spans, traces, requests: counts, not
/// contents). The searches cover the
/// hour before now ("last hour") and the day before now ("whole store"),
/// each up to a minute after now.
pub async fn reads_suite(endpoints: &[String], repeat: usize) -> anyhow::Result<Value> {
    let apis: Vec<Api> = endpoints.iter().map(Api::new).collect();
    let apis: Vec<&Api> = apis.iter().collect();
    let now = now_ns();
    let end = now + 60_000_000_000;
    let repeat = repeat.max(3);
    let reads = query_suite(
        &apis,
        repeat,
        (now - HOUR_NS, end),
        (now - 24 * HOUR_NS, end),
    )
    .await?;
    let mut out = serde_json::Map::new();
    for (name, per_server) in reads {
        let first = per_server[0].0.median();
        let rows: Vec<Value> = endpoints
            .iter()
            .zip(&per_server)
            .map(|(endpoint, (samples, results))| {
                let mut v = read_report(samples, *results, name);
                v["endpoint"] = json!(endpoint);
                v["ratio_to_first"] = json!(samples.median() / first);
                v["same_results_as_first"] = json!(*results == per_server[0].1);
                v
            })
            .collect();
        out.insert(name.to_string(), Value::Array(rows));
    }
    Ok(json!({ "repeat": repeat, "reads": out }))
}
/// DuckDB over a store's files: a Python process (`duckdb_suite.py`)
/// that runs one query a line, so that its runs interleave with
/// tracelake's, query by query, in the same sitting (the machines are
/// shared, and a sitting moved the runner's ratios by a fifth when DuckDB
/// ran after tracelake's runs). It ends when this is dropped.
pub struct DuckDb {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl DuckDb {
    /// Starts DuckDB over `files` (absolute paths) on `threads` threads,
    /// its script and input written to `dir`.
    pub fn start(dir: &Path, files: &[PathBuf], threads: usize) -> anyhow::Result<Self> {
        ensure_duckdb()?;
        let script = dir.join("duckdb_suite.py");
        std::fs::write(&script, DUCKDB_SCRIPT)?;
        let input = dir.join("duckdb_input.json");
        let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        std::fs::write(
            &input,
            json!({ "files": paths, "threads": threads }).to_string(),
        )?;
        let mut child = Command::new(python())
            .arg(&script)
            .arg(&input)
            .env("TRACELAKE_OWNER", owner_marker())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {}", python()))?;
        let stdin = child.stdin.take().context("DuckDB's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("DuckDB's stdout")?);
        let mut duckdb = Self {
            child,
            stdin,
            stdout,
        };
        let ready = duckdb.answer("opening the files")?;
        if ready["ready"] != true {
            bail!("DuckDB did not open the files: {ready}");
        }
        Ok(duckdb)
    }

    /// Runs `sql` and fetches its rows: (rows, ms).
    pub fn run(&mut self, sql: &str) -> anyhow::Result<(usize, f64)> {
        let sent =
            writeln!(self.stdin, "{}", json!({ "sql": sql })).and_then(|()| self.stdin.flush());
        if let Err(e) = sent {
            let status = self.child.wait()?;
            bail!("DuckDB ended ({status}) before {sql}: {e}");
        }
        let answer = self.answer(sql)?;
        match (answer["rows"].as_u64(), answer["ms"].as_f64()) {
            (Some(rows), Some(ms)) => Ok((rows as usize, ms)),
            _ => bail!("DuckDB's answer to {sql} has no rows and ms: {answer}"),
        }
    }

    /// The next line DuckDB writes, about `what`; its `error` as an error.
    fn answer(&mut self, what: &str) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("DuckDB ended ({status}) before answering {what}");
        }
        let answer: Value = serde_json::from_str(&line)
            .with_context(|| format!("DuckDB's answer to {what}: {line:?}"))?;
        if let Some(error) = answer["error"].as_str() {
            bail!("DuckDB, {what}: {error}");
        }
        Ok(answer)
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter that runs the DuckDB side: `TRACELAKE_PYTHON`,
/// else `python3`.
fn python() -> String {
    std::env::var("TRACELAKE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Checks that the interpreter has the `duckdb` package (and `pytz`, which
/// it needs for time zone-aware results). Nothing is installed from here:
/// a benchmark run changes no environment.
fn ensure_duckdb() -> anyhow::Result<()> {
    let python = python();
    let present = Command::new(&python)
        .args(["-c", "import duckdb, pytz"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    bail!(
        "{python} cannot import duckdb and pytz, the SQL baseline: install them \
         (python3 -m pip install duckdb pytz) or name another interpreter in TRACELAKE_PYTHON"
    )
}

/// A human summary of a report.
pub fn table(report: &Value) -> String {
    let mut s = String::new();
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let w = &report["workload"];
    s += &format!(
        "workload: {} spans, seed {}, {} h, {} x{} streams\n",
        w["spans"], w["seed"], w["hours"], w["protocol"], w["streams"]
    );
    s += &format!(
        "ingest: {:.0} spans/s ({:.0}% of the decode-only ceiling {:.0} spans/s), ack p50 {:.1} ms p99 {:.1} ms\n",
        f(&report["ingest"]["spans_per_second"]),
        100.0 * f(&report["ingest_fraction_of_ceiling"]),
        f(&report["ceiling"]["spans_per_second"]),
        f(&report["ingest"]["ack_latency_ms"]["p50"]),
        f(&report["ingest"]["ack_latency_ms"]["p99"]),
    );
    let st = &report["storage"];
    s += &format!(
        "storage: {:.1} bytes/span compacted ({} files), {:.1} bytes/span as flushed ({} files); settled in {:.0} s\n",
        f(&st["bytes_per_span"]),
        st["compacted_files"],
        f(&st["flushed_bytes_per_span"]),
        st["flushed_files"],
        f(&st["settle_seconds"]),
    );
    s += &format!(
        "server peak RSS: {:.0} MiB\n",
        f(&report["server_peak_rss_bytes"]["end"]) / 1048576.0
    );
    s += &format!(
        "{:<52} {:>10} {:>10} {:>10}\n",
        "query", "median ms", "p99 ms", "x DuckDB"
    );
    for section in ["queries", "sql"] {
        if let Some(map) = report[section].as_object() {
            for (name, v) in map {
                let ratio = v["ratio_to_duckdb"]
                    .as_f64()
                    .map_or(String::from("-"), |r| format!("{r:.2}"));
                s += &format!(
                    "{:<52} {:>10.1} {:>10.1} {:>10}\n",
                    name,
                    f(&v["median_ms"]),
                    f(&v["p99_ms"]),
                    ratio
                );
            }
        }
    }
    s
}
