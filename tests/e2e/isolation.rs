//! Nothing a query client sends can stop the server: runaway SQL (operators
//! that never yield) over HTTP and Flight SQL is stopped at the time limit
//! while ingest, `/ready` and trace by id keep answering; admission control
//! refuses what does not fit; a client that goes away stops its query; and
//! every port explains what it does not serve.

use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt as _};
use arrow_flight::{FlightDescriptor, Ticket};
use futures::StreamExt as _;
use prost::Message as _;

use crate::server::{TestServer, metric};
use crate::spans::{request, span};

/// Queries whose operators never return `Pending`: a cross join feeding
/// an aggregate, a nested-loop join, and a grouped aggregation over a cross
/// join.
const RUNAWAYS: [&str; 3] = [
    "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 100000000) b",
    "SELECT count(*) FROM generate_series(1, 10000000) a JOIN generate_series(1, 10000000) b ON a.value < b.value",
    "SELECT a.value % 7 AS k, sum(b.value) FROM generate_series(1, 100000000) a, generate_series(1, 100000000) b GROUP BY 1",
];

/// CPU seconds the process `pid` has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Waits until the server uses almost no CPU for a whole second; returns
/// how long that took, failing after `limit`.
async fn wait_quiet(pid: u32, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = cpu_seconds(pid) - before;
        if used < 0.15 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "the server still uses CPU ({used:.2} s in the last second) {:?} after the queries were answered",
            start.elapsed()
        );
    }
}

/// A plain Flight SQL statement (no prepare): GetFlightInfo, then DoGet of
/// its ticket.
async fn flight_sql(server: &TestServer, sql: &str) -> Result<usize, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.flight_sql))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightServiceClient::new(channel);
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()))
        .await?
        .into_inner();
    let ticket: Ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await?.into_inner();
    let mut messages = 0;
    while let Some(data) = stream.next().await {
        data?;
        messages += 1;
    }
    Ok(messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runaway_queries_are_stopped_while_ingest_and_reads_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--query-timeout", "3s", "--query-max-concurrent", "8"],
    )
    .await;
    let server = std::sync::Arc::new(server);
    let trace: u128 = 0x1111_2222_3333_4444_5555_6666_7777_8888;
    server
        .export(&request("isolated", vec![span(trace, 1)]))
        .await;
    let pid = server.pid();

    let started = Instant::now();
    let mut runaways = Vec::new();
    for sql in RUNAWAYS {
        let server = std::sync::Arc::clone(&server);
        runaways.push(tokio::spawn(async move {
            let (status, body) = server.sql_response(sql).await;
            (status, body.to_string(), started.elapsed())
        }));
    }
    let flight = {
        let server = std::sync::Arc::clone(&server);
        tokio::spawn(async move {
            let out = flight_sql(&server, RUNAWAYS[0]).await;
            (out, started.elapsed())
        })
    };

    // While they run: health, trace by id and ingest answer promptly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    let mut next_span = 100;
    while started.elapsed() < Duration::from_millis(2700) {
        let t = Instant::now();
        for path in ["/ready", "/health", "/metrics"] {
            let r = client.get(server.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
        }
        let (status, body) = server
            .get(&format!(
                "/api/v1/traces/{}",
                hex::encode(trace.to_be_bytes())
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        next_span += 1;
        server
            .export(&request("isolated", vec![span(trace, next_span)]))
            .await;
        worst = worst.max(t.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{probes} rounds of /ready, /health, /metrics, trace by id and ingest during the runaways; slowest {worst:?}"
    );
    assert!(probes >= 3, "only {probes} probe rounds");
    assert!(
        worst < Duration::from_millis(1500),
        "a round of cheap requests took {worst:?} while runaway queries ran"
    );

    for runaway in runaways {
        let (status, body, at) = runaway.await.unwrap();
        assert_eq!(status, 408, "{body}");
        assert!(body.contains("time limit of 3s"), "{body}");
        assert!(at < Duration::from_secs(6), "answered after {at:?}");
    }
    let (out, at) = flight.await.unwrap();
    let status = out.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("3s"), "{status}");
    assert!(
        at < Duration::from_secs(6),
        "Flight SQL answered after {at:?}"
    );

    let quiet = wait_quiet(pid, Duration::from_secs(6)).await;
    eprintln!("server CPU quiet {quiet:?} after the answers");

    // Every span acknowledged meanwhile is there.
    let rows = server
        .sql("SELECT count(*) AS n FROM spans WHERE service_name = 'isolated'")
        .await;
    assert_eq!(rows[0]["n"], 1 + (next_span - 100), "{rows:?}");
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "tracelake_queries_timed_out_total{class=\"heavy\"}"
        ) >= 4.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_beyond_the_queue_and_keeps_a_slot_for_trace_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--query-timeout",
            "3s",
            "--query-max-concurrent",
            "2",
            "--query-reserved-interactive",
            "1",
            "--query-max-queued",
            "1",
        ],
    )
    .await;
    let server = std::sync::Arc::new(server);
    let trace: u128 = 0xabcd;
    server
        .export(&request("admitted", vec![span(trace, 1)]))
        .await;
    // One runaway runs in the only shared slot, one waits in the queue.
    let mut heavy = Vec::new();
    for _ in 0..2 {
        let server = std::sync::Arc::clone(&server);
        heavy.push(tokio::spawn(async move {
            server.sql_response(RUNAWAYS[0]).await
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A third is refused at once, with Retry-After.
    let t = Instant::now();
    let r = reqwest::Client::new()
        .post(server.url("/api/v1/sql"))
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body = r.text().await.unwrap();
    assert!(body.contains("too many queries"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Trace by id still answers, in the reserved slot.
    let t = Instant::now();
    let (status, body) = server
        .get(&format!(
            "/api/v1/traces/{}",
            hex::encode(trace.to_be_bytes())
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Ingest is not a query: unaffected.
    server
        .export(&request("admitted", vec![span(trace, 2)]))
        .await;
    for h in heavy {
        let (status, body) = h.await.unwrap();
        assert!(status == 408 || status == 429, "{status} {body}");
    }
    let metrics = server.metrics().await;
    assert!(
        metric(
            &metrics,
            "tracelake_queries_rejected_total{class=\"heavy\"}"
        ) >= 1.0,
        "{metrics}"
    );
    let rows = server
        .sql("SELECT count(*) AS n FROM spans WHERE service_name = 'admitted'")
        .await;
    assert_eq!(rows[0]["n"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_stops_its_query() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--query-timeout", "10m"]).await;
    let pid = server.pid();
    // The client leaves (its request future dropped, the connection closed)
    // once the server reports the query running.
    let request = reqwest::Client::new()
        .post(server.url("/api/v1/sql"))
        .json(&serde_json::json!({ "sql": RUNAWAYS[0] }))
        .send();
    let running = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = server.metrics().await;
            if metric(&m, "tracelake_queries_running{class=\"heavy\"}") == 1.0 {
                // Give it a moment on the CPU, then leave.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
            assert!(Instant::now() < deadline, "the query never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = request => panic!("the runaway query answered: {r:?}"),
        () = running => {}
    }
    let quiet = wait_quiet(pid, Duration::from_secs(6)).await;
    eprintln!("server CPU quiet {quiet:?} after the client left");
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "tracelake_queries_cancelled_total{class=\"heavy\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_names_what_it_does_not_serve() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let cases: [(reqwest::Method, String, u16, &str); 9] = [
        (
            reqwest::Method::POST,
            format!("http://{}/v1/tracez", server.otlp_http),
            404,
            "OTLP/HTTP traces are POST /v1/traces",
        ),
        (
            reqwest::Method::GET,
            format!("http://{}/v1/traces", server.otlp_http),
            405,
            // OTLP's own answer: a google.rpc.Status.
            "only POST is supported on /v1/traces",
        ),
        (
            reqwest::Method::GET,
            format!("http://{}/nope", server.grpc),
            404,
            "TraceService/Export",
        ),
        (
            reqwest::Method::GET,
            server.url("/api/v1/nope"),
            404,
            "no such endpoint: GET /api/v1/nope",
        ),
        (
            reqwest::Method::GET,
            server.url("/api/v1/sql"),
            405,
            "method GET is not allowed for /api/v1/sql",
        ),
        (
            reqwest::Method::GET,
            server.url("/jaeger/api/nope"),
            404,
            "Jaeger's API is under /jaeger/api",
        ),
        (
            reqwest::Method::POST,
            format!("http://{}/api/v2/span", server.zipkin),
            404,
            "POST /api/v2/spans",
        ),
        (
            reqwest::Method::POST,
            format!("http://{}/api/trace", server.jaeger_http),
            404,
            "POST /api/traces",
        ),
        (
            reqwest::Method::GET,
            format!("http://{}/", server.flight_sql),
            404,
            "arrow.flight.protocol.FlightService",
        ),
    ];
    for (method, url, status, expected) in cases {
        let r = client.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {url}");
        if status == 405 {
            assert!(r.headers().contains_key("allow"), "{method} {url}");
        }
        let body = r.text().await.unwrap();
        assert!(body.contains(expected), "{method} {url}: {body}");
    }
}

/// The time limit holds on every query API, each answering in its own
/// envelope: with a 1 ms limit every request is over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_api_answers_its_time_limit_in_its_own_envelope() {
    // Slots enough that no request waits for one: a timed-out task keeps
    // its slot until it has really stopped, which on a busy machine can
    // outlast 1 ms and turn the next answer into a 429.
    limits_on_every_api(
        &["--query-timeout", "1ms", "--query-max-concurrent", "64"],
        408,
        "time limit of 1ms",
        true,
    )
    .await;
}

/// The memory limit, likewise: with a pool of 1 KiB every query that
/// aggregates or sorts is over it (trace by id reads its pages directly and
/// needs no pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_api_answers_its_memory_limit_in_its_own_envelope() {
    limits_on_every_api(
        &["--query-memory-limit-bytes", "1024"],
        422,
        "memory limit",
        false,
    )
    .await;
}

async fn limits_on_every_api(args: &[&str], status_wanted: u16, says: &str, by_id_too: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), args).await;
    server
        .export(&request("limited", vec![span(0x77, 1), span(0x77, 2)]))
        .await;
    // A call into another service, so that dependencies join something.
    let mut child = span(0x77, 3);
    child.parent_span_id = 1u64.to_be_bytes().to_vec();
    server.export(&request("limited-db", vec![child])).await;
    // Work enough that no answer can be ready within a 1 ms limit, however
    // fast the machine: a small trace read from the buffer once came back
    // whole in under a millisecond.
    for first in (4..4004u64).step_by(1000) {
        let spans = (first..first + 1000)
            .map(|i| {
                let mut s = span(0x77, i);
                s.parent_span_id = 1u64.to_be_bytes().to_vec();
                s
            })
            .collect();
        server.export(&request("limited-db", spans)).await;
    }
    let id = format!("{:032x}", 0x77);
    let mut paths = vec![
        format!("/api/v1/traces/{id}"),
        "/api/v1/services".to_string(),
        "/api/v1/search?service=limited".to_string(),
        "/api/v1/metrics/red".to_string(),
        "/api/v1/dependencies".to_string(),
        "/api/v1/breakdown?service=limited".to_string(),
        format!("/jaeger/api/traces/{id}"),
        "/jaeger/api/traces?service=limited".to_string(),
        "/jaeger/api/v3/traces?query.service_name=limited&query.start_time_min=2020-01-01T00:00:00Z&query.start_time_max=2040-01-01T00:00:00Z".to_string(),
        format!("/zipkin/api/v2/trace/{id}"),
        "/zipkin/api/v2/traces?serviceName=limited".to_string(),
        format!("/tempo/api/v2/traces/{id}"),
        "/tempo/api/search?q=%7B%7D".to_string(),
    ];
    if !by_id_too {
        paths.retain(|p| !p.contains(&id));
    }
    for path in paths {
        let t = Instant::now();
        let (status, body) = server.get(&path).await;
        assert_eq!(status, status_wanted, "{path}: {body}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            t.elapsed()
        );
        let message = if path.starts_with("/jaeger/api/v3") {
            body["error"]["message"].as_str()
        } else if path.starts_with("/jaeger") {
            body["errors"][0]["msg"].as_str()
        } else if path.starts_with("/api/v1") {
            body["error"].as_str()
        } else {
            body.as_str()
        };
        let message = message.unwrap_or_else(|| panic!("{path}: not its envelope: {body}"));
        assert!(message.contains(says), "{path}: {message}");
    }
}
