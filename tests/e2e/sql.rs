//! The SQL API: read-only, limits, output formats, and the README's examples.

use prost::Message as _;

use crate::server::{TestServer, metric};
use crate::spans::{int_kv, kv, request, span};

const TRACE: u128 = 0x5b8e_fff7_9803_8103_d269_b633_813f_c60c;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_bounded_and_speaks_json_and_arrow() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--query-max-rows", "3"]).await;
    let mut spans: Vec<_> = (1..=5).map(|i| span(TRACE, i)).collect();
    spans[0].attributes.push(kv("http.route", "/checkout"));
    spans[0].attributes.remove(0);
    let body = request("sql-test", spans).encode_to_vec();
    let r = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The README's examples: a hex trace id and an attribute from the map.
    let rows = server
        .sql(
            "SELECT name, span_attributes['http.route'] AS route FROM spans \
             WHERE trace_id = X'5b8efff798038103d269b633813fc60c' AND span_id = X'0000000000000001'",
        )
        .await;
    assert_eq!(
        rows,
        vec![serde_json::json!({"name": "op-1", "route": "/checkout"})]
    );
    let rows = server
        .sql(
            "SELECT count(*) AS n FROM spans \
             WHERE trace_id = decode('5B8EFFF798038103D269B633813FC60C', 'hex')",
        )
        .await;
    assert_eq!(rows[0]["n"], 5);

    // Ids come back as lowercase hex; columns carry their types.
    let (status, body) = server
        .sql_response("SELECT trace_id, start_time FROM spans LIMIT 1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["rows"][0]["trace_id"],
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(body["columns"][0]["type"], "Binary");
    assert!(
        body["columns"][1]["type"]
            .as_str()
            .unwrap()
            .starts_with("Timestamp")
    );

    // Refused: anything that is not a query, and results over the limit.
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
        "INSERT INTO spans SELECT * FROM spans",
        "COPY (SELECT 1) TO '/tmp/x.parquet'",
        "DROP TABLE spans",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "SELEC 1",
        "SELECT nope FROM spans",
        "SELECT name FROM spans",
    ] {
        let (status, body) = server.sql_response(sql).await;
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty(), "{sql}");
    }
    let (_, body) = server.sql_response("SELECT name FROM spans").await;
    assert!(
        body["error"].as_str().unwrap().contains("more than 3 rows"),
        "{body}"
    );
    let (status, body) = server.get("/api/v1/sql").await;
    assert_eq!(status, 405, "{body}");

    // Arrow IPC stream on request.
    let r = reqwest::Client::new()
        .post(server.url("/api/v1/sql"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&serde_json::json!({"sql": "SELECT span_id, duration_ns FROM spans ORDER BY span_id LIMIT 3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let reader = arrow_ipc_rows(&bytes);
    assert_eq!(reader, 3);

    // Metrics reflect the request.
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &metrics,
            "tracelake_spans_accepted_total{protocol=\"otlp_http\"}"
        ),
        5.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "tracelake_wal_fsync_seconds_count") >= 1.0);
}

/// Rows in an Arrow IPC stream, decoded with arrow's reader.
fn arrow_ipc_rows(bytes: &[u8]) -> usize {
    let reader = arrow_ipc::reader::StreamReader::try_new(bytes, None).unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}

/// A trace of 30,200 spans (a root, 299 children, 100 grandchildren each)
/// through the native and Jaeger APIs, without a browser: every span once,
/// in tree order, from the buffer and from Parquet after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_thousand_span_trace_reads_back_whole_through_the_apis() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]).await;
    let trace: u128 = 0x3000_0000_0000_0000_0000_0000_0000_0001;
    let mut spans = vec![span(trace, 1)];
    for child in 0..299u64 {
        let child_id = 2 + child * 101;
        let mut c = span(trace, child_id);
        c.parent_span_id = 1u64.to_be_bytes().to_vec();
        spans.push(c);
        for g in 1..=100u64 {
            let mut s = span(trace, child_id + g);
            s.parent_span_id = child_id.to_be_bytes().to_vec();
            spans.push(s);
        }
    }
    let n = spans.len();
    assert_eq!(n, 30_200);
    server.export(&request("big", spans)).await;
    let id = format!("{trace:032x}");
    for phase in ["buffer", "parquet"] {
        let (status, body) = server.get(&format!("/api/v1/traces/{id}")).await;
        assert_eq!(status, 200, "{phase}");
        let spans = body["spans"].as_array().unwrap();
        assert_eq!(spans.len(), n, "{phase}");
        assert_eq!(
            spans[0]["spanId"], "0000000000000001",
            "{phase}: root first"
        );
        assert_eq!(spans[0]["depth"], 0);
        assert_eq!(spans[1]["depth"], 1);
        assert_eq!(spans[2]["depth"], 2);
        let distinct: std::collections::HashSet<_> = spans
            .iter()
            .map(|s| s["spanId"].as_str().unwrap())
            .collect();
        assert_eq!(distinct.len(), n, "{phase}");
        let (status, jaeger) = server.get(&format!("/jaeger/api/traces/{id}")).await;
        assert_eq!(status, 200, "{phase}");
        assert_eq!(jaeger["data"][0]["spans"].as_array().unwrap().len(), n);
        // From Parquet next: SIGTERM commits, the restart reads the files.
        server.terminate();
        server = TestServer::start(dir.path(), &[]).await;
    }
}

/// Committed string columns are read from Parquet as views (no string
/// copied out of a dictionary page; BENCHMARKS.md, "String columns as
/// views"), grouped and filtered as views, and answered as `Utf8`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_are_scanned_as_views_and_answered_as_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]).await;
    let mut spans: Vec<_> = (1..=4).map(|i| span(TRACE, i)).collect();
    spans[0].attributes = vec![kv("http.route", "/checkout")];
    server.export(&request("views", spans)).await;
    // SIGTERM commits; after the restart the rows are in Parquet only.
    server.terminate();
    server = TestServer::start(dir.path(), &[]).await;

    let sql = "SELECT service_name, count(*) AS n FROM spans \
               WHERE span_attributes['http.route'] <> '/checkout' GROUP BY service_name";
    let plan = server
        .plan(
            &format!("EXPLAIN VERBOSE {sql}"),
            "physical_plan_with_schema",
        )
        .await;
    let scan = plan
        .lines()
        .find(|l| l.contains("DataSourceExec"))
        .unwrap_or_else(|| panic!("no Parquet scan: {plan}"));
    assert!(scan.contains("service_name:Utf8View"), "{plan}");
    let grouped = plan
        .lines()
        .find(|l| l.contains("mode=Partial"))
        .unwrap_or_else(|| panic!("no partial aggregate: {plan}"));
    assert!(grouped.contains("service_name:Utf8View"), "{plan}");

    let (status, body) = server.sql_response(sql).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        serde_json::json!([{"service_name": "views", "n": 3}])
    );
    assert_eq!(body["columns"][0]["type"], "Utf8", "{body}");
}

/// The projections of the Parquet scans of `sql`'s physical plan, one
/// per scan (`projection=[a, b]` as DataFusion shows it).
async fn scanned(server: &TestServer, sql: &str) -> Vec<Vec<String>> {
    let plan = server
        .plan(&format!("EXPLAIN {sql}"), "physical_plan")
        .await;
    plan.lines()
        .filter(|l| l.contains("DataSourceExec") && l.contains("file_type=parquet"))
        .map(|l| {
            let from = l.find("projection=[").expect("a projection") + "projection=[".len();
            let to = from + l[from..].find(']').expect("its end");
            l[from..to].split(", ").map(str::to_string).collect()
        })
        .collect()
}

/// A condition on an attribute key is applied by the scan, file by file:
/// where a file's map lacks the key (its Delta tags list the keys of its
/// maps), the map is not read, and a key with a column is a condition on
/// the column alone; a file whose map has the key (a value of another type
/// than the column's) is read with its map, and its rows are found; a file
/// that cannot match is not read at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_on_attribute_keys_read_a_map_only_in_files_that_have_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--compaction-interval", "0s"];
    let mut server = TestServer::start(dir.path(), &args).await;
    // One file with the route in its column only.
    let mut spans: Vec<_> = (1..=3).map(|i| span(TRACE, i)).collect();
    spans[1].attributes = vec![kv("http.route", "/checkout")];
    spans[2].attributes = Vec::new();
    server.export(&request("columns", spans)).await;
    // SIGTERM commits; the next file is another one.
    server.terminate();
    server = TestServer::start(dir.path(), &args).await;
    // One with a route of another type (in the map) and a key of its own.
    let mut spans: Vec<_> = (1..=2).map(|i| span(TRACE + 1, i)).collect();
    spans[0].attributes = vec![int_kv("http.route", 7), kv("app.only.here", "x")];
    server.export(&request("map", spans)).await;
    server.terminate();
    server = TestServer::start(dir.path(), &args).await;

    let count = |condition: &str| {
        format!(
            "SELECT service_name, count(*) AS n FROM spans WHERE {condition} \
             GROUP BY service_name ORDER BY service_name"
        )
    };
    // A bare key as the search API asks it: the span's map, else the
    // resource's.
    let route = |v: &str| {
        count(&format!(
            "coalesce(span_attributes['http.route'], resource_attributes['http.route']) = '{v}'"
        ))
    };
    let mut scans = scanned(&server, &route("/checkout")).await;
    scans.sort_by_key(Vec::len);
    assert_eq!(scans.len(), 2, "{scans:?}");
    assert!(
        !scans[0].iter().any(|c| c.ends_with("_attributes")),
        "the file without the key reads no map: {scans:?}"
    );
    assert!(
        scans[1].contains(&"span_attributes".to_string())
            && !scans[1].contains(&"resource_attributes".to_string()),
        "the file with the key reads the span map alone: {scans:?}"
    );
    assert_eq!(
        server.sql(&route("/checkout")).await,
        [serde_json::json!({"service_name": "columns", "n": 1})]
    );
    assert_eq!(
        server.sql(&route("7")).await,
        [serde_json::json!({"service_name": "map", "n": 1})]
    );
    // A key of one file: the other is not read.
    let only = count("span_attributes['app.only.here'] = 'x'");
    assert_eq!(scanned(&server, &only).await.len(), 1);
    assert_eq!(
        server.sql(&only).await,
        [serde_json::json!({"service_name": "map", "n": 1})]
    );
    // A key of none: no file is read; its absence holds everywhere.
    assert!(
        scanned(&server, &count("span_attributes['app.nowhere'] = 'x'"))
            .await
            .is_empty()
    );
    assert_eq!(
        server
            .sql(&count("span_attributes['app.nowhere'] IS NULL"))
            .await,
        [
            serde_json::json!({"service_name": "columns", "n": 3}),
            serde_json::json!({"service_name": "map", "n": 2})
        ]
    );
    // A condition that loses its lookups only once pushed through a
    // subquery (`f` is false) is still applied.
    let pushed = "SELECT count(*) AS n FROM (SELECT name, scope_attributes, false AS f FROM spans) t \
                  WHERE (t.f AND t.scope_attributes['k'] = 'x') OR t.name = 'op-1'";
    assert_eq!(server.sql(pushed).await, [serde_json::json!({"n": 2})]);
    // The search API finds the trace of each file by its route.
    let now = crate::spans::now_nanos() / 1_000_000_000;
    for (route, trace) in [("/checkout", TRACE), ("7", TRACE + 1)] {
        let (status, body) = server
            .get(&format!(
                "/api/v1/search?attr=http.route%3D{}&start={}&end={}",
                route.replace('/', "%2F"),
                now - 600,
                now + 60
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        let found: Vec<&str> = body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceId"].as_str().unwrap())
            .collect();
        assert_eq!(found, [format!("{trace:032x}")], "{route}: {body}");
    }
}

/// An equality condition on a dedicated string column skips, by the
/// column's bloom filters, the files that cannot hold the value even where
/// their statistics can: three files whose paths all span `/a/..` to
/// `/z/..`, and one path of the middle file looked up (in SQL, and through
/// the search API as an attribute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equality_on_a_dedicated_column_skips_files_by_their_bloom_filters() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--compaction-interval", "0s"];
    let mut server = TestServer::start(dir.path(), &args).await;
    for file in 0..3u128 {
        let mut spans: Vec<_> = (1..=3).map(|i| span(TRACE + file, i)).collect();
        for (s, path) in spans.iter_mut().zip(["/a", "/m", "/z"]) {
            s.attributes = vec![kv("url.path", &format!("{path}/{file}"))];
        }
        server.export(&request("paths", spans)).await;
        // SIGTERM commits; the next file is another one.
        server.terminate();
        server = TestServer::start(dir.path(), &args).await;
    }
    let count = "SELECT count(*) AS n FROM spans WHERE span_attributes['url.path'] = '/m/1'";
    assert_eq!(server.sql(count).await, [serde_json::json!({"n": 1})]);
    let plan = server
        .plan(&format!("EXPLAIN ANALYZE {count}"), "Plan with Metrics")
        .await;
    let metric = |name: &str| {
        let from = plan
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("no {name} in {plan}"))
            + name.len()
            + 1;
        let to = from + plan[from..].find([',', ']']).unwrap();
        plan[from..to].to_string()
    };
    assert_eq!(
        metric("row_groups_pruned_statistics"),
        "3 total → 3 matched",
        "statistics keep every file: {plan}"
    );
    assert_eq!(
        metric("row_groups_pruned_bloom_filter"),
        "3 total → 1 matched",
        "bloom filters keep the one file with the path: {plan}"
    );
    let now = crate::spans::now_nanos() / 1_000_000_000;
    let (status, body) = server
        .get(&format!(
            "/api/v1/search?attr=url.path%3D%2Fm%2F1&start={}&end={}",
            now - 600,
            now + 60
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceId"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [format!("{:032x}", TRACE + 1)],
        "{body}"
    );
}

/// Settings: a flag beats the environment, the environment beats the file,
/// the file beats the default (here, the SQL row cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_beat_environment_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracelake.toml");
    std::fs::write(&config, "query_max_rows = 7\n").unwrap();
    let config = config.to_str().unwrap();
    let cap = |server: TestServer| async move {
        let (status, body) = server
            .sql_response("SELECT value FROM generate_series(1, 100)")
            .await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"].as_str().unwrap().to_string();
        message
            .split_whitespace()
            .find_map(|w| w.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no row cap in {message:?}"))
    };
    let data = dir.path().join("data");
    let file_only = TestServer::start(&data, &["--config", config]).await;
    assert_eq!(cap(file_only).await, 7);
    let env = [("TRACELAKE_QUERY_MAX_ROWS", "5")];
    let env_over_file = TestServer::start_with_env(&data, &["--config", config], &env).await;
    assert_eq!(cap(env_over_file).await, 5);
    let args = ["--config", config, "--query-max-rows", "3"];
    let flag_over_env = TestServer::start_with_env(&data, &args, &env).await;
    assert_eq!(cap(flag_over_env).await, 3);
}

/// Rows whose attribute values pass, a batch together, what one array
/// holds (32-bit offsets, 2 GiB): DataFusion reads 8,192 rows a batch, and
/// 8,192 spans of 272 KiB in one column are 2.1 GiB. The query is run
/// again in smaller batches and answers every row, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_rows_too_large_for_one_batch_in_smaller_ones() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
    use tracelake_collector::metrics::Metrics;
    use tracelake_collector::table::Table;
    use tracelake_collector::writer::write_partition;
    use tracelake_schema::otlp::{Acceptance, SpansBuilder};

    const SPANS: usize = 512;
    const COPIES: usize = 16;
    const VALUE: usize = 272 << 10;
    let dir = tempfile::tempdir().unwrap();
    let start = crate::spans::now_nanos() - 60_000_000_000;
    let value = "v".repeat(VALUE);
    let spans = (0..SPANS as u64)
        .map(|i| {
            let mut s = span(TRACE, i + 1);
            s.start_time_unix_nano = start + i;
            s.end_time_unix_nano = start + i + 1_000;
            s.attributes = vec![kv("request.body", &value)];
            s
        })
        .collect();
    let mut builder = SpansBuilder::with_capacity(SPANS);
    builder.append_request(&request("uploads", spans), &Acceptance::ANY_TIME);
    let batch = builder.finish();
    // The copies share the values' buffers; each has span ids of its own.
    let span_id = batch.schema().index_of("span_id").unwrap();
    let batches: Vec<RecordBatch> = (0..COPIES as u64)
        .map(|copy| {
            let ids: Vec<[u8; 8]> = (0..SPANS as u64)
                .map(|i| (copy * SPANS as u64 + i + 1).to_be_bytes())
                .collect();
            let mut columns = batch.columns().to_vec();
            columns[span_id] = Arc::new(BinaryArray::from_iter_values(ids)) as ArrayRef;
            RecordBatch::try_new(batch.schema(), columns).unwrap()
        })
        .collect();
    let partition = tracelake_schema::spans::partition_of(start as i64);
    let file = write_partition(partition, &batches).unwrap();
    drop(batches);
    let root = dir.path().join("tenants/default/spans");
    let url = url::Url::from_directory_path(&root).unwrap();
    let table = Table::open_or_create(&url, Arc::new(Metrics::default()))
        .await
        .unwrap();
    let path = root.join(&file.path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, file.bytes).unwrap();
    table.commit(vec![file.add], 1).await.unwrap();
    drop(table);

    let server = TestServer::start(dir.path(), &["--query-timeout", "300s"]).await;
    let (status, body) = server
        .sql_response(
            "SELECT count(DISTINCT span_id) AS spans, \
             sum(length(span_attributes['request.body'])) AS bytes FROM spans",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["spans"], SPANS * COPIES, "{body}");
    assert_eq!(body["rows"][0]["bytes"], SPANS * COPIES * VALUE, "{body}");
    // Once, in batches of 4,096 rows.
    let reruns = metric(
        &server.metrics().await,
        "tracelake_queries_rerun_smaller_batches_total",
    );
    assert_eq!(reruns, 1.0);
}
