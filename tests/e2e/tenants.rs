//! Tenants: `X-Scope-OrgID` (HTTP header, gRPC metadata) or the token's
//! tenant picks a WAL and a table of its own; every read API of a tenant
//! sees only its spans, also for the same trace ids; SQL cannot reach
//! another tenant's files; tenants on disk come back after a crash.

use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use serde_json::Value;

use crate::server::TestServer;
use crate::spans::{request, span};

/// The one trace id every tenant sends.
const TRACE: u128 = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef;
const TRACE_HEX: &str = "0123456789abcdef0123456789abcdef";

/// A request with `tenant` in `X-Scope-OrgID` (none: no header) and
/// `token` as bearer (none: no token).
fn with(
    request: reqwest::RequestBuilder,
    tenant: Option<&str>,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = match tenant {
        Some(t) => request.header("x-scope-orgid", t),
        None => request,
    };
    match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    }
}

async fn otlp_http(
    server: &TestServer,
    tenant: Option<&str>,
    token: Option<&str>,
    service: &str,
) -> u16 {
    with(
        reqwest::Client::new()
            .post(server.otlp_url())
            .header("content-type", "application/x-protobuf")
            .body(request(service, vec![span(TRACE, 1), span(TRACE, 2)]).encode_to_vec()),
        tenant,
        token,
    )
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

async fn otlp_grpc(server: &TestServer, tenant: &str, service: &str) -> Result<(), tonic::Status> {
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let mut r = tonic::Request::new(request(service, vec![span(TRACE, 1), span(TRACE, 2)]));
    r.metadata_mut()
        .insert("x-scope-orgid", tenant.parse().unwrap());
    client.export(r).await.map(|_| ())
}

/// The body of GET `url` as `tenant`, and its status.
async fn get(url: &str, tenant: Option<&str>, token: Option<&str>) -> (u16, String) {
    let r = with(reqwest::Client::new().get(url), tenant, token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn sql(server: &TestServer, tenant: Option<&str>, sql: &str) -> (u16, Value) {
    let r = with(
        reqwest::Client::new()
            .post(server.url("/api/v1/sql"))
            .json(&serde_json::json!({ "sql": sql })),
        tenant,
        None,
    )
    .send()
    .await
    .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The service names a Flight SQL statement returns as `tenant`.
async fn flight_services(server: &TestServer, tenant: &str) -> Vec<String> {
    let (_, batches) = server
        .flight_sql(
            "SELECT DISTINCT service_name FROM spans ORDER BY 1",
            Some(tenant),
        )
        .await;
    batches
        .iter()
        .flat_map(|b| {
            let column = arrow_array::cast::AsArray::as_string::<i32>(b.column(0));
            column
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every read API answers `tenant` (None: no header) with its own
/// service and none of the others'.
async fn reads_only_its_own(server: &TestServer, tenant: Option<&str>, own: &str, others: &[&str]) {
    let urls = [
        server.url(&format!("/api/v1/traces/{TRACE_HEX}")),
        server.url("/api/v1/services"),
        server.url(&format!("/jaeger/api/traces/{TRACE_HEX}")),
        server.url("/jaeger/api/services"),
        server.url(&format!("/jaeger/api/v3/traces/{TRACE_HEX}")),
        server.url(&format!("/zipkin/api/v2/trace/{TRACE_HEX}")),
        format!("http://{}/api/v2/trace/{TRACE_HEX}", server.zipkin),
        format!("http://{}/api/v2/services", server.zipkin),
        server.url(&format!("/tempo/api/traces/{TRACE_HEX}")),
        server.url(&format!("/tempo/api/v2/traces/{TRACE_HEX}")),
        server.url("/tempo/api/search?limit=20"),
    ];
    for url in urls {
        let (status, body) = get(&url, tenant, None).await;
        assert_eq!(status, 200, "{tenant:?} {url}: {body}");
        assert!(body.contains(own), "{tenant:?} {url} lacks {own}: {body}");
        for other in others {
            assert!(
                !body.contains(other),
                "{tenant:?} {url} shows {other}: {body}"
            );
        }
    }
    let (status, body) = sql(
        server,
        tenant,
        "SELECT DISTINCT service_name AS s FROM spans",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        serde_json::json!([{ "s": own }]),
        "{tenant:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_reads_only_its_own_spans_through_every_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::start(&data, &[]).await;

    // The same trace id from three tenants, over three receivers.
    assert_eq!(
        otlp_http(&server, Some("shop"), None, "shop-svc").await,
        200
    );
    otlp_grpc(&server, "web", "web-svc").await.unwrap();
    assert_eq!(otlp_http(&server, None, None, "default-svc").await, 200);
    let zipkin = serde_json::json!([{
        "traceId": TRACE_HEX, "id": "0000000000000003", "name": "get",
        "timestamp": crate::spans::now_nanos() / 1000, "duration": 10,
        "localEndpoint": {"serviceName": "web-svc"},
    }]);
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v2/spans", server.zipkin))
        .header("x-scope-orgid", "web")
        .json(&zipkin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    reads_only_its_own(
        &server,
        Some("shop"),
        "shop-svc",
        &["web-svc", "default-svc"],
    )
    .await;
    reads_only_its_own(
        &server,
        Some("web"),
        "web-svc",
        &["shop-svc", "default-svc"],
    )
    .await;
    reads_only_its_own(&server, None, "default-svc", &["shop-svc", "web-svc"]).await;
    reads_only_its_own(
        &server,
        Some("default"),
        "default-svc",
        &["shop-svc", "web-svc"],
    )
    .await;
    assert_eq!(flight_services(&server, "shop").await, ["shop-svc"]);
    assert_eq!(flight_services(&server, "web").await, ["web-svc"]);
    let (_, web) = sql(&server, Some("web"), "SELECT count(*) AS n FROM spans").await;
    assert_eq!(web["rows"][0]["n"], 3, "two OTLP spans and one Zipkin span");

    // SQL knows one table, and no path reaches another tenant's files.
    let (status, body) = sql(
        &server,
        Some("shop"),
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables \
         WHERE table_schema <> 'information_schema'",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], serde_json::json!([{ "t": "public.spans" }]));
    let web_table = data.join("tenants/web/spans");
    for query in [
        format!("SELECT count(*) FROM '{}'", web_table.display()),
        format!("SELECT count(*) FROM delta_scan('{}')", web_table.display()),
        "SELECT count(*) FROM tracelake.web.spans".to_string(),
    ] {
        let (status, body) = sql(&server, Some("shop"), &query).await;
        assert_eq!(status, 400, "{query}: {body}");
    }

    // Bad tenant ids are refused with the reason, over HTTP and gRPC.
    for bad in ["..", "a/b", &"x".repeat(151)] {
        let status = otlp_http(&server, Some(bad), None, "bad").await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, body) = get(&server.url("/api/v1/services"), Some("a|b"), None).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid X-Scope-OrgID"), "{body}");
    let error = otlp_grpc(&server, "..", "bad").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");

    // The buffer's level is each tenant's own.
    let (_, metrics) = get(&server.url("/metrics"), None, None).await;
    for (tenant, rows) in [("shop", 2.0), ("web", 3.0), ("default", 2.0)] {
        let name = format!("tracelake_buffer_rows{{tenant=\"{tenant}\"}}");
        assert_eq!(
            crate::server::metric(&metrics, &name),
            rows,
            "{name}:\n{metrics}"
        );
    }

    // Killed with every span only in the WALs: each tenant's come back
    // into its own table, and only there.
    server.kill9();
    let server = TestServer::start(&data, &[]).await;
    reads_only_its_own(
        &server,
        Some("shop"),
        "shop-svc",
        &["web-svc", "default-svc"],
    )
    .await;
    reads_only_its_own(
        &server,
        Some("web"),
        "web-svc",
        &["shop-svc", "default-svc"],
    )
    .await;
    reads_only_its_own(&server, None, "default-svc", &["shop-svc", "web-svc"]).await;
    assert!(data.join("wal/shop").is_dir() && data.join("wal/web").is_dir());
}

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        r#"
[[tokens]]
name = "shop-exporter"
token = "shop-token"
tenant = "shop"
scopes = ["ingest", "query"]

[[tokens]]
name = "platform"
token = "platform-token"
tenants = ["web", "ops"]
scopes = ["ingest", "query"]
"#,
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_token_decides_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--auth-tokens-file", tokens.to_str().unwrap()],
    )
    .await;
    // The token's tenant, whatever else; a header may only pick among
    // the token's tenants.
    assert_eq!(
        otlp_http(&server, None, Some("shop-token"), "shop-svc").await,
        200
    );
    assert_eq!(
        otlp_http(&server, Some("web"), Some("shop-token"), "x").await,
        403
    );
    assert_eq!(
        otlp_http(&server, None, Some("platform-token"), "web-svc").await,
        200
    );
    assert_eq!(
        otlp_http(&server, Some("ops"), Some("platform-token"), "ops-svc").await,
        200
    );
    let services = server.url("/api/v1/services");
    for (tenant, token, own) in [
        (None, "shop-token", "shop-svc"),
        (Some("shop"), "shop-token", "shop-svc"),
        (None, "platform-token", "web-svc"),
        (Some("web"), "platform-token", "web-svc"),
        (Some("ops"), "platform-token", "ops-svc"),
    ] {
        let (status, body) = get(&services, tenant, Some(token)).await;
        assert_eq!(status, 200, "{body}");
        let names: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            names.to_string().matches("-svc").count(),
            1,
            "{tenant:?} {token}: {body}"
        );
        assert!(body.contains(own), "{tenant:?} {token}: {body}");
    }
    let (status, body) = get(&services, Some("shop"), Some("platform-token")).await;
    assert_eq!(status, 403);
    assert!(body.contains("may not act for tenant \"shop\""), "{body}");
}

/// `n` spans of one trace starting `ago_s` seconds ago.
fn spans_ago(trace: u128, n: u64, ago_s: u64) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    (1..=n)
        .map(|i| {
            let mut s = span(trace, i);
            s.start_time_unix_nano -= ago_s * 1_000_000_000;
            s.end_time_unix_nano -= ago_s * 1_000_000_000;
            s
        })
        .collect()
}

/// POSTs `spans` as `tenant` over OTLP/HTTP: the status and `Retry-After`.
async fn send_as(
    server: &TestServer,
    tenant: &str,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> (u16, Option<String>, String) {
    let r = reqwest::Client::new()
        .post(server.otlp_url())
        .header("x-scope-orgid", tenant)
        .header("content-type", "application/x-protobuf")
        .body(request(&format!("{tenant}-svc"), spans).encode_to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, r.text().await.unwrap())
}

const LIMITS: &str = r#"
[defaults]
max_search_window = "12h"

[tenants.small]
ingestion_rate_bytes = 400000
max_spans_per_request = 50
max_search_window = "1h"
max_concurrent_queries = 1
retention = "1h"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_limits_hold_for_one_tenant_and_not_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--tenant-limits-file",
            limits.to_str().unwrap(),
            "--retention",
            "0s",
            "--retention-check-interval",
            "300ms",
            "--flush-max-age",
            "200ms",
            "--query-timeout",
            "3s",
        ],
    )
    .await;

    // Spans per request: 60 is over small's 50, not big's (no limit).
    // It can never pass: 413, no Retry-After, so exporters do not retry.
    let (status, retry, body) = send_as(&server, "small", spans_ago(1, 60, 0)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(retry, None, "not to be retried");
    assert!(body.contains("50 spans per request"), "{body}");
    assert_eq!(send_as(&server, "big", spans_ago(1, 60, 0)).await.0, 200);

    // Retention: small keeps one hour, big (the server's 0s) everything.
    for tenant in ["small", "big"] {
        let (status, _, body) = send_as(&server, tenant, spans_ago(2, 20, 3 * 3600)).await;
        assert_eq!(status, 200, "{tenant}: {body}");
    }

    // The ingestion rate: small runs out of its bucket, big never does.
    let (mut small_refused, mut n) = (None, 0);
    while small_refused.is_none() && n < 300 {
        n += 1;
        let (status, retry, body) = send_as(&server, "small", spans_ago(3 + n, 40, 0)).await;
        match status {
            200 => {}
            429 => small_refused = Some((retry, body)),
            other => panic!("{other}: {body}"),
        }
    }
    let (retry, body) = small_refused.expect("small is limited within 300 requests");
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1));
    assert!(body.contains("ingestion rate of 400000 bytes/s"), "{body}");
    for i in 0..n {
        let (status, _, body) = send_as(&server, "big", spans_ago(1000 + i, 40, 0)).await;
        assert_eq!(status, 200, "big is not limited: {body}");
    }
    // gRPC: RESOURCE_EXHAUSTED (once small's bucket is empty again).
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let mut code = tonic::Code::Ok;
    for i in 0..300 {
        let mut r = tonic::Request::new(request("small-svc", spans_ago(5000 + i, 40, 0)));
        r.metadata_mut()
            .insert("x-scope-orgid", "small".parse().unwrap());
        if let Err(status) = client.export(r).await {
            code = status.code();
            break;
        }
    }
    assert_eq!(code, tonic::Code::ResourceExhausted);

    // The search window: small 1h, big the default 12h.
    let search = |lookback: &str| server.url(&format!("/api/v1/search?lookback={lookback}"));
    let (status, body) = get(&search("2h"), Some("small"), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("max_search_window of 1h"), "{body}");
    assert_eq!(get(&search("30m"), Some("small"), None).await.0, 200);
    assert_eq!(get(&search("2h"), Some("big"), None).await.0, 200);
    let (status, body) = get(&search("1d"), Some("big"), None).await;
    assert_eq!(status, 400, "{body}");

    // Concurrent queries: while a runaway query holds small's one slot,
    // small's next query is refused and big's runs.
    let runaway = {
        let url = server.url("/api/v1/sql");
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("x-scope-orgid", "small")
                .json(&serde_json::json!({"sql": "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 100000000) b"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let services = server.url("/api/v1/services");
    // Once the runaway runs (a query of small's would otherwise race it
    // for the one slot), small's next query is refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let (_, metrics) = get(&server.url("/metrics"), None, None).await;
        if crate::server::metric(&metrics, "tracelake_queries_running{class=\"heavy\"}") >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && !runaway.is_finished(),
            "the runaway query did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = get(&services, Some("small"), None).await;
    let refused = (status == 429).then_some(body);
    let refused = refused.expect("small's second query refused while its first runs");
    assert!(refused.contains("max_concurrent_queries"), "{refused}");
    assert_eq!(get(&services, Some("big"), None).await.0, 200);
    assert_eq!(
        runaway.await.unwrap(),
        408,
        "the runaway ends at its time limit"
    );
    assert_eq!(
        get(&services, Some("small"), None).await.0,
        200,
        "the slot is free again"
    );

    // Small's three-hour-old partition is removed; big's stays.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = sql(
            &server,
            Some("small"),
            &format!(
                "SELECT count(*) AS n FROM spans WHERE trace_id = X'{:032x}'",
                2u128
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["rows"][0]["n"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "small's old spans not expired in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, big) = sql(
        &server,
        Some("big"),
        &format!(
            "SELECT count(*) AS n FROM spans WHERE trace_id = X'{:032x}'",
            2u128
        ),
    )
    .await;
    assert_eq!(big["rows"][0]["n"], 20, "{big}");

    // Counted per tenant and limit.
    let (_, metrics) = get(&server.url("/metrics"), None, None).await;
    for limit in [
        "max_spans_per_request",
        "ingestion_rate",
        "max_concurrent_queries",
    ] {
        let name =
            format!("tracelake_limited_requests_total{{tenant=\"small\",limit=\"{limit}\"}}");
        assert!(
            crate::server::metric(&metrics, &name) >= 1.0,
            "{name}:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("tracelake_limited_requests_total{tenant=\"big\""),
        "{metrics}"
    );

    // The file is reread: small may now send 60 spans per request.
    std::fs::write(
        &limits,
        LIMITS.replace("max_spans_per_request = 50", "max_spans_per_request = 100"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (status, _, body) = send_as(&server, "small", spans_ago(9999, 60, 0)).await;
        if status == 200 {
            break;
        }
        assert!(
            body.contains("spans per request") || body.contains("ingestion rate"),
            "{body}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the new limit not in force in 30 s"
        );
    }
    let (_, stored) = sql(
        &server,
        Some("small"),
        &format!(
            "SELECT count(*) AS n FROM spans WHERE trace_id = X'{:032x}'",
            9999u128
        ),
    )
    .await;
    assert_eq!(stored["rows"][0]["n"], 60, "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_that_take_a_trace_over_its_size_limit_are_rejected() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    std::fs::write(&limits, "[tenants.shop]\nmax_bytes_per_trace = 60000\n").unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--tenant-limits-file", limits.to_str().unwrap()],
    )
    .await;
    let big: u128 = 0xb16;
    // The growing trace and, each time, a new small one in the same request.
    let mut refused = None;
    for round in 0..200u64 {
        let mut spans = spans_ago(big, 20, 0);
        for (i, s) in spans.iter_mut().enumerate() {
            s.span_id = (round * 100 + i as u64 + 1).to_be_bytes().to_vec();
        }
        spans.extend(spans_ago(0x5000 + u128::from(round), 3, 0));
        let r = reqwest::Client::new()
            .post(server.otlp_url())
            .header("x-scope-orgid", "shop")
            .header("content-type", "application/x-protobuf")
            .body(request("shop-svc", spans).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let response = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
        if let Some(partial) = response.partial_success.filter(|p| p.rejected_spans > 0) {
            refused = Some((round, partial));
            break;
        }
    }
    let (round, partial) = refused.expect("the trace reaches 60,000 bytes within 200 requests");
    assert!(round >= 1, "the first 20 spans fit");
    assert_eq!(
        partial.rejected_spans, 20,
        "only the growing trace's spans: {partial:?}"
    );
    assert!(
        partial.error_message.contains("max_bytes_per_trace"),
        "{}",
        partial.error_message
    );
    let (_, body) = sql(
        &server,
        Some("shop"),
        &format!(
            "SELECT count(*) FILTER (WHERE trace_id = X'{big:032x}') AS big, \
             count(DISTINCT trace_id) FILTER (WHERE trace_id <> X'{big:032x}') AS small FROM spans"
        ),
    )
    .await;
    assert_eq!(body["rows"][0]["big"], 20 * round, "{body}");
    assert_eq!(
        body["rows"][0]["small"],
        round + 1,
        "every small trace: {body}"
    );
    // Another tenant's trace of the same id is not limited.
    for round in 0..=round {
        let mut spans = spans_ago(big, 20, 0);
        for (i, s) in spans.iter_mut().enumerate() {
            s.span_id = (round * 100 + i as u64 + 1).to_be_bytes().to_vec();
        }
        assert_eq!(send_as(&server, "web", spans).await.0, 200);
    }
    let (_, web) = sql(&server, Some("web"), "SELECT count(*) AS n FROM spans").await;
    assert_eq!(web["rows"][0]["n"], 20 * (round + 1), "{web}");
    let (_, metrics) = get(&server.url("/metrics"), None, None).await;
    let name = "tracelake_limited_requests_total{tenant=\"shop\",limit=\"max_bytes_per_trace\"}";
    assert!(crate::server::metric(&metrics, name) >= 1.0, "{metrics}");
}
