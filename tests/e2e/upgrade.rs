//! A store of spans layout v2, as the release before layout v3 left it
//! (`tests/fixtures/v2-store`, written by `tests/fixtures/make-v2-store.sh`
//! from the spans in `tests/fixtures/v2-spans`): two committed hour
//! partitions, and one acknowledged request only in the write-ahead log.
//! Today's server upgrades it in place at start, one partition per commit;
//! a crash after one partition's commit, and one before the next, leave a
//! store that the next start finishes upgrading. Afterwards every span
//! reads back with every attribute, exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::server::TestServer;

fn fixtures() -> std::path::PathBuf {
    crate::checkout("tests/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// An OTLP/JSON attribute list as the native API renders attributes.
fn attributes(list: &Value) -> Value {
    fn value(v: &Value) -> Value {
        let (kind, inner) = v.as_object().unwrap().iter().next().unwrap();
        match kind.as_str() {
            "intValue" => json!(inner.as_str().unwrap().parse::<i64>().unwrap()),
            "arrayValue" => Value::Array(
                inner["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(value)
                    .collect(),
            ),
            _ => inner.clone(),
        }
    }
    let mut out = serde_json::Map::new();
    for kv in list.as_array().into_iter().flatten() {
        out.insert(kv["key"].as_str().unwrap().to_string(), value(&kv["value"]));
    }
    Value::Object(out)
}

/// The spans of the fixture's requests: span id -> (trace id, service, span).
fn sent() -> BTreeMap<String, (String, String, Value)> {
    let mut out = BTreeMap::new();
    for file in ["committed.json", "wal-only.json"] {
        let text = std::fs::read_to_string(fixtures().join("v2-spans").join(file)).unwrap();
        let request: Value = serde_json::from_str(&text).unwrap();
        for rs in request["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"][0]["value"]["stringValue"]
                .as_str()
                .unwrap()
                .to_string();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for span in ss["spans"].as_array().unwrap() {
                    let id = span["spanId"].as_str().unwrap().to_string();
                    let trace = span["traceId"].as_str().unwrap().to_string();
                    out.insert(id, (trace, service.clone(), span.clone()));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_store_is_upgraded_in_place_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("v2-store"), dir.path());
    // The fixture's spans are from 2026-12-01: keep them.
    let args = ["--retention", "0s", "--compaction-interval", "0s"];
    for fault in ["upgrade.committed=abort", "upgrade.commit=abort"] {
        let mut with_fault = args.to_vec();
        with_fault.extend(["--fault-points", fault]);
        let mut server = TestServer::spawn_unready(dir.path(), &with_fault);
        let status = server.wait_exit(Duration::from_secs(60)).await;
        assert!(
            !status.success(),
            "{fault}: the upgrade must have crashed: {status:?}"
        );
    }
    let log = dir.path().join("tenants/default/spans/_delta_log");
    let server = TestServer::start(dir.path(), &args).await;

    // Every span once: the committed ones and the one replayed from the WAL.
    let rows = server
        .sql("SELECT encode(span_id, 'hex') AS id, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1")
        .await;
    let sent = sent();
    let stored: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = sent.keys().map(|id| (id.clone(), 1)).collect();
    assert_eq!(stored, expected);

    // Each span as sent, through the trace API.
    for (id, (trace, service, span)) in &sent {
        let (status, body) = server.get(&format!("/api/v1/traces/{trace}")).await;
        assert_eq!(status, 200, "{body}");
        let got = body["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["spanId"] == *id)
            .unwrap_or_else(|| panic!("{id} not in {body}"));
        assert_eq!(got["name"], span["name"]);
        assert_eq!(got["serviceName"], *service, "{got}");
        assert_eq!(got["attributes"], attributes(&span["attributes"]), "{id}");
        // ...each once (the object above would hide a key given twice).
        let (status, otlp) = server.get(&format!("/tempo/api/v2/traces/{trace}")).await;
        assert_eq!(status, 200, "{otlp}");
        let listed = otlp["trace"]["resourceSpans"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
            .flat_map(|ss| ss["spans"].as_array().unwrap())
            // Tempo's JSON has ids in base64.
            .find(|s| s["spanId"] == BASE64.encode(hex::decode(id).unwrap()))
            .unwrap_or_else(|| panic!("{id} not in {otlp}"))["attributes"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(listed, span["attributes"].as_array().unwrap().len(), "{id}");
        assert_eq!(
            got["startTimeUnixNano"].as_str(),
            span["startTimeUnixNano"].as_str(),
        );
        if let Some(events) = span["events"].as_array() {
            assert_eq!(got["events"][0]["name"], events[0]["name"]);
            assert_eq!(
                got["events"][0]["attributes"],
                attributes(&events[0]["attributes"])
            );
        }
        if let Some(links) = span["links"].as_array() {
            assert_eq!(got["links"][0]["traceId"], links[0]["traceId"], "{got}");
        }
    }

    // SQL sees v3's columns: one per key, and the map reads them.
    let rows = server
        .sql(
            "SELECT http_method, http_request_method, span_attributes['http.method'] AS m, \
             span_attributes['http.status_code'] AS code, http_status_code, start_time \
             FROM spans WHERE name = 'POST /checkout'",
        )
        .await;
    assert_eq!(rows[0]["http_method"], "POST");
    assert!(rows[0]["http_request_method"].is_null());
    assert_eq!(rows[0]["m"], "POST");
    assert_eq!(
        (&rows[0]["code"], &rows[0]["http_status_code"]),
        (&json!("500"), &json!(500))
    );
    assert_eq!(rows[0]["start_time"], "2026-12-01T11:20:00Z");
    // A status code sent as a string stays a string, in the map.
    let rows = server
        .sql("SELECT span_attributes['http.status_code'] AS code, http_status_code FROM spans WHERE name = 'SELECT users'")
        .await;
    assert_eq!(
        (&rows[0]["code"], &rows[0]["http_status_code"]),
        (&json!("503"), &Value::Null)
    );

    // Resource attributes, with and without a column of their own.
    let rows = server
        .sql(
            "SELECT resource_deployment_environment_name AS env, resource_attributes['host.cores'] AS cores, \
             resource_attribute_types['host.cores'] AS ty, resource_attributes['deployment.environment.name'] AS env2, \
             resource_attributes['telemetry.sdk.language'] AS lang FROM spans ORDER BY service_name, name",
        )
        .await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    // Ordered: frontend "GET /health" (the request only in the WAL, whose
    // resource has no host.cores), "GET /users/{id}", "SELECT users", then
    // legacy.
    assert!(rows[0]["cores"].is_null());
    assert_eq!(
        (&rows[1]["env"], &rows[1]["cores"], &rows[1]["ty"]),
        (&json!("prod"), &json!("8"), &json!(2))
    );
    assert_eq!(rows[0]["env2"], "prod");
    assert_eq!(rows[3]["lang"], "java", "{rows:?}");

    // The table says version 3, with v3's schema.
    let mut last_metadata = None;
    let mut entries: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    for path in entries {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let action: Value = serde_json::from_str(line).unwrap();
            if !action["metaData"].is_null() {
                last_metadata = Some(action["metaData"].clone());
            }
        }
    }
    let metadata = last_metadata.unwrap();
    assert_eq!(metadata["configuration"]["tracelake.schema.version"], "3");
    let schema = metadata["schemaString"].as_str().unwrap();
    assert!(
        schema.contains("\"http_method\"") && !schema.contains("\"start_time\""),
        "{schema}"
    );
}

/// The spans of the fixture's committed request: span id -> count 1.
fn committed_span_ids() -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(fixtures().join("v2-spans/committed.json")).unwrap();
    let request: Value = serde_json::from_str(&text).unwrap();
    let mut ids: Vec<(String, i64)> = request["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .map(|s| (s["spanId"].as_str().unwrap().to_string(), 1))
        .collect();
    ids.sort();
    ids
}

/// A node's arguments on the S3 table `storage`, for the upgrade tests:
/// the fixture's old spans kept, flushes every 200 ms, a 3 s lease.
fn on_s3<'a>(storage: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    storage
        .iter()
        .map(String::as_str)
        .chain([
            "--retention",
            "0s",
            "--compaction-interval",
            "0s",
            "--flush-max-age",
            "200ms",
            "--max-span-age",
            "3650d",
            "--compactor-lease-ttl",
            "3s",
        ])
        .chain(extra.iter().copied())
        .collect()
}

/// Each span id and how often the table holds it.
const BY_SPAN: &str =
    "SELECT encode(span_id, 'hex') AS id, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1";

/// The rows of [`BY_SPAN`] as (span id, count).
fn span_counts(rows: Vec<Value>) -> Vec<(String, i64)> {
    rows.iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The v2 table on an object store, where several nodes reach it: a query
/// node answers 503 (naming the upgrade) until it is done, an ingest node
/// waits, and of two compactor nodes started at once only the lease's
/// holder rewrites it (two at once would each replace the same files), the
/// other waiting; afterwards every node runs, each span is there once, and
/// new spans are stored in the current layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_only_the_compactor_lease_holder_upgrades_and_the_others_wait() {
    use crate::s3::{CREDENTIALS, Moto};
    let Some(moto) = Moto::with_bucket("upgrade").await else {
        return;
    };
    moto.upload(
        "upgrade",
        &fixtures().join("v2-store/tenants/default/spans"),
        "t/tenants/default/spans",
    )
    .await;
    let storage = moto.storage_args("upgrade");
    let with = |extra: &[&'static str]| on_s3(&storage, extra);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();

    let query =
        TestServer::start_with_env(dirs[0].path(), &with(&["--role", "query"]), &CREDENTIALS).await;
    let (status, body) = query.sql_response("SELECT count(*) AS n FROM spans").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string().contains("upgrading it to version"),
        "{body}"
    );

    let mut ingest = TestServer::spawn_unready_with_env(
        dirs[1].path(),
        &with(&["--role", "ingest", "--node-id", "a"]),
        &CREDENTIALS,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(ingest.try_exit().is_none(), "the ingest node gave up");
    assert!(
        reqwest::get(ingest.url("/ready")).await.is_err(),
        "the ingest node started on a table it cannot write yet"
    );

    let mut compactors: Vec<TestServer> = ["c1", "c2"]
        .into_iter()
        .zip(&dirs[2..])
        .map(|(id, dir)| {
            TestServer::spawn_unready_with_env(
                dir.path(),
                &with(&["--role", "compactor", "--node-id", id]),
                &CREDENTIALS,
            )
        })
        .collect();
    for node in compactors.iter_mut().chain([&mut ingest]) {
        node.until_ready().await;
    }

    let (counts, by_span) = (span_counts, BY_SPAN);
    assert_eq!(counts(query.sql(by_span).await), committed_span_ids());
    // One node rewrote the table: one new file per partition beside the two
    // it replaced (kept until vacuum's grace has passed).
    let data_files = moto
        .bucket("list", "upgrade")
        .await
        .into_iter()
        .filter(|k| k.starts_with("t/tenants/default/spans/date=") && k.ends_with(".parquet"))
        .count();
    assert_eq!(data_files, 4, "the table rewritten more than once");

    // The ingest node writes in the current layout into the upgraded table.
    let mut span = crate::spans::span(0xabc, 0x7e57);
    span.attributes
        .push(crate::spans::kv("http.route", "/after"));
    ingest
        .export(&crate::spans::request("svc", vec![span]))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = query
            .sql("SELECT count(*) AS n FROM spans WHERE http_route = '/after'")
            .await;
        if rows[0]["n"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new span never showed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut expected = committed_span_ids();
    expected.push(("0000000000007e57".into(), 1));
    expected.sort();
    assert_eq!(counts(query.sql(by_span).await), expected);
}

/// A compactor that stalls mid-upgrade (stopped by SIGSTOP just before it
/// commits its first rewritten partition, as a frozen machine would) loses
/// its lease to the next compactor, which upgrades the table; resumed, the
/// first commits nothing of its own and comes up on the upgraded table:
/// every span once, one file per old file in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_stalled_mid_upgrade_loses_its_lease_and_commits_nothing() {
    use crate::s3::{CREDENTIALS, Moto};
    let Some(moto) = Moto::with_bucket("stalled").await else {
        return;
    };
    moto.upload(
        "stalled",
        &fixtures().join("v2-store/tenants/default/spans"),
        "t/tenants/default/spans",
    )
    .await;
    let storage = moto.storage_args("stalled");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let with = |extra: &[&'static str]| on_s3(&storage, extra);

    let mut stalled = TestServer::spawn_unready_with_env(
        dirs[0].path(),
        &with(&[
            "--role",
            "compactor",
            "--node-id",
            "c1",
            "--fault-points",
            "upgrade.commit=stop",
        ]),
        &CREDENTIALS,
    );
    stalled.until_stopped("the first compactor's commit").await;

    // The next compactor waits for the lease to run out, then upgrades.
    let mut next = TestServer::spawn_unready_with_env(
        dirs[1].path(),
        &with(&["--role", "compactor", "--node-id", "c2"]),
        &CREDENTIALS,
    );
    next.until_ready().await;
    assert!(stalled.is_stopped(), "the first compactor ran on");
    stalled.resume();
    stalled.until_ready().await;

    let query =
        TestServer::start_with_env(dirs[2].path(), &with(&["--role", "query"]), &CREDENTIALS).await;
    assert_eq!(span_counts(query.sql(BY_SPAN).await), committed_span_ids());
    let (status, storage) = next.get("/api/v1/storage").await;
    assert_eq!(status, 200, "{storage}");
    assert_eq!(storage["files"], 2, "{storage}");
    // Both compactors still run; the first one's upload that never made
    // it into the table is left to vacuum.
    assert!(stalled.try_exit().is_none() && next.try_exit().is_none());
}
