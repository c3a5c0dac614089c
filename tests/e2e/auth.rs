//! Tokens and scopes (`--auth-tokens-file`) on every TCP listener: no
//! token and unknown tokens are 401 / UNAUTHENTICATED, a token without the
//! scope 403 / PERMISSION_DENIED, the right token works, with real clients
//! where they exist; the file is reread without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::server::{TestServer, metric, python_with};

const INGEST: &str = "tok-ingest-1";
const QUERY: &str = "tok-query-2";
const ADMIN: &str = "tok-admin-3";

/// The tokens file: an exporter (ingest), Grafana (query, by hash) and an
/// operator (admin), all of tenant `shop`.
fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[tokens]]
name = "exporter"
token = "{INGEST}"
tenant = "shop"
scopes = ["ingest"]

[[tokens]]
name = "grafana"
# sha256 of "{QUERY}"
token_sha256 = "{}"
tenant = "shop"
scopes = ["query"]

[[tokens]]
name = "operator"
token = "{ADMIN}"
tenant = "shop"
scopes = ["admin"]
"#,
            sha256_hex(QUERY)
        ),
    )
    .unwrap();
    path
}

fn sha256_hex(text: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

async fn start(dir: &Path, tokens: &Path) -> TestServer {
    TestServer::start(dir, &["--auth-tokens-file", tokens.to_str().unwrap()]).await
}

/// How a request presents its token.
#[derive(Clone, Copy, Debug)]
enum Cred {
    None,
    Bearer(&'static str),
    /// HTTP Basic with the token as the password, as Grafana sends it.
    Basic(&'static str),
}

fn with(request: RequestBuilder, cred: Cred) -> RequestBuilder {
    match cred {
        Cred::None => request,
        Cred::Bearer(t) => request.bearer_auth(t),
        Cred::Basic(t) => request.basic_auth("grafana", Some(t)),
    }
}

/// A minimal Jaeger thrift `Batch` (binary protocol): process `svc`, no
/// spans.
fn jaeger_batch() -> Vec<u8> {
    let mut b = vec![0x0c, 0, 1, 0x0b, 0, 1];
    b.extend_from_slice(&3i32.to_be_bytes());
    b.extend_from_slice(b"svc");
    b.push(0); // end of Process
    b.extend_from_slice(&[0x0f, 0, 2, 0x0c]);
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(0); // end of Batch
    b
}

struct Case {
    what: &'static str,
    method: Method,
    url: String,
    content_type: &'static str,
    body: Vec<u8>,
    /// The token with the scope it needs, and one without.
    right: Cred,
    wrong_scope: Cred,
    ok: u16,
}

async fn send(client: &reqwest::Client, case: &Case, cred: Cred) -> reqwest::Response {
    let mut request = client.request(case.method.clone(), &case.url);
    if !case.body.is_empty() {
        request = request
            .header("content-type", case.content_type)
            .body(case.body.clone());
    }
    with(request, cred).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_listener_needs_a_token_with_the_right_scope() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = start(&dir.path().join("data"), &tokens).await;
    let client = reqwest::Client::new();
    let otlp = crate::spans::request("auth", vec![crate::spans::span(0xa17, 1)]).encode_to_vec();
    let zipkin_span = format!(
        r#"[{{"traceId":"00000000000000000000000000000b17","id":"0000000000000001","name":"get","timestamp":{},"duration":1000,"localEndpoint":{{"serviceName":"zip"}}}}]"#,
        crate::spans::now_nanos() / 1000
    );
    let http = |path: &str| format!("http://{}{path}", server.http);
    let zipkin = |path: &str| format!("http://{}{path}", server.zipkin);
    let case = |what, method, url: String, right, wrong_scope, ok| Case {
        what,
        method,
        url,
        content_type: "",
        body: Vec::new(),
        right,
        wrong_scope,
        ok,
    };
    let cases = [
        Case {
            content_type: "application/x-protobuf",
            body: otlp.clone(),
            ..case(
                "OTLP/HTTP",
                Method::POST,
                server.otlp_url(),
                Cred::Bearer(INGEST),
                Cred::Bearer(QUERY),
                200,
            )
        },
        Case {
            content_type: "application/json",
            body: zipkin_span.clone().into_bytes(),
            ..case(
                "Zipkin POST",
                Method::POST,
                zipkin("/api/v2/spans"),
                Cred::Basic(INGEST),
                Cred::Basic(QUERY),
                202,
            )
        },
        Case {
            content_type: "application/x-thrift",
            body: jaeger_batch(),
            ..case(
                "Jaeger thrift HTTP",
                Method::POST,
                format!("http://{}/api/traces", server.jaeger_http),
                Cred::Basic(INGEST),
                Cred::Bearer(ADMIN),
                202,
            )
        },
        case(
            "Zipkin query on 9411",
            Method::GET,
            zipkin("/api/v2/services"),
            Cred::Basic(QUERY),
            Cred::Basic(INGEST),
            200,
        ),
        case(
            "Zipkin query on 3200",
            Method::GET,
            http("/zipkin/api/v2/services"),
            Cred::Basic(QUERY),
            Cred::Basic(INGEST),
            200,
        ),
        case(
            "Jaeger query",
            Method::GET,
            http("/jaeger/api/services"),
            Cred::Basic(QUERY),
            Cred::Basic(ADMIN),
            200,
        ),
        case(
            "Tempo query",
            Method::GET,
            http("/tempo/api/search?tags=service.name%3Dzip"),
            Cred::Basic(QUERY),
            Cred::Basic(INGEST),
            200,
        ),
        case(
            "native API",
            Method::GET,
            http("/api/v1/services"),
            Cred::Bearer(QUERY),
            Cred::Bearer(INGEST),
            200,
        ),
        Case {
            content_type: "application/json",
            body: br#"{"sql": "SELECT count(*) AS n FROM spans"}"#.to_vec(),
            ..case(
                "SQL",
                Method::POST,
                http("/api/v1/sql"),
                Cred::Bearer(QUERY),
                Cred::Bearer(ADMIN),
                200,
            )
        },
        case(
            "who am I (the web UI's sign-in)",
            Method::GET,
            http("/api/v1/whoami"),
            Cred::Basic(QUERY),
            Cred::Basic(INGEST),
            200,
        ),
        case(
            "metrics",
            Method::GET,
            http("/metrics"),
            Cred::Bearer(ADMIN),
            Cred::Bearer(QUERY),
            200,
        ),
        case(
            "storage",
            Method::GET,
            http("/api/v1/storage"),
            Cred::Basic(ADMIN),
            Cred::Basic(QUERY),
            200,
        ),
        case(
            "unknown path",
            Method::GET,
            http("/nope"),
            Cred::Bearer(QUERY),
            Cred::Bearer(INGEST),
            404,
        ),
    ];
    for case in &cases {
        let what = case.what;
        for (cred, why) in [
            (Cred::None, "no token"),
            (Cred::Bearer("tok-unknown"), "unknown token"),
            (Cred::Basic("tok-unknown"), "unknown token"),
        ] {
            let r = send(&client, case, cred).await;
            assert_eq!(r.status(), 401, "{what} with {cred:?}");
            let challenges: Vec<_> = r
                .headers()
                .get_all("www-authenticate")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            assert_eq!(
                challenges,
                [
                    "Bearer realm=\"tracelake\"",
                    "Basic realm=\"tracelake\", charset=\"UTF-8\""
                ],
                "{what}"
            );
            let body = r.text().await.unwrap();
            assert!(body.contains(why), "{what} with {cred:?}: {body}");
            assert!(
                !body.contains("tok-"),
                "{what}: the answer names a token: {body}"
            );
        }
        let r = send(&client, case, case.wrong_scope).await;
        assert_eq!(r.status(), 403, "{what} with {:?}", case.wrong_scope);
        let body = r.text().await.unwrap();
        assert!(body.contains("lacks the"), "{what}: {body}");
        assert!(
            !body.contains("tok-"),
            "{what}: the answer names a token: {body}"
        );
        let r = send(&client, case, case.right).await;
        let status = r.status().as_u16();
        assert_eq!(status, case.ok, "{what}: {}", r.text().await.unwrap());
    }

    // Counted per token name and per refusal reason, for the operator.
    let text = client
        .get(http("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let n = cases.len() as f64;
    for (sample, want) in [
        (r#"tracelake_auth_refusals_total{reason="no_token"}"#, n),
        (
            r#"tracelake_auth_refusals_total{reason="unknown_token"}"#,
            2.0 * n,
        ),
        (r#"tracelake_auth_refusals_total{reason="scope"}"#, n),
        (
            r#"tracelake_auth_requests_total{token="exporter",scope="ingest"}"#,
            3.0,
        ),
        (
            r#"tracelake_auth_requests_total{token="operator",scope="admin"}"#,
            3.0,
        ),
    ] {
        assert_eq!(metric(&text, sample), want, "{sample} in\n{text}");
    }
    assert!(!text.contains("tok-"), "a token in /metrics:\n{text}");

    // Health and readiness stay open, and the web UI's page and files
    // (code, no data: it signs in with a token for its API calls).
    // Whatever tenant such a request names, it opens none.
    for path in ["/health", "/ready", "/", "/trace/abc", "/ui/app.js"] {
        let r = client
            .get(http(path))
            .header("x-scope-orgid", "junk")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for path in ["/ui/x/y.js", "/trace/a/b", "/nothing"] {
        let r = client
            .get(http(path))
            .header("x-scope-orgid", "junk")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} needs a token");
    }
    let data = dir.path().join("data");
    assert!(!data.join("wal/junk").exists() && !data.join("tenants/junk").exists());
    // The UI's own calls are challenged with Bearer only: a Basic
    // challenge would make the browser prompt over the sign-in form.
    let r = client
        .get(http("/api/v1/services"))
        .header("x-tracelake-ui", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(challenges, ["Bearer realm=\"tracelake\""]);

    // What the accepted requests sent arrived.
    let r = client
        .post(http("/api/v1/sql"))
        .bearer_auth(QUERY)
        .json(&serde_json::json!({"sql": "SELECT service_name AS s FROM spans ORDER BY s"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["rows"],
        serde_json::json!([{"s": "auth"}, {"s": "zip"}]),
        "{body}"
    );

    // With auth on, the Jaeger agent UDP ports are not opened: we can take
    // them ourselves.
    std::net::UdpSocket::bind(server.jaeger_compact).expect("6831/udp is not in use");
    std::net::UdpSocket::bind(server.jaeger_binary).expect("6832/udp is not in use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_listeners_answer_unauthenticated_and_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = start(&dir.path().join("data"), &tokens).await;
    let mut otlp = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let export = |token: Option<&str>| {
        let mut request = tonic::Request::new(crate::spans::request(
            "grpc",
            vec![crate::spans::span(0x6, 1)],
        ));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };
    for (token, code) in [
        (None, tonic::Code::Unauthenticated),
        (Some("tok-unknown"), tonic::Code::Unauthenticated),
        (Some(QUERY), tonic::Code::PermissionDenied),
        (Some(ADMIN), tonic::Code::PermissionDenied),
    ] {
        let status = otlp.export(export(token)).await.unwrap_err();
        assert_eq!(status.code(), code, "OTLP/gRPC with {token:?}: {status:?}");
        assert!(!status.message().contains("tok-"), "{status:?}");
    }
    otlp.export(export(Some(INGEST))).await.unwrap();

    // Flight SQL: the same codes; Bearer metadata works directly.
    use arrow_flight::flight_service_client::FlightServiceClient;
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt as _};
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.flight_sql))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = FlightServiceClient::new(channel);
    let info = |token: Option<&str>| {
        let command = CommandStatementQuery {
            query: "SELECT count(*) FROM spans".into(),
            transaction_id: None,
        };
        let mut request = tonic::Request::new(arrow_flight::FlightDescriptor::new_cmd(
            command.as_any().encode_to_vec(),
        ));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };
    for (token, code) in [
        (None, tonic::Code::Unauthenticated),
        (Some("tok-unknown"), tonic::Code::Unauthenticated),
        (Some(INGEST), tonic::Code::PermissionDenied),
    ] {
        let status = flight.get_flight_info(info(token)).await.unwrap_err();
        assert_eq!(status.code(), code, "Flight SQL with {token:?}: {status:?}");
    }
    flight.get_flight_info(info(Some(QUERY))).await.unwrap();
}

/// The OpenTelemetry SDK's exporters with `headers` and the ADBC driver
/// with username/password (`tests/python/auth_clients.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_send_their_tokens() {
    let Some(python) = python_with(
        "adbc_driver_flightsql, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, \
         opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.exporter.zipkin.json",
        "adbc-driver-flightsql opentelemetry-exporter-otlp-proto-grpc \
         opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-zipkin-json",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = start(&dir.path().join("data"), &tokens).await;
    let script = crate::checkout("tests/python/auth_clients.py");
    let script = script.to_str().unwrap();
    let out = crate::procs::json_output(tokio::process::Command::new(&python).args([
        script,
        &server.otlp_url(),
        &format!("http://{}", server.grpc),
        &format!("grpc://{}", server.flight_sql),
        INGEST,
        QUERY,
        &format!("http://{}/api/v2/spans", server.zipkin),
    ]))
    .await;
    for protocol in ["http", "grpc"] {
        assert_eq!(out[format!("{protocol}_right")]["ok"], true, "{out}");
        assert_eq!(out[format!("{protocol}_wrong")]["ok"], false, "{out}");
        assert_eq!(out[format!("{protocol}_query")]["ok"], false, "{out}");
    }
    assert_eq!(out["zipkin_right"]["ok"], true, "{out}");
    assert_eq!(out["zipkin_wrong"]["ok"], false, "{out}");
    // The three accepted exports and nothing else are stored; the ADBC
    // client, signed in through the handshake, counted them.
    assert_eq!(out["flight_right"]["rows"], 3, "{out}");
    let wrong = out["flight_wrong"]["error"].as_str().unwrap_or_default();
    assert!(wrong.to_lowercase().contains("unauthenticated"), "{out}");
    let ingest = out["flight_ingest"]["error"].as_str().unwrap_or_default();
    assert!(ingest.contains("PermissionDenied"), "{out}");
    let r = reqwest::Client::new()
        .post(server.url("/api/v1/sql"))
        .basic_auth("grafana", Some(QUERY))
        .json(&serde_json::json!({"sql": "SELECT encode(trace_id, 'hex') AS t, service_name AS s FROM spans ORDER BY s"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["rows"],
        serde_json::json!([
            {"t": out["grpc_right"]["trace_id"], "s": "otlp-grpc-right"},
            {"t": out["http_right"]["trace_id"], "s": "otlp-http-right"},
            {"t": out["zipkin_right"]["trace_id"], "s": "zipkin-right"},
        ]),
        "{body}"
    );
}

/// Status of `GET /api/v1/services` with `token`.
async fn services_status(server: &TestServer, token: &str) -> u16 {
    reqwest::Client::new()
        .get(server.url("/api/v1/services"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until `GET /api/v1/services` with `token` answers `status`.
async fn until_status(server: &TestServer, token: &str, status: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if services_status(server, token).await == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not {status} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokens_file_is_reread_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = start(&dir.path().join("data"), &tokens).await;
    assert_eq!(services_status(&server, QUERY).await, 200);

    // A broken file keeps the tokens in force.
    std::fs::write(&tokens, "[[tokens]]\nname = \"x\"\nscopes = [\"read\"]\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        services_status(&server, QUERY).await,
        200,
        "a broken file took effect"
    );

    // The query token removed, a new one added: refused, then the new one
    // works, with no restart.
    std::fs::write(
        &tokens,
        "[[tokens]]\nname = \"new\"\ntoken = \"tok-new-4\"\nscopes = [\"query\"]\n",
    )
    .unwrap();
    until_status(&server, QUERY, 401, "the removed token").await;
    assert_eq!(services_status(&server, "tok-new-4").await, 200);

    // SIGHUP rereads too (and is not a signal to stop).
    std::fs::write(
        &tokens,
        format!("[[tokens]]\nname = \"back\"\ntoken = \"{QUERY}\"\nscopes = [\"query\"]\n"),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_status(&server, QUERY, 200, "the token added back").await;
    assert_eq!(services_status(&server, "tok-new-4").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_file_that_does_not_load_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\nname = \"a\"\ntoken = \"t\"\nscopes = [\"ingest\", \"write\"]\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tracelake"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--auth-tokens-file", tokens.to_str().unwrap()])
        .args(["--listen-address", "127.0.0.1"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown scope \"write\""), "{stderr}");
}

/// The server's log while it starts with `args` on ephemeral loopback
/// ports, once it holds `line` (or after 30 s).
fn start_log(dir: &Path, args: &[&str], line: &str) -> String {
    let log = dir.join("server.log");
    let mut server = crate::procs::Guard::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_tracelake"))
            .args(["serve", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-address", "127.0.0.1"])
            .args([
                "--otlp-grpc-listen",
                "127.0.0.1:0",
                "--otlp-http-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--flight-sql-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--zipkin-listen",
                "127.0.0.1:0",
                "--jaeger-http-listen",
                "127.0.0.1:0",
            ])
            .args(["--jaeger-compact-listen", "127.0.0.1:0"])
            .args(["--jaeger-binary-listen", "127.0.0.1:0"])
            .args(args)
            .env("TRACELAKE_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
        "server",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(line) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    server.kill();
    text
}

#[test]
fn without_tokens_the_server_warns_that_anyone_can_read_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let open = start_log(dir.path(), &[], "flight-sql listening");
    assert!(
        open.contains(
            "authentication is OFF (no --auth-tokens-file): anyone who can reach these ports \
             can read and write all data"
        ),
        "{open}"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let closed = start_log(
        dir.path(),
        &["--auth-tokens-file", tokens.to_str().unwrap()],
        "flight-sql listening",
    );
    assert!(closed.contains("authentication on"), "{closed}");
    assert!(!closed.contains("authentication is OFF"), "{closed}");
}
