//! The HTTP surfaces in process: each router called directly over an engine
//! whose only rows are a live snapshot (`crate::testing`: no server, no
//! table), with expectations written out by hand from those spans.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::testing::{TRACE, fixture};

/// Calls `router` with GET `uri`: status, content type, body.
async fn get(router: &axum::Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, content_type, body.to_vec())
}

async fn get_json(router: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let (status, _, body) = get(router, uri).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{uri}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_answers_in_its_model() {
    let f = fixture();
    let zipkin = super::zipkin::router(Arc::clone(&f.engine));
    let (status, services) = get_json(&zipkin, "/api/v2/services").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(services, json!(["frontend", "payments"]));
    let (_, names) = get_json(&zipkin, "/api/v2/spans?serviceName=payments").await;
    assert_eq!(names, json!(["charge"]));
    let (status, trace) = get_json(&zipkin, &format!("/api/v2/trace/{TRACE}")).await;
    assert_eq!(status, StatusCode::OK);
    let us = f.t0 / 1000;
    let mut spans = trace.as_array().unwrap().clone();
    spans.sort_by_key(|s| s["id"].as_str().unwrap().to_string());
    assert_eq!(
        spans,
        vec![
            json!({"traceId": TRACE, "id": "0000000000000001", "kind": "SERVER",
                   "name": "GET /checkout", "timestamp": us, "duration": 100_000,
                   "localEndpoint": {"serviceName": "frontend"},
                   // Zipkin has no resource: its attributes are tags.
                   "tags": {"http.route": "/checkout", "k8s.namespace.name": "shop",
                            "team": "frontend-team"}}),
            json!({"traceId": TRACE, "parentId": "0000000000000001", "id": "0000000000000002",
                   "kind": "CLIENT", "name": "charge", "timestamp": us + 10_000,
                   "duration": 40_000, "localEndpoint": {"serviceName": "frontend"},
                   // `peer.service` is Zipkin's remote service.
                   "remoteEndpoint": {"serviceName": "payments"},
                   "tags": {"server.port": "443", "k8s.namespace.name": "shop",
                            "team": "frontend-team"}}),
            json!({"traceId": TRACE, "parentId": "0000000000000002", "id": "0000000000000003",
                   "kind": "SERVER", "name": "charge", "timestamp": us + 15_000,
                   "duration": 30_000, "localEndpoint": {"serviceName": "payments"},
                   "tags": {"amount": "42", "error": "card declined",
                            "http.response.status_code": "402",
                            "k8s.namespace.name": "shop", "team": "payments-team",
                            "otel.status_code": "ERROR",
                            "otel.status_description": "card declined"}}),
        ]
    );
    let (status, _, body) = get(&zipkin, "/api/v2/trace/00000000000000000000000000000099").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "0000000000000099 not found"
    );
    let (status, content_type, body) = get(&zipkin, "/api/v2/trace/xyz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(!body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_answers_in_its_envelopes() {
    let f = fixture();
    let jaeger = super::jaeger::router(Arc::clone(&f.engine));
    let (status, services) = get_json(&jaeger, "/api/services").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(services["data"], json!(["frontend", "payments"]));
    assert_eq!(services["total"], 2);
    let (status, trace) = get_json(&jaeger, &format!("/api/traces/{TRACE}")).await;
    assert_eq!(status, StatusCode::OK);
    let trace = &trace["data"][0];
    assert_eq!(trace["traceID"], TRACE);
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 3);
    let failed = spans
        .iter()
        .find(|s| s["spanID"] == "0000000000000003")
        .unwrap();
    assert_eq!(failed["operationName"], "charge");
    assert_eq!(failed["startTime"], f.t0 / 1000 + 15_000);
    assert_eq!(failed["duration"], 30_000);
    assert_eq!(
        failed["references"],
        json!([{"refType": "CHILD_OF", "traceID": TRACE, "spanID": "0000000000000002"}])
    );
    let tags = failed["tags"].as_array().unwrap();
    for tag in [
        json!({"key": "amount", "type": "int64", "value": 42}),
        json!({"key": "span.kind", "type": "string", "value": "server"}),
        json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}),
        json!({"key": "error", "type": "bool", "value": true}),
        json!({"key": "otel.status_description", "type": "string", "value": "card declined"}),
    ] {
        assert!(tags.contains(&tag), "{tag} not in {tags:?}");
    }
    let process = &trace["processes"][failed["processID"].as_str().unwrap()];
    assert_eq!(process["serviceName"], "payments");
    // v1's envelope for an error, api_v3's for the same kind of error.
    let (status, body) = get_json(&jaeger, "/api/traces?service=frontend&limit=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["data"], Value::Null);
    assert_eq!(body["errors"][0]["code"], 400);
    assert!(
        body["errors"][0]["msg"].as_str().unwrap().contains("limit"),
        "{body}"
    );
    let (status, body) = get_json(&jaeger, "/api/v3/traces/nothex").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["httpCode"], 400);
    let (status, body) = get_json(&jaeger, "/api/v3/traces/00000000000000000000000000000099").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["httpCode"], 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_finds_by_traceql_and_refuses_with_text() {
    let f = fixture();
    let tempo = super::tempo::router(Arc::clone(&f.engine));
    let q = |traceql: &str| {
        format!(
            "/api/search?q={}",
            url::form_urlencoded::byte_serialize(traceql.as_bytes()).collect::<String>()
        )
    };
    let (status, found) = get_json(&tempo, &q("{ status = error && .amount > 40 }")).await;
    assert_eq!(status, StatusCode::OK);
    let traces = found["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{found}");
    let t = &traces[0];
    // Tempo writes search results' trace ids without leading zeros.
    assert_eq!(t["traceID"], "af7651916cd43dd8448eb211c80319c");
    assert_eq!(t["rootServiceName"], "frontend");
    assert_eq!(t["rootTraceName"], "GET /checkout");
    assert_eq!(t["durationMs"], 100);
    assert_eq!(t["startTimeUnixNano"], f.t0.to_string());
    assert_eq!(t["spanSets"][0]["matched"], 1);
    assert_eq!(t["spanSets"][0]["spans"][0]["spanID"], "0000000000000003");
    assert_eq!(
        t["serviceStats"],
        json!({"frontend": {"spanCount": 2}, "payments": {"spanCount": 1, "errorCount": 1}})
    );
    // A structural query: a failing SERVER span under a frontend span.
    let (_, found) = get_json(
        &tempo,
        &q("{ resource.service.name = \"frontend\" } >> { status = error }"),
    )
    .await;
    assert_eq!(found["traces"].as_array().unwrap().len(), 1, "{found}");
    let (_, found) = get_json(&tempo, &q("{ resource.service.name = \"payments\" } > { }")).await;
    assert_eq!(found["traces"], json!([]), "payments has no children");
    let (status, content_type, body) = get(&tempo, &q("{ .a = }")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("TraceQL at "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_api_gives_the_tree_and_its_errors_as_json() {
    let f = fixture();
    let v1 = super::v1::router(Arc::clone(&f.engine));
    let (status, trace) = get_json(&v1, &format!("/api/v1/traces/{TRACE}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(trace["spanCount"], 3, "{trace}");
    assert_eq!(trace["durationNs"], 100_000_000);
    let (status, body) = get_json(&v1, "/api/v1/search?service=frontend&limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    let (status, body) = get_json(&v1, "/api/v1/search?servce=frontend").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("servce"), "{body}");
}

/// A query whose values cannot do what it asks (a string compared as a
/// number, a division by zero) is the client's error, named, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_the_values_refuse_is_a_bad_request_that_says_why() {
    let f = fixture();
    let v1 = super::v1::router(Arc::clone(&f.engine));
    for (sql, says) in [
        (
            "SELECT count(*) FROM spans WHERE kind = 2",
            "Cannot cast string",
        ),
        (
            "SELECT duration_ns / (duration_ns - duration_ns) FROM spans",
            "Divide by zero",
        ),
    ] {
        let response = v1
            .clone()
            .oneshot(
                Request::post("/api/v1/sql")
                    .header("content-type", "application/json")
                    .body(Body::from(json!({ "sql": sql }).to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(says), "{sql}: {message}");
    }
}
