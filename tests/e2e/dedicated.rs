//! Dedicated columns of the operator's own keys (`--dedicated-columns`):
//! added to a table that holds spans already, they take their keys' values
//! from then on, while the spans stored before (in files, and acknowledged
//! but only in the write-ahead log) keep them in the map; every read sees
//! each attribute once, before and after compaction merges the old files
//! with the new, and after a restart without the setting.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

use crate::server::TestServer;
use crate::spans::{int_kv, kv, request, span};

const HOUR_NS: u64 = 3_600_000_000_000;
const COLUMNS: &str = "span:app.tenant,span:int:app.retries,resource:team.name";

/// Trace `trace`'s one span, in the hour two hours before `anchor`'s (a
/// closed hour, compacted without waiting), with the configured keys.
fn tagged(
    trace: u128,
    anchor: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let mut s: Span = span(trace, 1);
    s.start_time_unix_nano = anchor - 2 * HOUR_NS + trace as u64;
    s.end_time_unix_nano = s.start_time_unix_nano + 1_000_000;
    s.attributes = vec![
        kv("app.tenant", "acme"),
        int_kv("app.retries", 2),
        kv("http.route", "/cart"),
    ];
    let mut r = request("shop", vec![s]);
    r.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("team.name", "checkout"));
    r
}

async fn rows_committed(server: &TestServer) -> u64 {
    server.committed().await.values().sum()
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "not within 60 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What every API must show of trace `trace`: the attributes as sent.
async fn check_trace(server: &TestServer, trace: u128) {
    let (status, body) = server.get(&format!("/api/v1/traces/{trace:032x}")).await;
    assert_eq!(status, 200, "{body}");
    let span = &body["spans"][0];
    assert_eq!(
        span["attributes"],
        json!({"app.tenant": "acme", "app.retries": 2, "http.route": "/cart"}),
        "{body}"
    );
    assert_eq!(
        span["resource"]["attributes"],
        json!({"service.name": "shop", "team.name": "checkout"}),
        "{body}"
    );
}

/// The SQL view of the three traces: each has every key in the map view,
/// and only those sent after the columns existed have them in the column.
async fn check_sql(server: &TestServer, in_columns: u64) {
    let rows = server
        .sql(
            "SELECT count(*) AS n, \
             count(*) FILTER (WHERE span_attributes['app.tenant'] = 'acme') AS tenant, \
             count(*) FILTER (WHERE span_attributes['app.retries'] = '2' \
                 AND span_attribute_types['app.retries'] = 2) AS retries, \
             count(*) FILTER (WHERE resource_attributes['team.name'] = 'checkout') AS team, \
             count(*) FILTER (WHERE array_has(map_keys(span_attributes), 'app.tenant')) AS keys, \
             count(span_app_tenant) AS col_tenant, count(span_app_retries) AS col_retries, \
             count(resource_team_name) AS col_team \
             FROM spans WHERE service_name = 'shop'",
        )
        .await;
    assert_eq!(
        rows,
        [
            json!({"n": 3, "tenant": 3, "retries": 3, "team": 3, "keys": 3,
                "col_tenant": in_columns, "col_retries": in_columns, "col_team": in_columns})
        ]
    );
    let now = crate::spans::now_nanos() / 1_000_000_000;
    let window = format!("start={}&end={}", now - 4 * 3600, now + 60);
    for q in [
        r#"{ span.app.tenant = "acme" && resource.team.name = "checkout" }"#,
        r#"{ span.app.retries = 2 }"#,
    ] {
        let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        let (status, body) = server
            .get(&format!("/tempo/api/search?q={q}&{window}&limit=20"))
            .await;
        assert_eq!(status, 200, "{body}");
        let found = body["traces"].as_array().map_or(0, Vec::len);
        assert_eq!(found, 3, "{q}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_columns_join_a_table_with_spans_and_every_read_sees_each_attribute() {
    let data = tempfile::tempdir().unwrap();
    let anchor = crate::spans::now_nanos() / HOUR_NS * HOUR_NS + HOUR_NS / 2;
    let no_compaction = ["--compaction-interval", "0s"];

    // Before the columns: one trace committed, one acknowledged and only
    // in the write-ahead log when the server dies.
    let mut server = TestServer::start(
        data.path(),
        &[&no_compaction[..], &["--flush-max-age", "50ms"]].concat(),
    )
    .await;
    server.export(&tagged(1, anchor)).await;
    wait_for("the first trace committed", async || {
        rows_committed(&server).await == 1
    })
    .await;
    server.terminate();
    let mut server = TestServer::start(
        data.path(),
        &[&no_compaction[..], &["--flush-max-age", "1h"]].concat(),
    )
    .await;
    server.export(&tagged(2, anchor)).await;
    server.kill9();

    // With the columns: the WAL's trace is replayed into the new layout,
    // a new trace fills the columns.
    let compaction = [
        "--flush-max-age",
        "50ms",
        "--compaction-interval",
        "200ms",
        "--compaction-delay",
        "0s",
        "--dedicated-columns",
        COLUMNS,
    ];
    let mut server = TestServer::start(data.path(), &compaction).await;
    server.export(&tagged(3, anchor)).await;
    // The new trace first: the server's first read must already know the
    // columns the table was given at its start.
    for trace in [3, 1, 2] {
        check_trace(&server, trace).await;
    }
    check_sql(&server, 1).await;

    // Compaction merges the files of before and after into one; nothing
    // is lost or doubled on the way.
    wait_for("the hour compacted into one file", async || {
        let (_, storage) = server.get("/api/v1/storage").await;
        let partitions = storage["partitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        rows_committed(&server).await == 3
            && partitions.len() == 1
            && partitions[0]["compacted"] == true
            && storage["files"] == 1
    })
    .await;
    for trace in 1..=3 {
        check_trace(&server, trace).await;
    }
    check_sql(&server, 1).await;
    server.terminate();

    // Without the setting the table keeps its columns, and new spans
    // still fill them.
    let server = TestServer::start(data.path(), &["--flush-max-age", "50ms"]).await;
    let rows = server
        .sql("SELECT count(span_app_tenant) AS n FROM spans")
        .await;
    assert_eq!(rows, [json!({"n": 1})]);
    let mut fourth = tagged(4, anchor);
    fourth.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes[0] = kv("service.name", "other");
    server.export(&fourth).await;
    check_trace_service(&server, 4, "other").await;
    let rows = server
        .sql("SELECT count(span_app_tenant) AS n FROM spans WHERE service_name = 'other'")
        .await;
    assert_eq!(rows, [json!({"n": 1})]);
}

async fn check_trace_service(server: &TestServer, trace: u128, service: &str) {
    let (status, body): (u16, Value) = server.get(&format!("/api/v1/traces/{trace:032x}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spans"][0]["serviceName"], service, "{body}");
    assert_eq!(
        body["spans"][0]["attributes"]["app.tenant"], "acme",
        "{body}"
    );
}
