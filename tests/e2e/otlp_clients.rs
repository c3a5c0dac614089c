//! The real `opentelemetry-otlp` Rust exporter sends over gRPC and HTTP; the
//! spans read back over SQL and the trace API field for field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Compression, Protocol, SpanExporter, WithExportConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

use crate::server::TestServer;

pub(crate) struct Sent {
    pub(crate) trace_id: String,
    parent_id: String,
    child_id: String,
    t0: SystemTime,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The exporter over gRPC (gzip) to `server`'s OTLP/gRPC port.
pub(crate) fn grpc_exporter(
    server: &TestServer,
) -> impl FnOnce() -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> + Send + 'static
{
    let endpoint = format!("http://{}", server.grpc);
    move || {
        SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_compression(Compression::Gzip)
            .build()
    }
}

/// The exporter over HTTP (protobuf) to `server`'s OTLP/HTTP port.
pub(crate) fn http_exporter(
    server: &TestServer,
) -> impl FnOnce() -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> + Send + 'static
{
    let endpoint = server.otlp_url();
    move || {
        SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_protocol(Protocol::HttpBinary)
            .build()
    }
}

/// A two-span trace through a real SDK pipeline with exact timestamps.
fn send_trace(exporter: SpanExporter, service: &str) -> Sent {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            Resource::builder_empty()
                .with_service_name(service.to_string())
                .with_attribute(KeyValue::new("deployment.environment.name", "test"))
                .build(),
        )
        .build();
    let tracer = provider.tracer("e2e-scope");
    // Microsecond-aligned plus 789 ns: checks nanosecond precision survives.
    let t0 = UNIX_EPOCH
        + Duration::from_micros(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
                - 5_000_000,
        )
        + Duration::from_nanos(789);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let parent = tracer
        .span_builder("GET /users/{id}")
        .with_kind(SpanKind::Server)
        .with_start_time(t0)
        .with_attributes(vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/users/{id}"),
            KeyValue::new("http.response.status_code", 200i64),
            KeyValue::new("cache.hit", false),
            KeyValue::new("ratio", 0.25),
        ])
        .start(&tracer);
    let trace_id = parent.span_context().trace_id().to_string();
    let parent_id = parent.span_context().span_id().to_string();
    let cx = Context::current_with_span(parent);
    let mut child = tracer
        .span_builder("SELECT users")
        .with_kind(SpanKind::Client)
        .with_start_time(at(10))
        .with_attributes(vec![KeyValue::new("db.system", "postgresql")])
        .start_with_context(&tracer, &cx);
    let child_id = child.span_context().span_id().to_string();
    child.add_event_with_timestamp("rows fetched", at(30), vec![KeyValue::new("rows", 3i64)]);
    child.set_status(Status::error("connection reset"));
    child.end_with_timestamp(at(40));
    cx.span().end_with_timestamp(at(100));
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();
    Sent {
        trace_id,
        parent_id,
        child_id,
        t0,
    }
}

/// Runs [`send_trace`] on a blocking thread: the SDK's simple processor
/// blocks on each export, which must not happen on a runtime worker.
pub(crate) async fn send(
    service: &'static str,
    exporter: impl FnOnce() -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError>
    + Send
    + 'static,
) -> Sent {
    tokio::task::spawn_blocking(move || send_trace(exporter().unwrap(), service))
        .await
        .unwrap()
}

pub(crate) async fn check(server: &TestServer, service: &str, sent: &Sent) {
    let t0 = nanos(sent.t0);
    let sql = format!(
        "SELECT encode(span_id, 'hex') AS span_id, encode(parent_span_id, 'hex') AS parent, \
         name, kind, service_name, status_code, status_message, start_time_unix_nano, duration_ns, \
         span_attributes['http.route'] AS route, http_request_method, http_response_status_code, \
         db_system, scope_name, resource_attributes['deployment.environment.name'] AS env, \
         cardinality(events) AS events \
         FROM spans WHERE trace_id = decode('{}', 'hex') ORDER BY start_time_unix_nano",
        sent.trace_id
    );
    let rows = server.sql(&sql).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (parent, child) = (&rows[0], &rows[1]);
    assert_eq!(parent["span_id"], sent.parent_id.as_str());
    assert_eq!(parent["parent"], Value::Null);
    assert_eq!(parent["name"], "GET /users/{id}");
    assert_eq!(parent["kind"], "SERVER");
    assert_eq!(parent["service_name"], service);
    assert_eq!(parent["status_code"], "UNSET");
    assert_eq!(parent["start_time_unix_nano"], t0);
    assert_eq!(parent["duration_ns"], 100_000_000);
    assert_eq!(parent["route"], "/users/{id}");
    assert_eq!(parent["http_request_method"], "GET");
    assert_eq!(parent["http_response_status_code"], 200);
    assert_eq!(parent["scope_name"], "e2e-scope");
    assert_eq!(parent["env"], "test");
    assert_eq!(child["span_id"], sent.child_id.as_str());
    assert_eq!(child["parent"], sent.parent_id.as_str());
    assert_eq!(child["kind"], "CLIENT");
    assert_eq!(child["status_code"], "ERROR");
    assert_eq!(child["status_message"], "connection reset");
    assert_eq!(child["start_time_unix_nano"], t0 + 10_000_000);
    assert_eq!(child["duration_ns"], 30_000_000);
    assert_eq!(child["db_system"], "postgresql");
    assert_eq!(child["events"], 1);

    let (status, trace) = server
        .get(&format!("/api/v1/traces/{}", sent.trace_id))
        .await;
    assert_eq!(status, 200, "{trace}");
    assert_eq!(trace["traceId"], sent.trace_id.as_str());
    assert_eq!(trace["spanCount"], 2);
    assert_eq!(trace["durationNs"], 100_000_000);
    assert_eq!(trace["rootSpanIds"], serde_json::json!([sent.parent_id]));
    let spans = trace["spans"].as_array().unwrap();
    let (p, c) = (&spans[0], &spans[1]);
    assert_eq!(p["spanId"], sent.parent_id.as_str());
    assert_eq!(p["children"], serde_json::json!([sent.child_id]));
    assert_eq!(p["depth"], 0);
    assert_eq!(p["startTimeUnixNano"], t0.to_string());
    assert_eq!(p["attributes"]["http.response.status_code"], 200);
    assert_eq!(p["attributes"]["cache.hit"], false);
    assert_eq!(p["attributes"]["ratio"], 0.25);
    assert_eq!(p["resource"]["attributes"]["service.name"], service);
    assert_eq!(p["scope"]["name"], "e2e-scope");
    assert_eq!(c["parentSpanId"], sent.parent_id.as_str());
    assert_eq!(c["depth"], 1);
    assert_eq!(c["orphan"], false);
    assert_eq!(c["status"]["code"], "ERROR");
    assert_eq!(c["status"]["message"], "connection reset");
    assert_eq!(c["endTimeUnixNano"], (t0 + 40_000_000).to_string());
    assert_eq!(c["events"][0]["name"], "rows fetched");
    assert_eq!(
        c["events"][0]["timeUnixNano"],
        (t0 + 30_000_000).to_string()
    );
    assert_eq!(c["events"][0]["attributes"]["rows"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_exporters_over_grpc_and_http_read_back_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    // Short flush age: the gRPC trace is read from Parquet, the HTTP one
    // (sent right before the query) most likely from the buffer.
    let mut server = TestServer::start(dir.path(), &["--flush-max-age", "200ms"]).await;

    let sent = send("e2e-grpc", grpc_exporter(&server)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    check(&server, "e2e-grpc", &sent).await;

    let sent_http = send("e2e-http", http_exporter(&server)).await;
    check(&server, "e2e-http", &sent_http).await;

    // Unknown and malformed ids.
    let (status, body) = server
        .get(&format!("/api/v1/traces/{}", "ab".repeat(16)))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/api/v1/traces/not-hex").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("not-hex"));

    // A graceful stop commits the buffer; a restart reads both traces back.
    server.terminate();
    let server = TestServer::start(dir.path(), &[]).await;
    check(&server, "e2e-grpc", &sent).await;
    check(&server, "e2e-http", &sent_http).await;
    // The committed segments are released: only the current one is left
    // (beside the file naming the WAL's node).
    let segments = std::fs::read_dir(dir.path().join("wal/default"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "wal")
        })
        .count();
    assert!(segments <= 1, "{segments} segments left");
}
