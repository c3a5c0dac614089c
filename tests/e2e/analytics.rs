//! Search, trace assembly, RED metrics, dependencies and the cross-trace
//! breakdown over a generated workload ingested through OTLP, checked
//! against straightforward SQL over the same spans; and bad parameters.

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::server::{TestServer, python_with};
use crate::spans::{int_kv, kv, now_nanos};

const MS: u64 = 1_000_000;

#[allow(clippy::too_many_arguments)]
pub(crate) fn span(
    trace: u128,
    id: u64,
    parent: u64,
    name: &str,
    kind: i32,
    start: u64,
    duration: u64,
    error: bool,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: crate::spans::parent_id(parent),
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        attributes,
        status: Some(Status {
            code: if error { 2 } else { 0 },
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// One request with spans of several services (`(service, environment)`).
pub(crate) fn export(spans: Vec<((&str, &str), Span)>) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<(&str, &str), Vec<Span>> = BTreeMap::new();
    for (service, s) in spans {
        by_service.entry(service).or_default().push(s);
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|((service, env), spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", service),
                        kv("deployment.environment", env),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

pub(crate) const SERVER: i32 = 2;
pub(crate) const CLIENT: i32 = 3;
pub(crate) const PRODUCER: i32 = 4;
pub(crate) const CONSUMER: i32 = 5;

/// A seeded workload: frontend -> cart -> (postgres, uninstrumented), some
/// traces publishing to a worker, errors, spread over the last 40 minutes.
pub(crate) fn workload(traces: u64) -> Vec<ExportTraceServiceRequest> {
    let mut rng = StdRng::seed_from_u64(42);
    let now = now_nanos();
    let mut out = Vec::new();
    for t in 0..traces {
        let trace = 0xabc0_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(t);
        let id = |n: u64| t * 16 + n + 1;
        let env = if t % 3 == 0 { "staging" } else { "prod" };
        let spacing = 40 * 60 * 1000 / traces;
        let start =
            now - 41 * 60 * 1_000_000_000 + t * spacing * MS + rng.random_range(0..1000) * MS;
        let checkout = t % 2 == 0;
        let error = rng.random_range(0..10) == 0;
        let db = rng.random_range(2..40) * MS;
        let cart = db + rng.random_range(1..20) * MS;
        let call = cart + 2 * MS;
        // The publish starts 1 ms after the call ends: the critical path
        // (Jaeger's definition) skips a child that ends exactly when the
        // next one starts.
        let root = call + rng.random_range(4..30) * MS;
        let route = if checkout { "/checkout" } else { "/cart" };
        let mut spans = vec![
            (
                ("frontend", env),
                span(
                    trace,
                    id(0),
                    0,
                    if checkout {
                        "GET /checkout"
                    } else {
                        "GET /cart"
                    },
                    SERVER,
                    start,
                    root,
                    error,
                    vec![
                        kv("http.route", route),
                        int_kv("http.response.status_code", if error { 503 } else { 200 }),
                    ],
                ),
            ),
            (
                ("frontend", env),
                span(
                    trace,
                    id(1),
                    id(0),
                    "call cart",
                    CLIENT,
                    start + MS,
                    call,
                    error,
                    vec![kv("peer.service", "cart")],
                ),
            ),
            (
                ("cart", env),
                span(
                    trace,
                    id(2),
                    id(1),
                    "GetCart",
                    SERVER,
                    start + 2 * MS,
                    cart,
                    error,
                    vec![],
                ),
            ),
            (
                ("cart", env),
                span(
                    trace,
                    id(3),
                    id(2),
                    "SELECT carts",
                    CLIENT,
                    start + 2 * MS + (cart - db) / 2,
                    db,
                    false,
                    vec![
                        kv("peer.service", "postgres"),
                        kv("db.system", "postgresql"),
                    ],
                ),
            ),
        ];
        if checkout {
            let publish = start + 2 * MS + call;
            spans.push((
                ("frontend", env),
                span(
                    trace,
                    id(4),
                    id(0),
                    "publish order",
                    PRODUCER,
                    publish,
                    MS,
                    false,
                    vec![],
                ),
            ));
            spans.push((
                ("worker", env),
                span(
                    trace,
                    id(5),
                    id(4),
                    "process order",
                    CONSUMER,
                    publish + 5 * MS,
                    rng.random_range(5..50) * MS,
                    t % 7 == 0,
                    vec![],
                ),
            ));
        }
        out.push(export(spans));
    }
    out
}

fn ids(rows: &[Value], key: &str) -> BTreeSet<String> {
    rows.iter()
        .map(|r| r[key].as_str().unwrap().to_string())
        .collect()
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = p * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

/// Walks every page of a search; returns the traces in order.
async fn search_all(server: &TestServer, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/search?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = server.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let page = body["traces"].as_array().unwrap();
        assert!(page.len() <= limit);
        out.extend(page.iter().cloned());
        match body.get("nextCursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// A span as the test sent it: the oracle for RED and dependencies, taken
/// from the generated requests rather than from our own SQL.
struct SentSpan {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    service: String,
    name: String,
    kind: i32,
    duration_ns: u64,
    error: bool,
    peer_service: Option<String>,
    attributes: Vec<KeyValue>,
    resource: Vec<KeyValue>,
}

/// A string attribute's value.
fn text_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

fn sent_spans(requests: &[ExportTraceServiceRequest]) -> Vec<SentSpan> {
    let text = text_attr;
    let mut out = Vec::new();
    for r in requests {
        for rs in &r.resource_spans {
            let attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let service = text(attrs, "service.name").unwrap();
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                out.push(SentSpan {
                    trace_id: span.trace_id.clone(),
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: span.kind,
                    duration_ns: span.end_time_unix_nano - span.start_time_unix_nano,
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                    peer_service: text(&span.attributes, "peer.service"),
                    attributes: span.attributes.clone(),
                    resource: attrs.to_vec(),
                });
            }
        }
    }
    out
}

async fn sql_set(server: &TestServer, where_: &str) -> BTreeSet<String> {
    let rows = server
        .sql(&format!(
            "SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans WHERE {where_}"
        ))
        .await;
    ids(&rows, "id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_match_sql_over_a_generated_workload() {
    let dir = tempfile::tempdir().unwrap();
    // Flush often so that both the Delta table and the buffer are read.
    let server = TestServer::start(dir.path(), &["--flush-max-age", "300ms"]).await;
    let requests = workload(150);
    for (i, r) in requests.iter().enumerate() {
        server.export(r).await;
        if i == 100 {
            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        }
    }

    // Services and operations.
    let (_, body) = server.get("/api/v1/services").await;
    let names: Vec<_> = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cart", "frontend", "worker"]);
    let (_, body) = server.get("/api/v1/services/cart/operations").await;
    assert_eq!(
        body["operations"],
        serde_json::json!([
            {"name": "GetCart", "spanKind": "SERVER", "spanCount": 150},
            {"name": "SELECT carts", "spanKind": "CLIENT", "spanCount": 150},
        ])
    );
    let (_, body) = server
        .get("/api/v1/services/frontend/operations?kind=server")
        .await;
    assert_eq!(body["operations"].as_array().unwrap().len(), 2);

    // Search by service and operation, paged 7 at a time: every matching
    // trace once, newest first.
    let found = search_all(&server, "service=frontend&operation=GET%20/checkout", 7).await;
    let expected = sql_set(
        &server,
        "service_name = 'frontend' AND name = 'GET /checkout'",
    )
    .await;
    assert_eq!(expected.len(), 75);
    assert_eq!(ids(&found, "traceId"), expected);
    assert_eq!(found.len(), expected.len(), "no trace twice");
    let starts: Vec<u64> = found
        .iter()
        .map(|t| t["startTimeUnixNano"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let first = &found[0];
    assert_eq!(first["rootServiceName"], "frontend");
    assert_eq!(first["rootName"], "GET /checkout");
    assert_eq!(first["spanCount"], 6);
    let services: Vec<_> = first["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["cart", "frontend", "worker"]);
    // Span and error counts agree with SQL for every trace found.
    let counts = server
        .sql(
            "SELECT encode(trace_id, 'hex') AS id, count(*) AS spans, \
             sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors, \
             max(start_time_unix_nano + duration_ns) - min(start_time_unix_nano) AS duration \
             FROM spans GROUP BY trace_id",
        )
        .await;
    let counts: BTreeMap<String, &Value> = counts
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    for t in &found {
        let c = counts[t["traceId"].as_str().unwrap()];
        assert_eq!(t["spanCount"], c["spans"]);
        assert_eq!(t["errorCount"], c["errors"]);
        assert_eq!(t["durationNs"], c["duration"]);
    }

    // Attribute conditions, with no service chosen. The expected traces are
    // those with a span meeting the condition among the spans as sent.
    let sent = sent_spans(&requests);
    let int = |s: &SentSpan, key: &str| {
        s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                Any::IntValue(i) => Some(*i),
                _ => None,
            }
        })
    };
    type Matches<'a> = Box<dyn Fn(&SentSpan) -> bool + 'a>;
    let cases: Vec<(&str, Matches)> = vec![
        (
            "attr=http.response.status_code%3E%3D500",
            Box::new(|s| int(s, "http.response.status_code").is_some_and(|c| c >= 500)),
        ),
        (
            "attr=resource.deployment.environment%3Dstaging&status=error",
            Box::new(|s| {
                text_attr(&s.resource, "deployment.environment").as_deref() == Some("staging")
                    && s.error
            }),
        ),
        (
            "attr=span.http.route%3D~%5E/ch.*t$",
            Box::new(|s| {
                text_attr(&s.attributes, "http.route")
                    .is_some_and(|r| r.starts_with("/ch") && r.ends_with('t'))
            }),
        ),
        (
            "attr=peer.service!%3Dcart&kind=client",
            Box::new(|s| s.kind == 3 && s.peer_service.as_deref().is_some_and(|p| p != "cart")),
        ),
        (
            "service=cart&minDuration=30ms&maxDuration=45ms",
            Box::new(|s| s.service == "cart" && (30_000_000..=45_000_000).contains(&s.duration_ns)),
        ),
        (
            "status=ok&service=worker",
            Box::new(|s| s.service == "worker" && !s.error),
        ),
    ];
    for (query, matches) in cases {
        let found = search_all(&server, query, 1000).await;
        let expected: BTreeSet<String> = sent
            .iter()
            .filter(|s| matches(s))
            .map(|s| hex::encode(&s.trace_id))
            .collect();
        assert!(!expected.is_empty(), "{query}: the workload has matches");
        assert_eq!(ids(&found, "traceId"), expected, "{query}");
    }

    // Dependencies against a self-join and peer.service in SQL.
    let (status, body) = server.get("/api/v1/dependencies").await;
    assert_eq!(status, 200, "{body}");
    let edges = body["edges"].as_array().unwrap();
    // The expected edges come from the spans as sent, not from our SQL.
    let by_id: std::collections::HashMap<(&[u8], &[u8]), &SentSpan> = sent
        .iter()
        .map(|s| ((s.trace_id.as_slice(), s.span_id.as_slice()), s))
        .collect();
    let mut expected: BTreeMap<(String, String), (Vec<f64>, i64)> = BTreeMap::new();
    for c in &sent {
        let edge = match by_id.get(&(c.trace_id.as_slice(), c.parent_span_id.as_slice())) {
            Some(p) if p.service != c.service => Some((p.service.clone(), c.service.clone())),
            _ => None,
        };
        let uninstrumented = (c.peer_service.as_deref() == Some("postgres"))
            .then(|| (c.service.clone(), "postgres".to_string()));
        for key in edge.into_iter().chain(uninstrumented) {
            let e = expected.entry(key).or_default();
            e.0.push(c.duration_ns as f64);
            e.1 += i64::from(c.error);
        }
    }
    assert_eq!(edges.len(), expected.len(), "{edges:?}");
    for edge in edges {
        let key = (
            edge["parent"].as_str().unwrap().to_string(),
            edge["child"].as_str().unwrap().to_string(),
        );
        let (durations, errors) = expected[&key].clone();
        assert_eq!(edge["callCount"], durations.len(), "{key:?}");
        assert_eq!(edge["errorCount"], errors, "{key:?}");
        assert!(close(
            edge["p50Ns"].as_f64().unwrap(),
            percentile(durations.clone(), 0.5)
        ));
        assert!(close(
            edge["p99Ns"].as_f64().unwrap(),
            percentile(durations, 0.99)
        ));
        assert_eq!(edge["uninstrumented"], key.1 == "postgres", "{key:?}");
    }

    // Jaeger's /api/dependencies (what Jaeger UI's system architecture view
    // and Grafana's node graph read): the same edges and call counts.
    let (status, jaeger) = server
        .get("/jaeger/api/dependencies?lookback=86400000")
        .await;
    assert_eq!(status, 200, "{jaeger}");
    let links: BTreeMap<(String, String), u64> = jaeger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                (
                    l["parent"].as_str().unwrap().to_string(),
                    l["child"].as_str().unwrap().to_string(),
                ),
                l["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<(String, String), u64> = expected
        .iter()
        .map(|(k, (d, _))| (k.clone(), d.len() as u64))
        .collect();
    assert_eq!(links, want);

    // RED metrics for the server and consumer spans, per service and
    // operation, against the raw rows.
    let (status, red) = server.get("/api/v1/metrics/red?step=5m").await;
    assert_eq!(status, 200, "{red}");
    // Server (2) and consumer (5) spans as sent.
    let rows: Vec<&SentSpan> = sent.iter().filter(|s| s.kind == 2 || s.kind == 5).collect();
    for svc in red["services"].as_array().unwrap() {
        let name = svc["name"].as_str().unwrap();
        let mine: Vec<_> = rows.iter().filter(|r| r.service == name).collect();
        assert_eq!(svc["requests"], mine.len(), "{name}");
        let errors = mine.iter().filter(|r| r.error).count();
        assert_eq!(svc["errors"], errors, "{name}");
        let durations: Vec<f64> = mine.iter().map(|r| r.duration_ns as f64).collect();
        assert!(close(
            svc["p99Ns"].as_f64().unwrap(),
            percentile(durations.clone(), 0.99)
        ));
        assert!(close(
            svc["p95Ns"].as_f64().unwrap(),
            percentile(durations, 0.95)
        ));
        let in_buckets: i64 = svc["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_i64().unwrap())
            .sum();
        assert_eq!(in_buckets as usize, mine.len());
        for op in svc["operations"].as_array().unwrap() {
            let op_name = op["name"].as_str().unwrap();
            let n = mine.iter().filter(|r| r.name == op_name).count();
            assert_eq!(op["requests"], n, "{name} {op_name}");
        }
    }
    let red_names: Vec<_> = red["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(red_names, ["cart", "frontend", "worker"]);

    // Cross-trace breakdown of the checkout requests: every request
    // analysed, each request's shares adding up to 1, the async worker never
    // on the critical path.
    let (status, b) = server
        .get("/api/v1/breakdown?service=frontend&operation=GET%20/checkout")
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["tracesAnalysed"], 75);
    assert_eq!(b["requestCount"], 75);
    assert_eq!(b["truncated"], false);
    let parts = b["parts"].as_array().unwrap();
    let total: f64 = parts
        .iter()
        .map(|p| p["share"]["avg"].as_f64().unwrap())
        .sum();
    assert!(close(total, 1.0), "shares add up to {total}");
    assert!(parts.iter().all(|p| p["service"] != "worker"), "{parts:?}");
    let db = parts
        .iter()
        .find(|p| p["operation"] == "SELECT carts")
        .unwrap();
    // The db call is on every request's path (it is the innermost call).
    assert_eq!(db["requestCount"], 75);
    let db_rows = server
        .sql(
            "SELECT c.duration_ns AS d FROM spans c JOIN spans r ON c.trace_id = r.trace_id \
             WHERE c.name = 'SELECT carts' AND r.name = 'GET /checkout'",
        )
        .await;
    let db_durations: Vec<f64> = db_rows.iter().map(|r| r["d"].as_f64().unwrap()).collect();
    assert!(close(
        db["criticalPathNs"]["p50"].as_f64().unwrap(),
        percentile(db_durations, 0.5)
    ));
    let (_, limited) = server
        .get("/api/v1/breakdown?service=frontend&operation=GET%20/checkout&limit=10")
        .await;
    assert_eq!(
        (
            limited["tracesAnalysed"].as_u64(),
            limited["truncated"].as_bool()
        ),
        (Some(10), Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_view_reports_skew_orphans_and_the_breakdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let t0 = now_nanos() - 60_000 * MS;
    let trace = 0x5eed_0000_0000_0000_0000_0000_0000_0001u128;
    // frontend 0-100 ms calls backend (10-60 ms); the backend's clock is
    // 200 ms behind, so its 30 ms server span appears to start at -185 ms.
    // A span whose parent never arrived hangs off the trace.
    let request = export(vec![
        (
            ("frontend", "prod"),
            span(trace, 1, 0, "GET /", SERVER, t0, 100 * MS, false, vec![]),
        ),
        (
            ("frontend", "prod"),
            span(
                trace,
                2,
                1,
                "call",
                CLIENT,
                t0 + 10 * MS,
                50 * MS,
                false,
                vec![],
            ),
        ),
        (
            ("frontend", "prod"),
            span(
                trace,
                5,
                1,
                "render",
                1,
                t0 + 70 * MS,
                20 * MS,
                false,
                vec![],
            ),
        ),
        (
            ("backend", "prod"),
            span(
                trace,
                3,
                2,
                "handle",
                SERVER,
                t0 - 185 * MS,
                30 * MS,
                true,
                vec![],
            ),
        ),
        (
            ("backend", "prod"),
            span(trace, 4, 99, "lost", 1, t0 + 20 * MS, 5 * MS, false, vec![]),
        ),
    ]);
    server.export(&request).await;
    let (status, body) = server.get(&format!("/api/v1/traces/{trace:032x}")).await;
    assert_eq!(status, 200, "{body}");
    // Shift: centre 30 ms in the 50 ms client: 10 + 10 = 20 ms after t0.
    assert_eq!(
        body["clockSkewAdjustments"],
        serde_json::json!([{"spanId": "0000000000000003", "parentSpanId": "0000000000000002", "shiftNs": 205 * MS}])
    );
    let order: Vec<_> = body["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["spanId"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('0')
                    .to_string(),
                s["depth"].as_u64().unwrap(),
                s["orphan"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, bool)> = vec![
        ("1".into(), 0, false),
        ("2".into(), 1, false),
        ("3".into(), 2, false),
        ("5".into(), 1, false),
        ("4".into(), 0, true),
    ];
    assert_eq!(order, expected);
    assert_eq!(body["durationNs"], 100 * MS, "adjusted times");
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    // Critical path: 1 [0,10] 2 [10,20] 3 [20,50] 2 [50,60] 1 [60,70]
    // 5 [70,90] 1 [90,100] → frontend 70 ms, backend 30 ms.
    let services = &body["breakdown"]["services"];
    assert_eq!(
        services,
        &serde_json::json!([
            {"service": "frontend", "totalNs": 170 * MS, "selfTimeNs": 70 * MS, "criticalPathNs": 70 * MS, "spanCount": 3, "errorCount": 0},
            {"service": "backend", "totalNs": 35 * MS, "selfTimeNs": 35 * MS, "criticalPathNs": 30 * MS, "spanCount": 2, "errorCount": 1},
        ])
    );
    let path: Vec<_> = body["criticalPath"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let start: u64 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
            let end: u64 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
            (
                s["spanId"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('0')
                    .to_string(),
                (start - t0) / MS,
                (end - t0) / MS,
            )
        })
        .collect();
    let expected_path: Vec<(String, u64, u64)> = [
        ("1", 0, 10),
        ("2", 10, 20),
        ("3", 20, 50),
        ("2", 50, 60),
        ("1", 60, 70),
        ("5", 70, 90),
        ("1", 90, 100),
    ]
    .iter()
    .map(|(s, a, b)| (s.to_string(), *a, *b))
    .collect();
    assert_eq!(path, expected_path);
    let (status, only) = server
        .get(&format!("/api/v1/traces/{trace:032x}/breakdown"))
        .await;
    assert_eq!(status, 200);
    assert!(only.get("spans").is_none());
    assert_eq!(only["breakdown"], body["breakdown"]);

    // The orphan's trace is found with its real root.
    let (_, page) = server
        .get("/api/v1/search?service=backend&operation=lost")
        .await;
    assert_eq!(page["traces"][0]["rootName"], "GET /");
    assert_eq!(page["traces"][0]["rootMissing"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_400_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let trace = 0x1u128;
    server
        .export(&export(vec![(
            ("shop", "prod"),
            span(
                trace,
                1,
                0,
                "GET",
                SERVER,
                now_nanos() - 1000 * MS,
                MS,
                false,
                vec![],
            ),
        )]))
        .await;
    for (path, needle) in [
        ("/api/v1/search?service=nope", "unknown service"),
        ("/api/v1/services/nope/operations", "unknown service"),
        ("/api/v1/metrics/red?service=nope", "unknown service"),
        ("/api/v1/breakdown?service=nope", "unknown service"),
        ("/api/v1/breakdown", "service is required"),
        ("/api/v1/search?minDuration=10", "not a duration"),
        (
            "/api/v1/search?minDuration=2s&maxDuration=1s",
            "greater than",
        ),
        ("/api/v1/search?start=yesterday", "not a time"),
        ("/api/v1/search?start=now&end=now-1h", "time range is empty"),
        (
            "/api/v1/search?attr=http.route%3D~(",
            "invalid regular expression",
        ),
        ("/api/v1/search?attr=status%3Efast", "needs a number"),
        ("/api/v1/search?attr=novalue", "no operator"),
        ("/api/v1/search?limit=0", "limit"),
        ("/api/v1/search?cursor=zzz", "cursor"),
        ("/api/v1/search?status=broken", "status must be"),
        ("/api/v1/search?kind=sever", "unknown span kind"),
        ("/api/v1/search?servce=shop", "unknown parameter servce"),
        ("/api/v1/metrics/red?step=1ns", "step"),
        ("/api/v1/metrics/red?lookback=24h&step=1s", "too small"),
        ("/api/v1/dependencies?end=soon", "not a time"),
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{path}: {message}");
    }
    // The server still answers, and the span is still there.
    let (status, body) = server.get("/api/v1/search?service=shop").await;
    assert_eq!(status, 200);
    assert_eq!(body["traces"].as_array().unwrap().len(), 1);
    // A known service with nothing matching is an empty page, not an
    // unknown service.
    let (status, body) = server
        .get("/api/v1/search?service=shop&minDuration=1h")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["traces"], serde_json::json!([]), "{body}");
}

/// Runs `tests/python/flight_sql_client.py` with the ADBC Flight SQL driver.
/// Outside CI the test is skipped when the driver is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_answers_an_adbc_client() {
    let Some(python) = python_with(
        "adbc_driver_flightsql, pyarrow",
        "adbc-driver-flightsql pyarrow",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--query-max-rows", "1000", "--query-timeout", "3s"],
    )
    .await;
    for r in workload(20) {
        server.export(&r).await;
    }
    let script = crate::checkout("tests/python/flight_sql_client.py");
    let script = script.to_str().unwrap();
    let uri = format!("grpc://{}", server.flight_sql);
    let out =
        crate::procs::json_output(tokio::process::Command::new(&python).args([script, &uri])).await;
    assert_eq!(
        out["schema"],
        serde_json::json!(["service_name:string", "spans:int64", "total_ns:int64"])
    );
    // The same numbers as the HTTP SQL API.
    let http = server
        .sql("SELECT service_name, count(*) AS spans, sum(duration_ns) AS total_ns FROM spans GROUP BY service_name ORDER BY service_name")
        .await;
    assert_eq!(out["rows"], Value::Array(http));
    let errors = server
        .sql("SELECT count(*) AS n FROM spans WHERE status_code = 'ERROR'")
        .await;
    assert_eq!(out["errors"], errors[0]["n"]);
    // The prepared-statement path stops a runaway at the limit, too.
    let runaway = &out["runaway"];
    let error = runaway["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("DeadlineExceeded") && error.contains("time limit of 3s"),
        "{runaway}"
    );
    assert!(runaway["seconds"].as_f64().unwrap() < 8.0, "{runaway}");
    let refused = out["refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains("INVALID_ARGUMENT") && refused.contains("DDL"),
        "{refused}"
    );
    assert_eq!(
        out["tables"],
        serde_json::json!([["tracelake", "public", "spans"]])
    );
    assert_eq!(
        out["table_schema"],
        serde_json::json!(["trace_id", "trace_key", "span_id"])
    );
}

/// Latency of the analytics endpoints over a larger workload: a measurement,
/// not a check (`cargo test --test e2e analytics_latency -- --ignored
/// --nocapture`); figures go to BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn analytics_latency() {
    let traces: u64 = std::env::var("TRACELAKE_ANALYTICS_TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-max-age", "1s"]).await;
    let requests = workload(traces);
    let mut batch = ExportTraceServiceRequest::default();
    for (i, r) in requests.into_iter().enumerate() {
        batch.resource_spans.extend(r.resource_spans);
        if i % 200 == 199 {
            server.export(&std::mem::take(&mut batch)).await;
        }
    }
    server.export(&batch).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let spans = server.sql("SELECT count(*) AS n FROM spans").await[0]["n"].clone();
    println!("{traces} traces, {spans} spans (flushed to Parquet)");
    for path in [
        "/api/v1/services",
        "/api/v1/services/cart/operations",
        "/api/v1/search?service=frontend&operation=GET%20/checkout&minDuration=30ms",
        "/api/v1/search?attr=http.response.status_code%3E%3D500",
        "/api/v1/breakdown?service=frontend&operation=GET%20/checkout",
        "/api/v1/breakdown?service=frontend",
        "/api/v1/breakdown?service=frontend&limit=10000",
        "/api/v1/metrics/red",
        "/api/v1/dependencies",
    ] {
        let mut times = Vec::new();
        let mut detail = String::new();
        for _ in 0..7 {
            let t = std::time::Instant::now();
            let (status, body) = server.get(path).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200, "{path}: {body}");
            if let Some(n) = body.get("tracesAnalysed") {
                detail = format!(" ({n} traces analysed)");
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{path}: median {:.1} ms (min {:.1}, max {:.1}){detail}",
            times[3], times[0], times[6]
        );
    }
}
