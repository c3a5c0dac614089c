//! A simple local load, run on demand (not a benchmark suite: issue 6 builds
//! that): `cargo test --test e2e load -- --ignored --nocapture`.
//! Prints acknowledged spans/s and Parquet bytes per span.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prost::Message as _;

use crate::server::TestServer;
use crate::spans::{kv, now_nanos, request};

fn realistic_request(seed: u64, spans: u64) -> Vec<u8> {
    let start = now_nanos();
    let spans = (0..spans)
        .map(|i| {
            let id = seed * spans + i + 1;
            let mut s = crate::spans::span(u128::from(id / 20) + 1, id);
            s.parent_span_id = if id.is_multiple_of(20) {
                vec![]
            } else {
                (id - 1).to_be_bytes().to_vec()
            };
            s.start_time_unix_nano = start + i * 1000;
            s.end_time_unix_nano = s.start_time_unix_nano + 1_000_000 + (id * 7919) % 50_000_000;
            s.name = format!("GET /api/v{}/items/{{id}}", id % 5);
            s.attributes = vec![
                kv("http.request.method", "GET"),
                kv("http.route", &format!("/api/v{}/items/{{id}}", id % 5)),
                kv(
                    "url.full",
                    &format!("https://shop.example.com/api/v1/items/{}", id % 1000),
                ),
                kv("server.address", "shop.example.com"),
                kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                kv("net.peer.ip", &format!("10.0.{}.{}", id % 7, id % 200)),
            ];
            s
        })
        .collect();
    let mut r = request(&format!("svc-{}", seed % 12), spans);
    let resource = r.resource_spans[0].resource.as_mut().unwrap();
    resource.attributes.extend([
        kv("host.name", &format!("host-{}", seed % 12)),
        kv("telemetry.sdk.language", "rust"),
        kv("telemetry.sdk.version", "0.33.0"),
        kv("deployment.environment.name", "production"),
    ]);
    r.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
async fn load() {
    const SPANS_PER_REQUEST: u64 = 500;
    const REQUESTS: u64 = 400;
    const STREAMS: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &["--flush-max-age", "2s"]).await;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..REQUESTS)
            .map(|seed| realistic_request(seed, SPANS_PER_REQUEST))
            .collect(),
    );
    let avg =
        bodies.iter().map(Vec::len).sum::<usize>() as f64 / (REQUESTS * SPANS_PER_REQUEST) as f64;
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|stream| {
            let (bodies, acked, url) = (Arc::clone(&bodies), Arc::clone(&acked), server.otlp_url());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for body in bodies
                    .iter()
                    .skip(stream as usize)
                    .step_by(STREAMS as usize)
                {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    acked.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let spans = acked.load(Ordering::Relaxed);
    server.terminate();
    let table = dir.path().join("tenants/default/spans");
    let mut parquet_bytes = 0;
    let mut stack = vec![table];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                parquet_bytes += std::fs::metadata(&p).unwrap().len();
            }
        }
    }
    println!(
        "load: {spans} spans in {:.2}s over {STREAMS} streams = {:.0} spans/s (durable before ack); \
         OTLP protobuf {avg:.0} B/span; Parquet {:.1} B/span",
        elapsed.as_secs_f64(),
        spans as f64 / elapsed.as_secs_f64(),
        parquet_bytes as f64 / spans as f64
    );
}

/// The benchmark's load driver (`tracelake-bench drive`) delivers its
/// seeded workload over OTLP/HTTP and gRPC: every acknowledged span is
/// stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_driver_delivers_every_acknowledged_span() {
    use tracelake_bench::driver::{Config, run};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-max-age", "500ms"]).await;
    let mut total = 0;
    for (seed, endpoint) in [
        (3, format!("http://{}", server.otlp_http)),
        (4, format!("grpc://{}", server.grpc)),
    ] {
        let report = run(Config {
            streams: 2,
            spans: Some(10_000),
            seed,
            // A small pool: sent about 20 times over, each time as other
            // traces at later times.
            pool_bytes: 256 << 10,
            ..Config::new(endpoint.clone())
        })
        .await
        .unwrap();
        assert_eq!(report.failed_requests, 0, "{endpoint}");
        assert_eq!(report.spans_rejected, 0, "{endpoint}");
        assert!(
            report.spans_acked >= 10_000,
            "{endpoint}: {}",
            report.table()
        );
        assert!(
            (400.0..=650.0).contains(&report.bytes_per_span),
            "{}",
            report.bytes_per_span
        );
        assert!(report.json()["spans_per_second"].as_f64().unwrap() > 0.0);
        total += report.spans_acked;
    }
    // Every span acknowledged is stored, and every span sent is distinct.
    let rows = server
        .sql(
            "SELECT count(*) AS n, \
             count(DISTINCT concat(encode(trace_id, 'hex'), encode(span_id, 'hex'))) AS d \
             FROM spans",
        )
        .await;
    assert_eq!(rows[0]["n"], total);
    assert_eq!(rows[0]["d"], total);
}

/// Under overload the server pushes back (429 with Retry-After, gRPC
/// RESOURCE_EXHAUSTED with RetryInfo) instead of growing; the driver waits
/// and retries as exporters do, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_pushed_back_and_retried_without_loss() {
    use tracelake_bench::driver::{Config, run};
    let dir = tempfile::tempdir().unwrap();
    // One byte of buffer: every request beyond one per flush is refused.
    let server = TestServer::start(
        dir.path(),
        &["--max-buffer-bytes", "1", "--flush-max-age", "100ms"],
    )
    .await;
    let report = run(Config {
        streams: 4,
        spans: Some(4_000),
        batch: 500,
        seed: 5,
        pool_bytes: 16 << 20,
        ..Config::new(format!("http://{}", server.otlp_http))
    })
    .await
    .unwrap();
    assert!(
        report.throttled > 0,
        "the server pushed back: {}",
        report.table()
    );
    assert_eq!(report.failed_requests, 0, "{}", report.table());
    let rows = server.sql("SELECT count(*) AS n FROM spans").await;
    assert_eq!(rows[0]["n"], report.spans_acked);
}

/// The benchmark runner end to end on a small store: the real server, the
/// ingest, flushes and compaction, every query kind, and DuckDB over the
/// same files (which must return as many rows as tracelake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_runner_reports_every_figure() {
    use tracelake_bench::runner::{RunConfig, SQL_SUITE, run, sql_suite, table};
    // Without them only the DuckDB part is skipped (and listed as such).
    let duckdb = crate::server::python_with("duckdb, pytz", "duckdb pytz").is_some();
    let data = tempfile::tempdir().unwrap();
    let config = RunConfig {
        server: env!("CARGO_BIN_EXE_tracelake").into(),
        spans: 30_000,
        hours: 2,
        protocol: "http".into(),
        streams: 2,
        batch: 500,
        seed: 7,
        pool_mib: 64,
        repeat: 3,
        duckdb,
        data_dir: Some(data.path().to_path_buf()),
        settle_timeout: std::time::Duration::from_secs(120),
    };
    let report = run(&config).await.unwrap();
    eprintln!("{}", table(&report));
    let acked = report["ingest"]["spans_acked"].as_u64().unwrap();
    assert!(acked >= 30_000, "{report}");
    assert_eq!(report["storage"]["rows"], acked);
    assert!(report["storage"]["compacted_files"].as_u64().unwrap() >= 2);
    let bytes_per_span = report["storage"]["bytes_per_span"].as_f64().unwrap();
    assert!((1.0..200.0).contains(&bytes_per_span), "{bytes_per_span}");
    assert!(report["ceiling"]["spans_per_second"].as_f64().unwrap() > 0.0);
    assert!(report["ingest_fraction_of_ceiling"].as_f64().unwrap() > 0.0);
    assert!(report["server_peak_rss_bytes"]["end"].as_u64().unwrap() > 0);
    let queries = report["queries"].as_object().unwrap();
    assert_eq!(queries.len(), 7, "{queries:?}");
    for (name, q) in queries {
        assert_eq!(q["runs"], 3, "{name}");
        assert!(q["median_ms"].as_f64().unwrap() > 0.0, "{name}");
    }
    assert!(queries["trace by id"]["spans_per_trace"].as_f64().unwrap() >= 5.0);
    // A path one request of the last hour had: its one trace, every time.
    assert_eq!(
        queries["search attribute, one request's url.path, last hour"]["results_per_query"], 1.0,
        "{report}"
    );
    for name in [
        "search attribute only, last hour",
        "search minDuration only, whole store",
        "cross-trace breakdown, last hour",
    ] {
        assert!(
            queries[name]["results_per_query"].as_f64().unwrap() > 0.0,
            "{name} found nothing: {report}"
        );
    }
    let sql = report["sql"].as_object().unwrap();
    assert_eq!(sql.len(), SQL_SUITE.len());
    for (name, q) in sql {
        assert!(q["rows"].as_u64().unwrap() > 0, "{name}");
        if duckdb {
            assert_eq!(q["duckdb_rows"], q["rows"], "{name}");
            assert_eq!(q["duckdb_runs"], 3, "{name}");
            assert!(q["ratio_to_duckdb"].as_f64().unwrap() > 0.0, "{name}");
        }
    }
    if !duckdb {
        return;
    }
    // `tracelake-bench sql --duckdb`: a query node on the runner's store,
    // and DuckDB over the files the runner listed.
    let server = TestServer::start(&data.path().join("store"), &["--role", "query"]).await;
    let input = data.path().join("duckdb_input.json");
    let report = sql_suite(&[server.url("")], 2, Some(&input)).await.unwrap();
    for (name, per_server) in report["queries"].as_object().unwrap() {
        let duck = &per_server[1];
        assert_eq!(duck["endpoint"], "duckdb", "{name}: {report}");
        assert_eq!(duck["same_row_count_as_first"], true, "{name}: {report}");
        assert!(duck["first_x_duckdb"].as_f64().unwrap() > 0.0, "{name}");
    }
    assert_eq!(
        report["queries"].as_object().unwrap().len(),
        SQL_SUITE.len()
    );
}

/// The runner's DuckDB baseline answers one query a line (so that its runs
/// interleave with tracelake's), and a query it cannot run is an error
/// naming the query, after which it goes on answering.
#[test]
fn duckdb_baseline_answers_query_by_query() {
    use tracelake_bench::runner::DuckDb;
    let Some(python) = crate::server::python_with("duckdb, pytz", "duckdb pytz") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spans.parquet");
    let made = std::process::Command::new(&python)
        .arg("-c")
        .arg(format!(
            "import duckdb; duckdb.sql(\"COPY (SELECT * FROM (VALUES \
             (1700000000000000000, 'a'), (1700000001000000000, 'b'), \
             (1700000002000000000, 'a')) t(start_time_unix_nano, service_name)) \
             TO '{}' (FORMAT parquet)\")",
            file.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    // A file list gone stale: an error that names the file, at the start.
    let gone = dir.path().join("compacted-gone.parquet");
    let error = DuckDb::start(dir.path(), std::slice::from_ref(&gone), 1)
        .err()
        .expect("no such file")
        .to_string();
    assert!(error.contains("compacted-gone.parquet"), "{error}");
    let mut duckdb = DuckDb::start(dir.path(), &[file], 1).unwrap();
    let (rows, ms) = duckdb
        .run("SELECT service_name, count(*) FROM spans GROUP BY 1")
        .unwrap();
    assert_eq!(rows, 2);
    assert!(ms > 0.0);
    let error = duckdb
        .run("SELECT no_such_column FROM spans")
        .unwrap_err()
        .to_string();
    // DuckDB's own words, not only the query the error repeats.
    assert!(error.contains("Binder Error"), "{error}");
    let sql = "SELECT * FROM spans WHERE start_time >= TIMESTAMP '2023-11-14 22:13:21'";
    assert_eq!(duckdb.run(sql).unwrap().0, 2);
}
