//! Distributed SQL (`--sql-workers`): two query nodes, each serving a SQL
//! worker, over a table on an S3-compatible store (moto's server on
//! loopback) that an ingest node writes to. Users' SQL asked of either
//! query node is planned across both workers (every scan is spread: the
//! task size is one byte), with the rows not yet committed travelling in
//! the plan. The answers must equal one node's on the benchmark's SQL suite
//! and more, every acknowledged span once; a worker lost in the middle of
//! a query fails that query with a clear 503, never a partial answer, and
//! is left out of the queries after; a node without the cluster's peer token gets nothing from the workers.

use std::time::{Duration, Instant};

use serde_json::Value;
use tracelake_bench::runner::{SQL_SUITE, rows_equal};
use tracelake_bench::workload::{Generator, Topology};

use crate::s3::{CREDENTIALS, HOUR_NS, Moto};
use crate::server::TestServer;

const TOKEN: &str = "cluster-secret";

fn free_port() -> String {
    crate::server::free_port().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_sql_answers_as_one_node_and_a_lost_worker_fails_the_query() {
    let Some(moto) = Moto::with_bucket("dist").await else {
        return;
    };
    let storage = moto.storage_args("dist");
    let start = |dir: &std::path::Path, extra: Vec<String>, token: &'static str| {
        let dir = dir.to_path_buf();
        let args: Vec<String> = storage
            .iter()
            .cloned()
            .chain(["--max-span-age", "3650d", "--compaction-interval", "0s"].map(String::from))
            .chain(extra)
            .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut env = CREDENTIALS.to_vec();
            env.push(("TRACELAKE_PEER_TOKEN", token));
            TestServer::start_with_env(&dir, &args, &env).await
        }
    };
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    // Node b commits what it takes at once; node a keeps what it takes
    // buffered for the whole test and answers SQL too (role all): the
    // single-node answer, over the table and its own buffer.
    let committer = start(
        dirs[4].path(),
        [
            "--role",
            "ingest",
            "--node-id",
            "b",
            "--flush-max-age",
            "200ms",
        ]
        .map(String::from)
        .to_vec(),
        TOKEN,
    )
    .await;
    let single = start(
        dirs[0].path(),
        ["--node-id", "a", "--flush-max-age", "1h"]
            .map(String::from)
            .to_vec(),
        TOKEN,
    )
    .await;
    let workers = [free_port(), free_port()];
    let list = workers.join(",");
    let query_node = |i: usize| {
        [
            "--role",
            "query",
            "--ingest-peers",
            &single.http.to_string(),
            "--sql-worker-listen",
            &workers[i],
            "--sql-workers",
            &list,
            "--sql-worker-task-bytes",
            "1",
        ]
        .map(String::from)
        .to_vec()
    };
    let q1 = start(dirs[1].path(), query_node(0), TOKEN).await;
    let mut q2 = start(dirs[2].path(), query_node(1), TOKEN).await;

    // About 30,000 spans of the benchmark's workload over the last 40
    // minutes: two thirds committed by b, the rest buffered by a (and
    // sent in the plans from the query nodes to the workers).
    let now = crate::spans::now_nanos();
    let mut generator = Generator::new(Topology::new(7), 7, now - 40 * 60 * 1_000_000_000)
        .with_trace_interval(40 * 60 * 1_000_000_000 / 300);
    let mut sent = 0;
    for i in 0..30 {
        let (request, spans) = generator.request(1000);
        sent += spans as u64;
        if i < 20 {
            committer.export(&request).await;
        } else {
            single.export(&request).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while buffered(&committer).await > 0.0 {
        assert!(Instant::now() < deadline, "node b did not flush");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        buffered(&single).await > 0.0,
        "node a keeps its rows buffered"
    );
    let window_start = chrono::DateTime::from_timestamp_nanos((now - HOUR_NS) as i64)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let window_end = chrono::DateTime::from_timestamp_nanos((now + HOUR_NS) as i64)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let mut suite: Vec<String> = SQL_SUITE
        .iter()
        .map(|(_, sql)| {
            sql.replace("{start}", &window_start)
                .replace("{end}", &window_end)
        })
        .collect();
    suite.extend(
        [
            // Every row once: the buffered rows and the table's.
            "SELECT count(*) AS n, count(DISTINCT concat(encode(trace_id, 'hex'), \
             encode(span_id, 'hex'))) AS d FROM spans",
            // A join through a shuffle, the dedicated attribute columns
            // merged back into the map, and a window function.
            "SELECT c.service_name AS caller, s.service_name AS callee, count(*) AS calls \
             FROM spans s JOIN spans c ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id \
             WHERE s.service_name <> c.service_name GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 15",
            "SELECT cardinality(span_attributes) AS keys, \
             cardinality(resource_attributes) AS resource_keys, count(*) AS n \
             FROM spans GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT service_name, name, duration_ns, rank() OVER (PARTITION BY service_name \
             ORDER BY duration_ns DESC, name) AS r FROM spans \
             QUALIFY r <= 2 ORDER BY service_name, r, name LIMIT 40",
        ]
        .map(String::from),
    );
    for sql in &suite {
        let local = single.sql(sql).await;
        assert!(!local.is_empty(), "{sql}: no rows");
        for node in [&q1, &q2] {
            let spread = node.sql(sql).await;
            assert!(
                rows_equal(&Value::from(spread.clone()), &Value::from(local.clone())),
                "{sql}\ndistributed: {spread:?}\none node: {local:?}"
            );
        }
    }
    for node in [&single, &q1, &q2] {
        let total = node.sql("SELECT count(*) AS n FROM spans").await[0]["n"]
            .as_u64()
            .unwrap();
        assert_eq!(total, sent, "every acknowledged span, once");
    }
    assert!(
        buffered(&single).await > 0.0,
        "the answers included rows still buffered"
    );

    // A node with another token is refused by the workers: an error (a
    // misconfiguration, logged with an id, not a retry), no rows.
    let stranger = start(
        dirs[3].path(),
        [
            "--role",
            "query",
            "--sql-workers",
            &list,
            "--sql-worker-task-bytes",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        "not-the-secret",
    )
    .await;
    let (status, body) = stranger.sql_response("SELECT count(*) FROM spans").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.get("rows").is_none(), "{body}");

    // A worker stops answering in the middle of a query, then dies: the
    // query fails at once with a clear error, not a partial count.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &q2.pid().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let sql = "SELECT count(*) AS n FROM spans a JOIN spans b ON a.name = b.name";
    let asked = Instant::now();
    let query = tokio::spawn({
        let q1_sql = q1.url("/api/v1/sql");
        async move {
            let r = reqwest::Client::new()
                .post(q1_sql)
                .json(&serde_json::json!({ "sql": sql }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !query.is_finished(),
        "the query waits for the stopped worker"
    );
    q2.kill9();
    let (status, body) = query.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("SQL worker failed"), "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the failure is reported when the worker dies, not at the time limit"
    );
    // The node itself still answers what needs no worker.
    let (status, _) = q1.get("/api/v1/services").await;
    assert_eq!(status, 200);

    // The dead worker is still in q1's static list: it is left out of the
    // queries planned after (its port refuses connections), which answer
    // right on the workers left.
    let sql = "SELECT count(*) AS n FROM spans a JOIN spans b ON a.trace_id = b.trace_id \
               AND a.span_id = b.span_id";
    let expected = single.sql(sql).await;
    assert_eq!(expected[0]["n"].as_u64(), Some(sent));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = q1.sql_response(sql).await;
        if status == 200 {
            assert_eq!(body["rows"], Value::from(expected), "{body}");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "queries still fail 15 s after a worker died: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Each query after is spread over the workers left.
    let (status, body) = q1.sql_response(sql).await;
    assert_eq!(status, 200, "{body}");
}

/// Rows `node` holds in its buffer, not yet committed.
async fn buffered(node: &TestServer) -> f64 {
    crate::server::metric(
        &node.metrics().await,
        "tracelake_buffer_rows{tenant=\"default\"}",
    )
}
