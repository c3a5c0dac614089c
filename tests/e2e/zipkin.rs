//! Zipkin ingest and query API: public fixtures round trip, real Zipkin
//! clients from Python, bad input, and an OTLP trace read back as Zipkin.

use serde_json::{Value, json};

use crate::server::{FILLER_PARTITION, FLUSH_BYTES, TestServer, fixtures, python_with};
use crate::spans::{kv, now_nanos, request, span};

async fn post(server: &TestServer, content_type: &str, body: Vec<u8>, gzip: bool) -> (u16, String) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{}/api/v2/spans", server.zipkin))
        .header("content-type", content_type);
    let body = if gzip {
        use std::io::Write as _;
        r = r.header("content-encoding", "gzip");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    } else {
        body
    };
    let response = r.body(body).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn zipkin_get(server: &TestServer, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{}{path}", server.zipkin))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn sorted(mut spans: Vec<Value>) -> Vec<Value> {
    spans.sort_by_key(|s| {
        (
            s["id"].as_str().unwrap().to_string(),
            s["kind"].as_str().unwrap_or("").to_string(),
        )
    });
    spans
}

/// The Zipkin fixtures, whether each is sent gzip-compressed, the partition
/// its spans fall in (by start time, UTC) and how many they are.
const FIXTURES: [(&str, bool, &str, u64); 3] = [
    ("zipkin_messaging.json", false, "date=2018-03-16/hour=07", 4),
    ("zipkin_skew.json", true, "date=2016-08-02/hour=15", 4),
    (
        "opentelemetry-collector-contrib_sample3.json",
        false,
        "date=2016-08-29/hour=11",
        1,
    ),
];

/// What a Zipkin client reads back for each fixture, written out by hand
/// from Zipkin's model and OpenTelemetry's Zipkin mapping
/// (shared/protocols.md), not computed by rules that could repeat a
/// mapping's mistake.
fn fixture_read_back(dir: &std::path::Path, name: &str) -> Value {
    match name {
        // Nothing changes: every field the lens fixture uses comes back.
        "zipkin_messaging.json" => {
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
        }
        // `shared` is dropped (as the OpenTelemetry Collector maps it); the
        // server half keeps the client half's id and parent.
        "zipkin_skew.json" => json!([
            {"traceId": "1e223ff1f80f1c69", "parentId": "74280ae0c10d8062", "id": "43210ae0c10d1234",
             "name": "async", "timestamp": 1470150004008762u64, "duration": 65000,
             "localEndpoint": {"serviceName": "serviceb", "ipv4": "192.0.0.0"}},
            {"traceId": "1e223ff1f80f1c69", "parentId": "bf396325699c84bf", "id": "74280ae0c10d8062",
             "kind": "SERVER", "name": "post", "timestamp": 1470150004008761u64, "duration": 93577,
             "localEndpoint": {"serviceName": "serviceb", "ipv4": "192.0.0.0"}},
            {"traceId": "1e223ff1f80f1c69", "id": "bf396325699c84bf",
             "kind": "SERVER", "name": "get", "timestamp": 1470150004071068u64, "duration": 99411,
             "localEndpoint": {"serviceName": "servicea", "ipv4": "127.0.0.0"}},
            {"traceId": "1e223ff1f80f1c69", "parentId": "bf396325699c84bf", "id": "74280ae0c10d8062",
             "kind": "CLIENT", "name": "post", "timestamp": 1470150004074202u64, "duration": 94539,
             "localEndpoint": {"serviceName": "servicea", "ipv4": "127.0.0.0"}},
        ]),
        // Status ERROR with a description: the `error` tag carries the
        // description, beside otel.status_code and otel.status_description.
        "opentelemetry-collector-contrib_sample3.json" => json!([
            {"traceId": "4d1e00c0db9010db86154a4ba6e91385", "parentId": "86154a4ba6e91385",
             "id": "4d1e00c0db9010db", "kind": "CLIENT", "name": "get",
             "timestamp": 1472470996199000u64, "duration": 207000,
             "localEndpoint": {"ipv6": "7::0.128.128.127"},
             "remoteEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.101", "port": 9000},
             "annotations": [
                 {"timestamp": 1472470996238000u64, "value": "foo"},
                 {"timestamp": 1472470996403000u64, "value": "bar"}],
             "tags": {"http.path": "/api", "clnt/finagle.version": "6.45.0",
                      "otel.status_code": "ERROR", "otel.status_description": "Something failed",
                      "error": "Something failed"}},
        ]),
        other => panic!("no expectation for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_fixtures_read_back_as_sent() {
    let Some(dir) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    // The fixtures are from 2016-2018: widen the accepted window and keep
    // their partitions; flush only when the test asks.
    let args = [
        "--max-span-age",
        "36500d",
        "--retention",
        "0s",
        "--flush-max-bytes",
        FLUSH_BYTES,
    ];
    let mut server = TestServer::start(data.path(), &args).await;
    for (name, gzip, _, _) in FIXTURES {
        let body = std::fs::read(dir.join(name)).unwrap();
        let (status, text) = post(&server, "application/json", body, gzip).await;
        assert_eq!((status, text.as_str()), (202, ""), "{name}");
    }
    let committed: std::collections::BTreeMap<String, u64> = FIXTURES
        .iter()
        .map(|&(_, _, partition, rows)| (partition.to_string(), rows))
        .collect();
    // From the buffer: nothing is committed before or after reading.
    assert_eq!(server.committed().await, Default::default());
    read_back_fixtures(&server, &dir).await;
    assert_eq!(server.committed().await, Default::default());
    // From Parquet, on the running server after a flush...
    assert_eq!(server.flush_with_filler().await, committed);
    read_back_fixtures(&server, &dir).await;
    // ...and after a restart on the same data.
    server.terminate();
    let server = TestServer::start(data.path(), &args).await;
    let mut after_restart = server.committed().await;
    after_restart.remove(FILLER_PARTITION);
    assert_eq!(after_restart, committed);
    read_back_fixtures(&server, &dir).await;
}

/// Every fixture through the Zipkin API (on its port and under /zipkin on
/// the query port), and the skew fixture's tree through /api/v1/traces.
async fn read_back_fixtures(server: &TestServer, dir: &std::path::Path) {
    for (name, _, _, _) in FIXTURES {
        let want = sorted(fixture_read_back(dir, name).as_array().unwrap().clone());
        let trace_id = want[0]["traceId"].as_str().unwrap();
        let (status, got) = zipkin_get(server, &format!("/api/v2/trace/{trace_id}")).await;
        assert_eq!(status, 200, "{name}: {got}");
        assert_eq!(sorted(got.as_array().unwrap().clone()), want, "{name}");
        let (status, got) = server
            .get(&format!("/zipkin/api/v2/trace/{trace_id}"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            sorted(got.as_array().unwrap().clone()),
            want,
            "{name} on :3200"
        );
    }
    // The shared client/server span id of the skew fixture builds one tree:
    // the server half under the client half, its child under the server.
    let (status, body) = server.get("/api/v1/traces/1e223ff1f80f1c69").await;
    assert_eq!(status, 200, "{body}");
    let tree: Vec<_> = body["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
                s["depth"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tree,
        [
            ("get".to_string(), "SERVER".to_string(), 0),
            ("post".into(), "CLIENT".into(), 1),
            ("post".into(), "SERVER".into(), 2),
            ("async".into(), "UNSPECIFIED".into(), 3),
        ]
    );
}

/// Runs `tests/python/zipkin_clients.py` (OpenTelemetry's Zipkin exporter and
/// py_zipkin). Outside CI the test is skipped when they are not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_zipkin_clients_arrive_intact() {
    let Some(python) = python_with(
        "py_zipkin, opentelemetry.exporter.zipkin.json",
        "py_zipkin opentelemetry-exporter-zipkin-json",
    ) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let script = crate::checkout("tests/python/zipkin_clients.py");
    let script = script.to_str().unwrap();
    let ids = crate::procs::json_output(
        tokio::process::Command::new(&python).args([script, &format!("http://{}", server.zipkin)]),
    )
    .await;
    let rows = server
        .sql(
            "SELECT encode(trace_id, 'hex') AS t, encode(span_id, 'hex') AS s, \
               encode(parent_span_id, 'hex') AS p, service_name, name, kind, status_code, \
               status_message, scope_name, scope_version, span_attributes AS a, \
               event_names(events) AS ev, duration_ns \
             FROM spans ORDER BY service_name, kind DESC",
        )
        .await;
    assert_eq!(rows.len(), 6, "{rows:?}");
    let by_id = |id: &Value| {
        rows.iter()
            .find(|r| &r["s"] == id)
            .unwrap_or_else(|| panic!("{id} not stored: {rows:?}"))
    };

    // OpenTelemetry SDK -> Zipkin JSON exporter.
    let root = by_id(&ids["otel_root_id"]);
    let child = by_id(&ids["otel_child_id"]);
    assert_eq!(root["t"], ids["otel_trace_id"]);
    assert_eq!(
        (root["service_name"].as_str(), root["kind"].as_str()),
        (Some("otel-zipkin-shop"), Some("SERVER"))
    );
    assert_eq!(root["name"], "GET /orders/{id}");
    assert_eq!(root["a"]["http.route"], "/orders/{id}");
    assert_eq!(root["a"]["order.items"], "3", "Zipkin tags are strings");
    assert!(root.get("p").is_none_or(Value::is_null));
    assert_eq!(child["p"], ids["otel_root_id"]);
    assert_eq!(child["kind"], "CLIENT");
    assert_eq!(
        (
            child["status_code"].as_str(),
            child["status_message"].as_str()
        ),
        (Some("ERROR"), Some("deadlock detected"))
    );
    assert_eq!(child["a"]["db.system"], "postgresql");
    assert_eq!(child["a"]["peer.service"], "orders-db");
    assert_eq!(child["ev"], json!(["retry"]));
    assert_eq!(
        (
            child["scope_name"].as_str(),
            child["scope_version"].as_str()
        ),
        (Some("zipkin-interop"), Some("1.2.3"))
    );

    // py_zipkin: a 64-bit trace id, left-padded.
    let server_span = by_id(&ids["pyzipkin_server_id"]);
    let client_span = by_id(&ids["pyzipkin_client_id"]);
    let trace64 = ids["pyzipkin_trace_id"].as_str().unwrap();
    assert_eq!(
        server_span["t"].as_str().unwrap(),
        format!("{trace64:0>32}")
    );
    assert_eq!(
        (server_span["kind"].as_str(), client_span["kind"].as_str()),
        (Some("SERVER"), Some("CLIENT"))
    );
    assert_eq!(server_span["a"]["payment.provider"], "acme");
    assert_eq!(client_span["p"], ids["pyzipkin_server_id"]);
    assert_eq!(
        (
            client_span["status_code"].as_str(),
            client_span["status_message"].as_str()
        ),
        (Some("ERROR"), Some("card declined"))
    );
    assert_eq!(server_span["status_code"], "UNSET");

    // py_zipkin in Zipkin v1 JSON: core annotations give the kinds.
    let v1_server = by_id(&ids["v1_server_id"]);
    let v1_client = by_id(&ids["v1_client_id"]);
    assert_eq!(
        (v1_server["kind"].as_str(), v1_server["name"].as_str()),
        (Some("SERVER"), Some("ship order"))
    );
    assert_eq!(v1_server["service_name"], "py-zipkin-legacy");
    assert_eq!(v1_server["a"]["carrier"], "dhl");
    assert_eq!(
        (v1_client["kind"].as_str(), v1_client["p"].clone()),
        (Some("CLIENT"), ids["v1_server_id"].clone())
    );
    assert!(v1_client["duration_ns"].as_i64().unwrap() > 0);

    // The Zipkin query API over what they sent (Grafana's health check is
    // GET /api/v2/services: 200 and a JSON array).
    let (status, services) = zipkin_get(&server, "/api/v2/services").await;
    assert_eq!(status, 200);
    assert_eq!(
        services,
        json!(["otel-zipkin-shop", "py-zipkin-billing", "py-zipkin-legacy"])
    );
    let (_, names) = zipkin_get(&server, "/api/v2/spans?serviceName=OTEL-ZIPKIN-SHOP").await;
    assert_eq!(names, json!(["GET /orders/{id}", "SELECT orders"]));
    let (_, keys) = zipkin_get(&server, "/api/v2/autocompleteKeys").await;
    assert!(
        keys.as_array().unwrap().contains(&json!("db.system")),
        "{keys}"
    );
    let (_, values) = zipkin_get(&server, "/api/v2/autocompleteValues?key=db.system").await;
    assert_eq!(values, json!(["postgresql"]));
    let (_, remote) = zipkin_get(
        &server,
        "/api/v2/remoteServices?serviceName=otel-zipkin-shop",
    )
    .await;
    assert_eq!(remote, json!(["orders-db"]));
    let (_, traces) = zipkin_get(
        &server,
        "/api/v2/traces?serviceName=py-zipkin-billing&spanName=call%20bank",
    )
    .await;
    let traces = traces.as_array().unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].as_array().unwrap().len(), 2);
    assert_eq!(
        traces[0][0]["traceId"], trace64,
        "16 hex digits when the high half is zero"
    );
    let (_, errors_only) = zipkin_get(&server, "/api/v2/traces?annotationQuery=error").await;
    assert_eq!(errors_only.as_array().unwrap().len(), 2);
    let (_, declined) = zipkin_get(
        &server,
        "/api/v2/traces?annotationQuery=error%3Dcard%20declined",
    )
    .await;
    assert_eq!(declined[0][0]["traceId"], trace64);
    assert_eq!(declined.as_array().unwrap().len(), 1);
    let (_, db) = zipkin_get(
        &server,
        "/api/v2/traces?annotationQuery=db.system%3Dpostgresql%20and%20retry&minDuration=1",
    )
    .await;
    assert_eq!(db[0][0]["traceId"], ids["otel_trace_id"]);
    let end = now_nanos() / 1_000_000 + 1000;
    let (_, deps) = zipkin_get(
        &server,
        &format!("/api/v2/dependencies?endTs={end}&lookback=3600000"),
    )
    .await;
    assert_eq!(
        deps,
        json!([{"parent": "otel-zipkin-shop", "child": "orders-db", "callCount": 1, "errorCount": 1}])
    );
    let many = format!(
        "/api/v2/traceMany?traceIds={},{}",
        ids["otel_trace_id"].as_str().unwrap(),
        trace64
    );
    let (status, many) = zipkin_get(&server, &many).await;
    assert_eq!(status, 200);
    assert_eq!(many.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_bad_input_is_refused_with_a_reason() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let now_us = now_nanos() / 1000;
    let good = |id: &str| json!({"traceId": "a1", "id": id, "name": "ok", "timestamp": now_us, "duration": 5, "localEndpoint": {"serviceName": "svc"}});
    for (content_type, body, gzip, status, needle) in [
        (
            "application/json",
            json!(good("1")).to_string(),
            false,
            400,
            "JSON list",
        ),
        (
            "application/json",
            json!([good("1"), {"traceId": "zz", "id": "2"}]).to_string(),
            false,
            400,
            "span 1: traceId",
        ),
        (
            "application/json",
            json!([{"traceId": "1", "id": "2", "binaryAnnotations": []}]).to_string(),
            false,
            400,
            "v1",
        ),
        (
            "application/json",
            "[{\"traceId\":".to_string(),
            false,
            400,
            "invalid Zipkin v2 JSON",
        ),
        ("text/plain", "[]".to_string(), false, 415, "content type"),
        (
            "application/x-protobuf",
            "\u{1}\u{2}\u{3}".to_string(),
            false,
            400,
            "proto3",
        ),
    ] {
        let (got, text) = post(&server, content_type, body.clone().into_bytes(), gzip).await;
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
    // Zipkin v1: JSON only.
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/spans", server.zipkin))
        .header("content-type", "application/x-thrift")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("v1 thrift is not supported")
    );
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/spans", server.zipkin))
        .json(&json!({"traceId": "a1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("JSON list of Zipkin v1 spans")
    );
    // Corrupt gzip.
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v2/spans", server.zipkin))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body("not gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // One span too old for the accepted window: the other is stored, and the
    // answer says so.
    let old =
        json!({"traceId": "a1", "id": "3", "name": "old", "timestamp": 1_000_000, "duration": 5});
    let (status, text) = post(
        &server,
        "application/json",
        json!([good("4"), old]).to_string().into_bytes(),
        true,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("1 spans stored, 1 rejected"), "{text}");
    // proto3, gzip-compressed.
    let list = tracelake_protocols::zipkin::proto::ListOfSpans {
        spans: vec![tracelake_protocols::zipkin::proto::Span {
            trace_id: vec![0xa1],
            id: vec![5],
            name: "from proto".into(),
            kind: 2,
            timestamp: now_us,
            duration: 7,
            local_endpoint: Some(tracelake_protocols::zipkin::proto::Endpoint {
                service_name: "svc".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let (status, text) = post(
        &server,
        "application/x-protobuf",
        prost::Message::encode_to_vec(&list),
        true,
    )
    .await;
    assert_eq!((status, text.as_str()), (202, ""));
    let rows = server
        .sql("SELECT name, kind, duration_ns FROM spans WHERE trace_id = X'000000000000000000000000000000a1' ORDER BY name")
        .await;
    assert_eq!(
        Value::Array(rows),
        json!([
            {"name": "from proto", "kind": "SERVER", "duration_ns": 7000},
            {"name": "ok", "kind": "UNSPECIFIED", "duration_ns": 5000},
        ])
    );
    // Query parameters.
    for (path, status, needle) in [
        ("/api/v2/spans", 400, "serviceName is required"),
        ("/api/v2/traces?maxDuration=5", 400, "requires minDuration"),
        ("/api/v2/traces?limit=0", 400, "limit"),
        ("/api/v2/traces?lookback=-1", 400, "lookback"),
        ("/api/v2/trace/xyz", 400, "invalid trace id"),
        ("/api/v2/trace/ffff", 404, "ffff not found"),
        ("/api/v2/traceMany?traceIds=a1", 400, "at least two"),
        ("/api/v2/dependencies", 400, "endTs is required"),
    ] {
        let (got, body) = zipkin_get(&server, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(
            body.as_str().unwrap_or_default().contains(needle),
            "{path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_trace_reads_back_through_the_zipkin_api() {
    let data = tempfile::tempdir().unwrap();
    // Fixed times (2023-11-14T22:13:20.123456789Z), so that the expected
    // microseconds are written out rather than computed.
    let server = TestServer::start(data.path(), &["--max-span-age", "36500d"]).await;
    let trace = 0x4bf92f3577b34da6a3ce929d0e0e4736u128;
    let mut root = span(trace, 0x00f067aa0ba902b7);
    root.name = "GET /checkout".into();
    root.start_time_unix_nano = 1_700_000_000_123_456_789;
    root.end_time_unix_nano = 1_700_000_000_124_456_789;
    let mut child = span(trace, 0x00f067aa0ba902b8);
    child.start_time_unix_nano = 1_700_000_000_124_000_999;
    child.end_time_unix_nano = 1_700_000_000_125_000_999;
    child.parent_span_id = root.span_id.clone();
    child.kind = 3;
    child.name = "charge".into();
    child.attributes.push(kv("peer.service", "payments"));
    child.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: 2,
        message: "card declined".into(),
    });
    child
        .events
        .push(opentelemetry_proto::tonic::trace::v1::span::Event {
            time_unix_nano: child.start_time_unix_nano + 1000,
            name: "retry".into(),
            ..Default::default()
        });
    server.export(&request("checkout", vec![root, child])).await;
    let (status, spans) = zipkin_get(&server, &format!("/api/v2/trace/{trace:032x}")).await;
    assert_eq!(status, 200, "{spans}");
    let spans = sorted(spans.as_array().unwrap().clone());
    assert_eq!(
        spans,
        [
            json!({
                "traceId": format!("{trace:032x}"), "id": "00f067aa0ba902b7", "kind": "SERVER",
                "name": "GET /checkout", "timestamp": 1_700_000_000_123_456u64, "duration": 1000,
                "localEndpoint": {"serviceName": "checkout"},
                "tags": {"http.route": "/items/{id}"},
            }),
            json!({
                "traceId": format!("{trace:032x}"), "id": "00f067aa0ba902b8", "parentId": "00f067aa0ba902b7",
                "kind": "CLIENT", "name": "charge", "timestamp": 1_700_000_000_124_000u64, "duration": 1000,
                "localEndpoint": {"serviceName": "checkout"}, "remoteEndpoint": {"serviceName": "payments"},
                "annotations": [{"timestamp": 1_700_000_000_124_001u64, "value": "retry"}],
                "tags": {"http.route": "/items/{id}", "otel.status_code": "ERROR", "error": "card declined",
                         "otel.status_description": "card declined"},
            }),
        ]
    );
}
