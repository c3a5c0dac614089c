//! The Jaeger query API: Jaeger's own golden files (OTLP in, Jaeger UI JSON
//! out; api_v3 snapshots), search over an OTLP trace, shared Zipkin span ids
//! made unique, and errors in Jaeger's envelopes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::server::{FILLER_PARTITION, FLUSH_BYTES, TestServer, fixtures, metric, python_with};
use crate::spans::{kv, now_nanos, request, span};

async fn post_otlp_json(server: &TestServer, body: Vec<u8>) {
    let r = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!((status.as_u16(), text.as_str()), (200, "{}"));
}

fn fixture(dir: &std::path::Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

/// The settings of a server whose historical spans (2024, 2018, and 1970
/// for the api_v3 snapshots) are accepted and kept, and that flushes when
/// the test asks ([`TestServer::flush_with_filler`]).
const HISTORICAL: [&str; 6] = [
    "--max-span-age",
    "36500d",
    "--retention",
    "0s",
    "--flush-max-bytes",
    FLUSH_BYTES,
];

/// Reads back from the buffer (nothing committed), then from Parquet after a
/// flush on the running server, then after a restart on the same data: the
/// same `check` each time, and the rows committed per partition as
/// `committed` says.
async fn from_buffer_then_parquet<F, Fut>(
    data: &std::path::Path,
    mut server: TestServer,
    committed: std::collections::BTreeMap<String, u64>,
    check: F,
) where
    F: Fn(TestServer) -> Fut,
    Fut: std::future::Future<Output = TestServer>,
{
    assert_eq!(server.committed().await, Default::default());
    server = check(server).await;
    assert_eq!(
        server.committed().await,
        Default::default(),
        "read from the buffer"
    );
    assert_eq!(server.flush_with_filler().await, committed);
    let mut server = check(server).await;
    server.terminate();
    let server = TestServer::start(data, &HISTORICAL).await;
    let mut after_restart = server.committed().await;
    after_restart.remove(FILLER_PARTITION);
    assert_eq!(after_restart, committed);
    check(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_golden_files() {
    let Some(dir) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &HISTORICAL).await;
    // OTLP/JSON in, Jaeger UI trace JSON out (with its duplicate span).
    post_otlp_json(
        &server,
        std::fs::read(dir.join("jaeger_otlp2jaeger-in.json")).unwrap(),
    )
    .await;
    // api_v3 GetTrace: the snapshot's own result, sent as OTLP/JSON.
    let get_trace = fixture(&dir, "jaeger_apiv3_GetTrace.json");
    post_otlp_json(&server, serde_json::to_vec(&get_trace["result"]).unwrap()).await;
    // OpenTelemetry's OTLP/JSON example (upper-case hex ids).
    let example = fixture(&dir, "opentelemetry-proto_trace.json");
    post_otlp_json(&server, serde_json::to_vec(&example).unwrap()).await;
    // One recent service for the services and operations snapshots; the
    // historical spans above are outside the discovery window.
    let mut recent = span(0x77, 0x78);
    recent.name = "get_users".into();
    let recent_hour = chrono::DateTime::from_timestamp_nanos(recent.start_time_unix_nano as i64)
        .format("date=%Y-%m-%d/hour=%H")
        .to_string();
    server.export(&request("foo", vec![recent])).await;
    let committed = [
        ("date=1970-01-01/hour=00".to_string(), 1),
        ("date=2018-12-13/hour=14".to_string(), 1),
        ("date=2024-01-31/hour=05".to_string(), 2),
        (recent_hour, 1),
    ]
    .into_iter()
    .collect();
    let dir = &dir;
    from_buffer_then_parquet(data.path(), server, committed, |server| async move {
        golden_read_back(&server, dir).await;
        server
    })
    .await;
}

async fn golden_read_back(server: &TestServer, dir: &std::path::Path) {
    let (status, body) = server
        .get("/jaeger/api/traces/83a9efd15c1c98a977e0711cc93ee28b")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, fixture(dir, "jaeger_otlp2jaeger-out.json"));

    // api_v3 GetTrace comes back as the snapshot (defaults omitted, enums as
    // numbers).
    let (status, body) = server
        .get("/jaeger/api/v3/traces/00000000000000000000000000000001")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, fixture(dir, "jaeger_apiv3_GetTrace.json"));

    // The OpenTelemetry example comes back from api_v3 as sent, in canonical
    // form: lower-case ids, and the stored span's (unset) status as an
    // empty message.
    let mut expected = fixture(dir, "opentelemetry-proto_trace.json");
    let sent_span = &mut expected["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(
        (
            &sent_span["traceId"],
            &sent_span["spanId"],
            &sent_span["parentSpanId"]
        ),
        (
            &json!("5B8EFFF798038103D269B633813FC60C"),
            &json!("EEE19B7EC3C1B174"),
            &json!("EEE19B7EC3C1B173")
        ),
        "the fixture as sent"
    );
    sent_span["traceId"] = json!("5b8efff798038103d269b633813fc60c");
    sent_span["spanId"] = json!("eee19b7ec3c1b174");
    sent_span["parentSpanId"] = json!("eee19b7ec3c1b173");
    sent_span["status"] = json!({});
    let (status, body) = server
        .get("/jaeger/api/v3/traces/5b8efff798038103d269b633813fc60c")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "result": expected }));

    // Services and operations: the one recent service.
    let (_, body) = server.get("/jaeger/api/v3/services").await;
    assert_eq!(body, fixture(dir, "jaeger_apiv3_GetServices.json"));
    let (_, body) = server.get("/jaeger/api/v3/operations?service=foo").await;
    assert_eq!(body, fixture(dir, "jaeger_apiv3_GetOperations.json"));
    // Grafana's Jaeger health check.
    let (status, body) = server.get("/jaeger/api/services").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"data": ["foo"], "total": 1, "limit": 0, "offset": 0, "errors": null})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_trace_summaries_snapshot() {
    let Some(dir) = fixtures() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &HISTORICAL).await;
    // The snapshot's trace: two frontend spans from t = 1000 s, one an
    // error, ending at 1001 s.
    let body = json!({"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "frontend"}}]},
    "scopeSpans": [{"spans": [
        {"traceId": "00000000000000000000000000000001", "spanId": "0000000000000001", "name": "HTTP GET /",
         "kind": 2, "startTimeUnixNano": "1000000000000", "endTimeUnixNano": "1001000000000"},
        {"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002",
         "parentSpanId": "0000000000000001", "name": "db", "kind": 3,
         "startTimeUnixNano": "1000100000000", "endTimeUnixNano": "1000200000000", "status": {"code": 2}}
    ]}]}]});
    post_otlp_json(&server, serde_json::to_vec(&body).unwrap()).await;
    let committed = [("date=1970-01-01/hour=00".to_string(), 2)].into();
    let dir = &dir;
    from_buffer_then_parquet(data.path(), server, committed, |server| async move {
        let (status, body) = server
            .get("/jaeger/api/v3/trace-summaries?query.service_name=frontend&query.start_time_min=1970-01-01T00:00:00Z&query.start_time_max=1970-01-02T00:00:00Z")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, fixture(dir, "jaeger_apiv3_FindTraceSummaries.json"));
        server
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_search_trace_and_errors() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let trace = 0x1234_5678_9abc_def0_0fed_cba9_8765_4321u128;
    let mut root = span(trace, 0xa1);
    root.name = "GET /cart".into();
    root.end_time_unix_nano = root.start_time_unix_nano + 250_000_000;
    let mut child = span(trace, 0xa2);
    child.parent_span_id = root.span_id.clone();
    child.name = "SELECT".into();
    child.kind = 3;
    child.attributes.push(kv("db.system", "postgresql"));
    child.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: 2,
        message: "timeout".into(),
    });
    child
        .events
        .push(opentelemetry_proto::tonic::trace::v1::span::Event {
            time_unix_nano: child.start_time_unix_nano + 5_000,
            name: "retry".into(),
            attributes: vec![kv("attempt", "2")],
            dropped_attributes_count: 0,
        });
    let start_us = root.start_time_unix_nano / 1000;
    let child_start_us = child.start_time_unix_nano / 1000;
    server.export(&request("cart", vec![root, child])).await;
    let now_us = now_nanos() / 1000;
    let window = format!(
        "start={}&end={}",
        now_us - 3_600_000_000,
        now_us + 1_000_000
    );

    for (query, found) in [
        ("service=cart", true),
        ("service=cart&operation=SELECT", true),
        ("service=cart&tags=%7B%22error%22%3A%22true%22%7D", true),
        (
            "service=cart&tag=db.system:postgresql&tag=span.kind:client",
            true,
        ),
        ("service=cart&tag=db.system:mysql", false),
        ("service=cart&minDuration=200ms", true),
        ("service=cart&minDuration=300ms", false),
        ("service=cart&maxDuration=1.5ms&minDuration=1ms", true),
        ("service=other", false),
    ] {
        let (status, body) = server
            .get(&format!("/jaeger/api/traces?{query}&{window}&limit=20"))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(
            body["data"].as_array().unwrap().len(),
            usize::from(found),
            "{query}"
        );
    }
    let (_, body) = server
        .get(&format!("/jaeger/api/traces/{trace:032x}"))
        .await;
    let t = &body["data"][0];
    assert_eq!(t["traceID"], format!("{trace:032x}"));
    assert_eq!(t["processes"]["p1"]["serviceName"], "cart");
    let spans = t["spans"].as_array().unwrap();
    let root = spans
        .iter()
        .find(|s| s["operationName"] == "GET /cart")
        .unwrap();
    assert_eq!(root["startTime"], start_us);
    assert_eq!(root["duration"], 250_000);
    assert_eq!(root["references"], json!([]));
    let child = spans
        .iter()
        .find(|s| s["operationName"] == "SELECT")
        .unwrap();
    assert_eq!(
        child["references"],
        json!([{"refType": "CHILD_OF", "traceID": format!("{trace:032x}"), "spanID": "00000000000000a1"}])
    );
    assert_eq!(
        child["tags"],
        json!([
            {"key": "http.route", "type": "string", "value": "/items/{id}"},
            {"key": "db.system", "type": "string", "value": "postgresql"},
            {"key": "span.kind", "type": "string", "value": "client"},
            {"key": "otel.status_code", "type": "string", "value": "ERROR"},
            {"key": "error", "type": "bool", "value": true},
            {"key": "otel.status_description", "type": "string", "value": "timeout"},
        ])
    );
    assert_eq!(
        child["logs"],
        json!([{"timestamp": child_start_us + 5, "fields": [
            {"key": "event", "type": "string", "value": "retry"},
            {"key": "attempt", "type": "string", "value": "2"}]}])
    );
    // Operations with kinds, summaries, dependencies.
    let (_, ops) = server
        .get("/jaeger/api/operations?service=cart&spanKind=client")
        .await;
    assert_eq!(
        ops["data"],
        json!([{"name": "SELECT", "spanKind": "client"}])
    );
    let (_, ops) = server.get("/jaeger/api/services/cart/operations").await;
    assert_eq!(ops["data"], json!(["GET /cart", "SELECT"]));
    let (_, summaries) = server
        .get(&format!(
            "/jaeger/api/v3/trace-summaries?query.serviceName=cart&query.startTimeMin={}&query.startTimeMax={}&query.attributes=%7B%22db.system%22%3A%22postgresql%22%7D",
            "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
        ))
        .await;
    assert_eq!(summaries["summaries"][0]["errorSpanCount"], 1);
    assert_eq!(summaries["summaries"][0]["rootOperationName"], "GET /cart");
    // Multi-id lookup reports the missing one.
    let (status, body) = server
        .get(&format!(
            "/jaeger/api/traces?traceID={trace:032x}&traceID=ffff"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["errors"],
        json!([{"code": 404, "msg": "trace not found", "traceID": "000000000000ffff"}])
    );

    // Errors in the envelopes Grafana and Jaeger UI read.
    for (path, status, needle) in [
        ("/jaeger/api/traces", 400, "parameter 'service' is required"),
        (
            "/jaeger/api/traces?service=cart&tags=nope",
            400,
            "tags must be a JSON object",
        ),
        (
            "/jaeger/api/traces?service=cart&minDuration=fast",
            400,
            "minDuration",
        ),
        (
            "/jaeger/api/traces?service=cart&minDuration=2s&maxDuration=1s",
            400,
            "maxDuration",
        ),
        (
            "/jaeger/api/traces?service=cart&start=yesterday",
            400,
            "microseconds",
        ),
        (
            "/jaeger/api/traces/0000000000000bad",
            404,
            "trace not found",
        ),
        ("/jaeger/api/traces/xyz", 400, "invalid trace id"),
        (
            "/jaeger/api/operations",
            400,
            "parameter 'service' is required",
        ),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["data"], Value::Null, "{path}");
        let msg = body["errors"][0]["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{path}: {msg}");
        assert_eq!(body["errors"][0]["code"], status);
    }
    for (path, status, needle) in [
        (
            "/jaeger/api/v3/trace-summaries?query.service_name=cart",
            400,
            "start_time_min is required",
        ),
        (
            "/jaeger/api/v3/traces?query.start_time_min=2000-01-01T00:00:00Z&query.start_time_max=x",
            400,
            "RFC 3339",
        ),
        (
            "/jaeger/api/v3/traces?query.service_name=none&query.start_time_min=2000-01-01T00:00:00Z&query.start_time_max=2100-01-01T00:00:00Z",
            404,
            "No traces found",
        ),
        (
            "/jaeger/api/v3/traces/0000000000000bad",
            404,
            "trace not found",
        ),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["httpCode"], status);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_zipkin_span_ids_are_made_unique_for_jaeger() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let now_us = now_nanos() / 1000 - 1_000_000;
    // B3 single-host spans: the server half reuses the client's id.
    let spans = json!([
        {"traceId": "00000000000000aa", "id": "0000000000000001", "kind": "SERVER", "name": "get",
         "timestamp": now_us, "duration": 1000, "localEndpoint": {"serviceName": "web"}},
        {"traceId": "00000000000000aa", "id": "0000000000000002", "parentId": "0000000000000001", "kind": "CLIENT",
         "name": "call", "timestamp": now_us + 10, "duration": 900, "localEndpoint": {"serviceName": "web"}},
        {"traceId": "00000000000000aa", "id": "0000000000000002", "parentId": "0000000000000001", "kind": "SERVER",
         "name": "serve", "timestamp": now_us + 20, "duration": 800, "shared": true, "localEndpoint": {"serviceName": "api"}},
        {"traceId": "00000000000000aa", "id": "0000000000000003", "parentId": "0000000000000002",
         "name": "work", "timestamp": now_us + 30, "duration": 100, "localEndpoint": {"serviceName": "api"}}
    ]);
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v2/spans", server.zipkin))
        .json(&spans)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (_, body) = server.get("/jaeger/api/traces/aa").await;
    let spans = body["data"][0]["spans"].as_array().unwrap();
    let id = |name: &str| {
        spans.iter().find(|s| s["operationName"] == name).unwrap()["spanID"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let parent = |name: &str| {
        spans.iter().find(|s| s["operationName"] == name).unwrap()["references"][0]["spanID"]
            .as_str()
            .map(str::to_string)
    };
    let ids: std::collections::BTreeSet<_> = spans
        .iter()
        .map(|s| s["spanID"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "span ids are unique: {spans:?}");
    assert_eq!(id("call"), "0000000000000002");
    assert_ne!(id("serve"), "0000000000000002");
    assert_eq!(
        parent("serve").as_deref(),
        Some("0000000000000002"),
        "the server half under the client half"
    );
    assert_eq!(
        parent("work"),
        Some(id("serve")),
        "the server's child under the server"
    );
    assert_eq!(body["data"][0]["traceID"], "00000000000000aa");
    assert_eq!(body["data"][0]["processes"].as_object().unwrap().len(), 2);
}

/// Runs `tests/python/jaeger_clients.py`: the Python jaeger-client tracer
/// over UDP compact, and its generated thrift types over UDP binary and
/// HTTP. Outside CI the test is skipped when jaeger-client is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_clients_arrive_intact() {
    let Some(python) = python_with("jaeger_client, thrift", "jaeger-client") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let script = crate::checkout("tests/python/jaeger_clients.py");
    let script = script.to_str().unwrap();
    let ids = crate::procs::json_output(tokio::process::Command::new(&python).args([
        script,
        "127.0.0.1",
        &server.jaeger_compact.port().to_string(),
        &server.jaeger_binary.port().to_string(),
        &server.jaeger_http.port().to_string(),
    ]))
    .await;
    assert_eq!(ids["http_status"], 202);
    // UDP has no acknowledgement: wait until the datagrams are stored.
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = server
            .sql(
                "SELECT encode(trace_id, 'hex') AS t, encode(span_id, 'hex') AS s, \
                   encode(parent_span_id, 'hex') AS p, service_name, name, kind, status_code, \
                   span_attributes AS a, span_attribute_types AS ty, resource_attributes AS r, \
                   event_names(events) AS ev, duration_ns \
                 FROM spans",
            )
            .await;
        if rows.len() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(rows.len(), 4, "{rows:?}");
    let by_id = |id: &Value| {
        rows.iter()
            .find(|r| &r["s"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {rows:?}"))
    };

    // The OpenTracing tracer (UDP compact).
    let root = by_id(&ids["tracer_root"]);
    let child = by_id(&ids["tracer_child"]);
    assert_eq!(root["t"], ids["tracer_trace"]);
    assert_eq!(
        (
            root["service_name"].as_str(),
            root["name"].as_str(),
            root["kind"].as_str()
        ),
        (Some("jaeger-py-shop"), Some("checkout"), Some("SERVER"))
    );
    assert_eq!(root["a"]["http.method"], "POST");
    assert_eq!(root["a"]["cart.items"], "3");
    assert_eq!(root["ty"]["cart.items"], 2, "an int attribute");
    assert_eq!(
        root["r"]["region"], "eu-west-1",
        "tracer tags are resource attributes"
    );
    assert_eq!(root["status_code"], "UNSET");
    assert_eq!(child["p"], ids["tracer_root"]);
    assert_eq!(
        (child["kind"].as_str(), child["status_code"].as_str()),
        (Some("CLIENT"), Some("ERROR"))
    );
    assert!(child["a"].get("error").is_none() && child["a"].get("span.kind").is_none());
    assert_eq!(child["ev"], json!(["retry"]));

    // Agent.emitBatch in thrift binary (UDP) and a Batch over HTTP.
    for (trace, span, service, name) in [
        (
            "binary_trace",
            "binary_span",
            "jaeger-udp-binary",
            "GET /stock",
        ),
        ("http_trace", "http_span", "jaeger-http", "GET /price"),
    ] {
        let s = by_id(&ids[span]);
        assert_eq!(s["t"], ids[trace]);
        assert_eq!(
            (
                s["service_name"].as_str(),
                s["name"].as_str(),
                s["kind"].as_str()
            ),
            (Some(service), Some(name), Some("SERVER"))
        );
        assert_eq!(s["status_code"], "ERROR", "HTTP 503 on a server span");
        assert_eq!(s["duration_ns"], 4_000_000);
        assert_eq!(s["r"]["host.name"], "host-1");
        assert_eq!(s["ty"]["ratio"], 3, "a double attribute");
        assert_eq!(s["ev"], json!(["cache miss"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_thrift_bad_input_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let url = format!("http://{}/api/traces", server.jaeger_http);
    let client = reqwest::Client::new();
    for (content_type, body, needle) in [
        (
            "application/json",
            b"{}".to_vec(),
            "unsupported content type",
        ),
        (
            "application/x-thrift",
            b"\x0c\x00\x01\x0b\x00\x01\x7f\xff\xff\xff".to_vec(),
            "invalid Jaeger thrift",
        ),
        ("application/x-thrift", b"\x00".to_vec(), "no process"),
        (
            "application/x-thrift",
            vec![0x0c; 300],
            "invalid Jaeger thrift",
        ),
    ] {
        let r = client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.contains(needle), "{text}");
    }
    // Garbage datagrams are counted, not fatal.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(b"not thrift", server.jaeger_compact)
        .unwrap();
    socket
        .send_to(b"\x80\x01\x00\x04", server.jaeger_binary)
        .unwrap();
    let mut counted = false;
    for _ in 0..100 {
        let metrics = reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        counted = metric(
            &metrics,
            "tracelake_request_errors_total{protocol=\"jaeger_thrift_compact\",reason=\"bad_thrift\"}",
        ) == 1.0
            && metric(
                &metrics,
                "tracelake_request_errors_total{protocol=\"jaeger_thrift_binary\",reason=\"bad_thrift\"}",
            ) == 1.0;
        if counted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(counted, "bad datagrams are counted in /metrics");
    let (status, _) = server.get("/api/v1/services").await;
    assert_eq!(status, 200, "still serving");
}

/// Jaeger remote sampling from a strategies file: the HTTP answers, the
/// jaeger-client tracer's remote sampler taking each service's strategy
/// (`tests/python/sampling_client.py`), and the file reread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_sdks_take_their_sampling_strategy_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sampling.json");
    let strategies = |probed: f64| {
        serde_json::json!({
            "service_strategies": [
                {"service": "probed", "type": "probabilistic", "param": probed},
                {"service": "limited", "type": "ratelimiting", "param": 5},
                {"service": "per-op", "type": "probabilistic", "param": 0.5,
                 "operation_strategies": [{"operation": "GET /cart", "type": "probabilistic", "param": 0.1}]},
            ],
            "default_strategy": {"type": "probabilistic", "param": 0.75},
        })
        .to_string()
    };
    std::fs::write(&file, strategies(0.25)).unwrap();
    let port = crate::server::free_port();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--sampling-strategies-file",
            file.to_str().unwrap(),
            "--jaeger-sampling-listen",
            &port.to_string(),
        ],
    )
    .await;
    let get = |url: String| async move {
        let r = reqwest::get(url).await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    };
    let (status, body) = get(format!("http://{port}/sampling?service=limited")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"strategyType": "RATE_LIMITING", "rateLimitingSampling": {"maxTracesPerSecond": 5.0}})
    );
    let (status, body) = get(format!("http://{port}/sampling")).await;
    assert_eq!(status, 400);
    assert!(body.contains("service parameter is required"), "{body}");
    let (status, body) = get(server.url("/jaeger/api/sampling?service=probed")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"samplingRate\":0.25"), "{body}");

    let Some(python) = crate::server::python_with("jaeger_client", "jaeger-client") else {
        return;
    };
    let script = crate::checkout("tests/python/sampling_client.py");
    let script = script.to_str().unwrap();
    let out = crate::procs::json_output(tokio::process::Command::new(&python).args([
        script,
        "127.0.0.1",
        &port.port().to_string(),
        "probed",
        "limited",
        "per-op",
        "someone-else",
    ]))
    .await;
    let near = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 0.03;
    assert_eq!(out["probed"]["sampler"], "ProbabilisticSampler", "{out}");
    assert_eq!(out["probed"]["rate"], 0.25, "{out}");
    assert!(near(&out["probed"]["sampled_fraction"], 0.25), "{out}");
    assert_eq!(out["limited"]["sampler"], "RateLimitingSampler", "{out}");
    assert_eq!(out["limited"]["max_traces_per_second"], 5.0, "{out}");
    assert!(
        out["limited"]["sampled_fraction"].as_f64().unwrap() < 0.01,
        "5 traces per second of 20,000 at once: {out}"
    );
    assert_eq!(out["per-op"]["sampler"], "AdaptiveSampler", "{out}");
    assert_eq!(out["per-op"]["default_rate"], 0.5, "{out}");
    assert_eq!(out["per-op"]["operations"]["GET /cart"], 0.1, "{out}");
    assert!(near(&out["per-op"]["sampled_fraction"], 0.1), "{out}");
    assert_eq!(out["someone-else"]["rate"], 0.75, "the default: {out}");

    // The file is reread.
    std::fs::write(&file, strategies(0.5)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = get(format!("http://{port}/sampling?service=probed")).await;
        if body.contains("\"samplingRate\":0.5") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not reread: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Adaptive sampling: each root operation's probability computed from the
/// stored root spans (weighted by their clients' `sampler.param`), served
/// to a jaeger-client tracer, which samples at it; children do not count;
/// a service the strategies file lists keeps the file's strategy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_sampling_follows_the_stored_traffic() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sampling.json");
    std::fs::write(
        &file,
        json!({"service_strategies": [{"service": "pinned", "type": "probabilistic", "param": 0.7}]})
            .to_string(),
    )
    .unwrap();
    let port = crate::server::free_port();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--sampling-strategies-file",
            file.to_str().unwrap(),
            "--jaeger-sampling-listen",
            &port.to_string(),
            "--adaptive-sampling-target",
            "2",
            "--adaptive-sampling-interval",
            "500ms",
            "--adaptive-sampling-lookback",
            "10m",
        ],
    )
    .await;
    // "GET /cart": 3,000 root spans of clients sampling at 0.5 over the
    // last 5 minutes = 6,000 traces in the 10-minute lookback = 10/s, so
    // 0.2 samples the target 2/s. Each has a child, which does not count.
    // "GET /health": 60 untagged = 0.1/s, under the target: 1.
    let now = now_nanos();
    let double = |key: &str, v: f64| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(v)),
        }),
        key_strindex: 0,
    };
    let mut spans = Vec::new();
    for i in 0..3000u64 {
        let start = now - 300_000_000_000 + i * 100_000_000;
        let mut root = span(0x5a00 + u128::from(i), 2 * i + 1);
        root.name = "GET /cart".into();
        root.start_time_unix_nano = start;
        root.end_time_unix_nano = start + 5_000_000;
        root.attributes = vec![
            kv("sampler.type", "probabilistic"),
            double("sampler.param", 0.5),
        ];
        let mut child = span(0x5a00 + u128::from(i), 2 * i + 2);
        child.name = "SELECT carts".into();
        child.parent_span_id = root.span_id.clone();
        child.start_time_unix_nano = start + 1_000_000;
        child.end_time_unix_nano = start + 2_000_000;
        spans.push(root);
        spans.push(child);
    }
    for i in 0..60u64 {
        let mut root = span(0x9a00 + u128::from(i), 10_000 + i);
        root.name = "GET /health".into();
        root.start_time_unix_nano = now - 240_000_000_000 + i * 1_000_000_000;
        root.end_time_unix_nano = root.start_time_unix_nano + 1_000_000;
        spans.push(root);
    }
    for chunk in spans.chunks(1000) {
        server.export(&request("shop", chunk.to_vec())).await;
    }
    // "nightly": 3,000 untagged root spans (clients that do not tag, as
    // OpenTelemetry's) = 5/s: 0.4. They were kept before any probability
    // was given, so later rounds count them at 1, not at 0.4: the
    // probability holds instead of falling round after round.
    let nightly: Vec<_> = (0..3000u64)
        .map(|i| {
            let mut root = span(0x7a00 + u128::from(i), 20_000 + i);
            root.name = "nightly".into();
            root.start_time_unix_nano = now - 300_000_000_000 + i * 100_000_000;
            root.end_time_unix_nano = root.start_time_unix_nano + 1_000_000;
            root
        })
        .collect();
    for chunk in nightly.chunks(1000) {
        server.export(&request("batch", chunk.to_vec())).await;
    }
    let get = |url: String| async move {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let operations = |body: &Value| -> BTreeMap<String, f64> {
        body["operationSampling"]["perOperationStrategies"]
            .as_array()
            .map(|ops| {
                ops.iter()
                    .map(|o| {
                        (
                            o["operation"].as_str().unwrap().to_string(),
                            o["probabilisticSampling"]["samplingRate"].as_f64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        let (status, body) = get(format!("http://{port}/sampling?service=shop")).await;
        assert_eq!(status, 200);
        if operations(&body).len() == 2 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no adaptive strategy: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let ops = operations(&body);
    assert!((ops["GET /cart"] - 0.2).abs() < 0.005, "{body}");
    assert_eq!(ops["GET /health"], 1.0, "{body}");
    assert_eq!(
        body["operationSampling"]["defaultSamplingProbability"], 0.001,
        "operations not seen yet: Jaeger's initial probability"
    );
    let (_, batch) = get(format!("http://{port}/sampling?service=batch")).await;
    assert!(
        (operations(&batch)["nightly"] - 0.4).abs() < 0.005,
        "{batch}"
    );
    // Recomputed every 500 ms, the estimates hold.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let (_, again) = get(server.url("/jaeger/api/sampling?service=shop")).await;
    assert_eq!(operations(&again), ops, "{again}");
    let (_, again) = get(format!("http://{port}/sampling?service=batch")).await;
    assert!(
        (operations(&again)["nightly"] - 0.4).abs() < 0.005,
        "untagged traffic counted at the probability of its time: {again}"
    );
    let (_, pinned) = get(format!("http://{port}/sampling?service=pinned")).await;
    assert_eq!(
        pinned["probabilisticSampling"]["samplingRate"], 0.7,
        "{pinned}"
    );
    let (_, unseen) = get(format!("http://{port}/sampling?service=unseen")).await;
    assert_eq!(
        unseen["probabilisticSampling"]["samplingRate"], 0.001,
        "{unseen}"
    );

    let Some(python) = python_with("jaeger_client", "jaeger-client") else {
        return;
    };
    let script = crate::checkout("tests/python/sampling_client.py");
    let script = script.to_str().unwrap();
    let out = crate::procs::json_output(tokio::process::Command::new(&python).args([
        script,
        "127.0.0.1",
        &port.port().to_string(),
        "shop",
    ]))
    .await;
    assert_eq!(out["shop"]["sampler"], "AdaptiveSampler", "{out}");
    assert!(
        (out["shop"]["operations"]["GET /cart"].as_f64().unwrap() - 0.2).abs() < 0.005,
        "{out}"
    );
    let fraction = out["shop"]["sampled_fraction"].as_f64().unwrap();
    assert!(
        (fraction - 0.2).abs() < 0.03,
        "GET /cart sampled at 0.2: {out}"
    );
}
