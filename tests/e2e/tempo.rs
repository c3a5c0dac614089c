//! The Tempo API as Grafana uses it (health, tempopb protobuf trace by id,
//! TraceQL search, tag discovery), and one OTLP trace read back identically
//! through the native, Jaeger, Zipkin and Tempo APIs.

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use prost::Message as _;
use serde_json::json;

use crate::server::TestServer;
use crate::spans::{kv, now_nanos, request};

/// `tempopb.Trace` (grafana/tempo `pkg/tempopb/tempo.proto`): its
/// `tempopb.trace.v1.ResourceSpans` is OTLP's on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

/// `tempopb.TraceByIDMetrics`.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdMetrics {
    #[prost(uint64, tag = "1")]
    inspected_bytes: u64,
}

/// `tempopb.TraceByIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TempoTrace>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<TraceByIdMetrics>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

fn typed(key: &str, value: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

const TRACE: u128 = 0x5b8e_fff7_9803_8103_d269_b633_813f_c60c;

/// A two-span trace with typed attributes, an error status and an event.
fn sample() -> Vec<Span> {
    let start = now_nanos() - 5_000_000_000;
    let root = Span {
        trace_id: TRACE.to_be_bytes().to_vec(),
        span_id: 0xeee1_9b7e_c3c1_b174u64.to_be_bytes().to_vec(),
        name: "GET /cart".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 80_000_000,
        attributes: vec![
            kv("http.route", "/cart"),
            typed("http.response.status_code", Any::IntValue(503)),
            typed("retry", Any::BoolValue(true)),
            typed("ratio", Any::DoubleValue(0.25)),
        ],
        status: Some(Status {
            code: 2,
            message: "backend down".into(),
        }),
        ..Default::default()
    };
    let child = Span {
        trace_id: TRACE.to_be_bytes().to_vec(),
        span_id: 0xeee1_9b7e_c3c1_b175u64.to_be_bytes().to_vec(),
        parent_span_id: root.span_id.clone(),
        name: "SELECT cart".into(),
        kind: 3,
        start_time_unix_nano: start + 10_000_000,
        end_time_unix_nano: start + 60_000_000,
        attributes: vec![
            kv("db.system", "postgresql"),
            kv("peer.service", "carts-db"),
        ],
        events: vec![Event {
            time_unix_nano: start + 20_000_000,
            name: "slow query".into(),
            attributes: vec![typed("rows", Any::IntValue(42))],
            dropped_attributes_count: 0,
        }],
        // An unset status reads back as an empty status message, as SDKs
        // send it (on the wire the two differ by an empty field).
        status: Some(Status::default()),
        ..Default::default()
    };
    let mut spans = vec![root, child];
    for span in &mut spans {
        by_key(&mut span.attributes);
    }
    spans
}

/// GET `path` with an `Accept` header: status and body bytes.
pub(crate) async fn get_raw(server: &TestServer, path: &str, accept: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(server.url(path))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn spans_of(resource_spans: &[ResourceSpans]) -> Vec<Span> {
    let mut spans: Vec<Span> = resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect();
    spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    for span in &mut spans {
        by_key(&mut span.attributes);
    }
    spans
}

/// Attributes are a map: OTLP gives their order no meaning, and attributes
/// with a column of their own come back after the others.
fn by_key(attributes: &mut [KeyValue]) {
    attributes.sort_by(|a, b| a.key.cmp(&b.key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_reads_back_identically_through_every_api() {
    let data = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(data.path(), &[]).await;
    let sent = sample();
    server.export(&request("cart", sent.clone())).await;
    // From the buffer (nothing is committed yet)...
    assert_eq!(committed_rows(&server).await, 0);
    read_back_everywhere(&server, &sent).await;
    // ...and from Parquet: SIGTERM commits the buffer before exit (the rows
    // are in the table, not left for the WAL to replay), and after a
    // restart every API reads the files.
    server.terminate();
    let server = TestServer::start(data.path(), &[]).await;
    assert_eq!(committed_rows(&server).await, sent.len() as u64);
    read_back_everywhere(&server, &sent).await;
}

async fn committed_rows(server: &TestServer) -> u64 {
    let (status, body) = server.get("/api/v1/storage").await;
    assert_eq!(status, 200, "{body}");
    body["rows"].as_u64().unwrap()
}

/// The trace `sent` through the Tempo, native, Jaeger and Zipkin APIs.
async fn read_back_everywhere(server: &TestServer, sent: &[Span]) {
    let id = format!("{TRACE:032x}");
    // Tempo, as Grafana asks: protobuf TraceByIDResponse, decoded with the
    // tempopb definitions, holds exactly the spans sent.
    let (status, body) = get_raw(
        server,
        &format!("/tempo/api/v2/traces/{id}"),
        "application/protobuf",
    )
    .await;
    assert_eq!(status, 200);
    let response = TraceByIdResponse::decode(body.as_slice()).unwrap();
    assert_eq!(response.status, 0, "complete");
    let trace = response.trace.unwrap();
    assert_eq!(spans_of(&trace.resource_spans), sent);
    // Grafana's fallback: v1, `tempopb.Trace`; short (zero-trimmed) ids.
    let (status, body) = get_raw(
        server,
        &format!("/tempo/api/traces/{}", id.trim_start_matches('0')),
        "application/protobuf",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        spans_of(&TempoTrace::decode(body.as_slice()).unwrap().resource_spans),
        sent
    );
    let (status, _) = get_raw(
        server,
        "/tempo/api/v2/traces/0000000000000000000000000000abcd",
        "application/protobuf",
    )
    .await;
    assert_eq!(status, 404, "Grafana then tries v1");
    // Tempo JSON: base64 ids, enum names.
    let (_, json_trace) = server.get(&format!("/tempo/api/v2/traces/{id}")).await;
    let first = &json_trace["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        b64.decode(first["traceId"].as_str().unwrap()).unwrap(),
        TRACE.to_be_bytes()
    );
    assert_eq!(first["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        first["status"],
        json!({"code": "STATUS_CODE_ERROR", "message": "backend down"})
    );

    // Tempo v1 JSON (older Grafana and tempo-cli): the same spans under
    // `batches`.
    let (status, v1) = server.get(&format!("/tempo/api/traces/{id}")).await;
    assert_eq!(status, 200, "{v1}");
    assert_eq!(
        v1["batches"], json_trace["trace"]["resourceSpans"],
        "v1 JSON holds what v2 JSON holds"
    );
    assert_eq!(
        v1["batches"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .map(Vec::len),
        Some(sent.len())
    );

    // Native.
    let (_, native) = server.get(&format!("/api/v1/traces/{id}")).await;
    let root = &native["spans"][0];
    assert_eq!(root["spanId"], "eee19b7ec3c1b174");
    assert_eq!(root["name"], "GET /cart");
    assert_eq!(
        root["startTimeUnixNano"],
        sent[0].start_time_unix_nano.to_string()
    );
    assert_eq!(
        root["endTimeUnixNano"],
        sent[0].end_time_unix_nano.to_string()
    );
    assert_eq!(
        root["attributes"],
        json!({"http.route": "/cart", "http.response.status_code": 503, "retry": true, "ratio": 0.25})
    );
    assert_eq!(
        root["status"],
        json!({"code": "ERROR", "message": "backend down"})
    );
    assert_eq!(native["spans"][1]["parentSpanId"], "eee19b7ec3c1b174");

    // Jaeger.
    let (_, jaeger) = server.get(&format!("/jaeger/api/traces/{id}")).await;
    let spans = jaeger["data"][0]["spans"].as_array().unwrap();
    let root = spans
        .iter()
        .find(|s| s["spanID"] == "eee19b7ec3c1b174")
        .unwrap();
    assert_eq!(root["operationName"], "GET /cart");
    assert_eq!(root["startTime"], sent[0].start_time_unix_nano / 1000);
    assert_eq!(root["duration"], 80_000);
    let mut tags = root["tags"].as_array().unwrap().clone();
    tags[..4].sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    assert_eq!(
        json!(tags),
        json!([
            // The attributes (in no set order: by key here, see `by_key`),
            // then the tags Jaeger derives.
            {"key": "http.response.status_code", "type": "int64", "value": 503},
            {"key": "http.route", "type": "string", "value": "/cart"},
            {"key": "ratio", "type": "float64", "value": 0.25},
            {"key": "retry", "type": "bool", "value": true},
            {"key": "span.kind", "type": "string", "value": "server"},
            {"key": "otel.status_code", "type": "string", "value": "ERROR"},
            {"key": "error", "type": "bool", "value": true},
            {"key": "otel.status_description", "type": "string", "value": "backend down"},
        ])
    );
    let child = spans
        .iter()
        .find(|s| s["spanID"] == "eee19b7ec3c1b175")
        .unwrap();
    assert_eq!(child["references"][0]["spanID"], "eee19b7ec3c1b174");
    assert_eq!(
        child["logs"],
        json!([{"timestamp": sent[1].events[0].time_unix_nano / 1000, "fields": [
            {"key": "event", "type": "string", "value": "slow query"},
            {"key": "rows", "type": "int64", "value": 42}]}])
    );

    // Zipkin (tags are strings there).
    let (_, zipkin) = server.get(&format!("/zipkin/api/v2/trace/{id}")).await;
    let root = zipkin
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "eee19b7ec3c1b174")
        .unwrap();
    assert_eq!(root["name"], "GET /cart");
    assert_eq!(root["timestamp"], sent[0].start_time_unix_nano / 1000);
    assert_eq!(root["duration"], 80_000);
    assert_eq!(
        root["tags"],
        json!({"http.route": "/cart", "http.response.status_code": "503", "retry": "true", "ratio": "0.25",
               "otel.status_code": "ERROR", "error": "backend down", "otel.status_description": "backend down"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_search_and_tags_as_grafana_uses_them() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let sent = sample();
    server.export(&request("cart", sent.clone())).await;
    // A second, healthy trace from another service.
    let mut other = sample();
    for s in &mut other {
        s.trace_id = 0xabcdu128.to_be_bytes().to_vec();
        s.status = None;
    }
    other[1].attributes = vec![kv("db.system", "redis")];
    server.export(&request("checkout", other)).await;

    // Grafana's connection test and feature gate.
    let (status, echo) = server.get("/tempo/api/echo").await;
    assert_eq!((status, echo), (200, json!("echo")));
    let (status, ready) = server.get("/tempo/ready").await;
    assert_eq!((status, ready), (200, json!("ready")));
    let (_, info) = server.get("/tempo/api/status/buildinfo").await;
    assert!(
        info["version"].as_str().unwrap().split('.').count() == 3,
        "{info}"
    );

    let now = now_nanos() / 1_000_000_000;
    let window = format!("start={}&end={}", now - 600, now + 60);
    let search = |q: &str| {
        let q = url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>();
        format!("/tempo/api/search?q={q}&{window}&limit=20&spss=3")
    };
    for (q, expected) in [
        ("{}", vec!["abcd", "5b8efff798038103d269b633813fc60c"]),
        (
            r#"{resource.service.name="cart"}"#,
            vec!["5b8efff798038103d269b633813fc60c"],
        ),
        (
            r#"{.db.system =~ "post.*" && kind = client}"#,
            vec!["5b8efff798038103d269b633813fc60c"],
        ),
        (
            r#"{span.http.response.status_code >= 500}"#,
            vec!["abcd", "5b8efff798038103d269b633813fc60c"],
        ),
        ("{status = error}", vec!["5b8efff798038103d269b633813fc60c"]),
        (
            r#"{name = "GET /cart"} > {span.db.system = "redis"}"#,
            vec!["abcd"],
        ),
        (
            r#"{name = "GET /cart"} >> {duration > 40ms}"#,
            vec!["abcd", "5b8efff798038103d269b633813fc60c"],
        ),
        (
            r#"{rootServiceName = "checkout"} && {event:name = "slow query"}"#,
            vec!["abcd"],
        ),
        (r#"{traceDuration > 1s}"#, vec![]),
        (
            r#"{.db.system = "redis"} || {.db.system = "postgresql"}"#,
            vec!["abcd", "5b8efff798038103d269b633813fc60c"],
        ),
    ] {
        let (status, body) = server.get(&search(q)).await;
        assert_eq!(status, 200, "{q}: {body}");
        let mut ids: Vec<_> = body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(ids, expected, "{q}");
    }
    let (_, body) = server.get(&search(r#"{.db.system = "postgresql"}"#)).await;
    let t = &body["traces"][0];
    assert_eq!(t["rootServiceName"], "cart");
    assert_eq!(t["rootTraceName"], "GET /cart");
    assert_eq!(t["durationMs"], 80);
    assert_eq!(
        t["startTimeUnixNano"],
        sent[0].start_time_unix_nano.to_string()
    );
    assert_eq!(t["spanSets"][0]["matched"], 1);
    assert_eq!(t["spanSets"][0]["spans"][0]["spanID"], "eee19b7ec3c1b175");
    assert_eq!(t["spanSets"][0]["spans"][0]["durationNanos"], "50000000");
    assert_eq!(
        t["serviceStats"],
        json!({"cart": {"spanCount": 2, "errorCount": 1}})
    );
    // Legacy tag search and trace-duration filters.
    let (_, body) = server
        .get(&format!("/tempo/api/search?tags=db.system%3Dredi&{window}"))
        .await;
    assert_eq!(body["traces"][0]["traceID"], "abcd");
    let (_, body) = server
        .get(&format!("/tempo/api/search?minDuration=90ms&{window}"))
        .await;
    assert_eq!(body["traces"], json!([]));

    // Tag discovery.
    let (_, tags) = server.get("/tempo/api/v2/search/tags").await;
    let scope = |name: &str| {
        tags["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["tags"]
            .clone()
    };
    assert_eq!(scope("resource"), json!(["service.name"]));
    assert_eq!(
        scope("span"),
        json!([
            "db.system",
            "http.response.status_code",
            "http.route",
            "peer.service",
            "ratio",
            "retry"
        ])
    );
    assert!(
        scope("intrinsic")
            .as_array()
            .unwrap()
            .contains(&json!("rootServiceName"))
    );
    let (_, tags) = server.get("/tempo/api/search/tags").await;
    assert!(
        tags["tagNames"]
            .as_array()
            .unwrap()
            .contains(&json!("service.name"))
    );
    let (_, values) = server
        .get("/tempo/api/v2/search/tag/resource.service.name/values")
        .await;
    assert_eq!(
        values["tagValues"],
        json!([{"type": "string", "value": "cart"}, {"type": "string", "value": "checkout"}])
    );
    let (_, values) = server
        .get("/tempo/api/v2/search/tag/span.http.response.status_code/values")
        .await;
    assert_eq!(
        values["tagValues"],
        json!([{"type": "int", "value": "503"}])
    );
    // Grafana encodes the tag twice.
    let (_, values) = server
        .get("/tempo/api/v2/search/tag/span.db%252Esystem/values?q=%7Bbroken")
        .await;
    assert_eq!(
        values["tagValues"],
        json!([{"type": "string", "value": "postgresql"}, {"type": "string", "value": "redis"}])
    );
    let (_, values) = server.get("/tempo/api/search/tag/db.system/values").await;
    assert_eq!(values["tagValues"], json!(["postgresql", "redis"]));

    // Bad input.
    for (path, needle) in [
        (
            "/tempo/api/search?q=%7Bname%3D".to_string(),
            "expected a value",
        ),
        (
            "/tempo/api/search?q=%7B%7D&tags=a%3Db".to_string(),
            "not both",
        ),
        ("/tempo/api/search?limit=0".to_string(), "limit"),
        (
            "/tempo/api/search?start=100&end=50".to_string(),
            "end must be after start",
        ),
        (
            "/tempo/api/search?minDuration=2s&maxDuration=1s".to_string(),
            "maxDuration",
        ),
        (search(r#"{.a =~ "("}"#), "invalid regular expression"),
        ("/tempo/api/v2/traces/xyz".to_string(), "invalid trace id"),
    ] {
        let (status, body) = server.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.as_str().unwrap_or_default().contains(needle),
            "{path}: {body}"
        );
    }
}
