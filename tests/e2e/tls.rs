//! TLS on every TCP listener (`--tls-cert-file`, `--tls-key-file`,
//! `--tls-client-ca-file`, `--tls-min-version`): certificates from a CA
//! each test makes with `openssl`, real TLS clients (rustls here, the
//! OpenTelemetry SDK's exporters and the ADBC Flight SQL driver in Python),
//! plain text refused, client certificates required when asked for, the
//! files reread without a restart; and a cluster's nodes (an ingest node,
//! SQL workers) calling each other over TLS (`--cluster-ca-file`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::server::{TestServer, metric, python_with};
use crate::spans::{now_nanos, request, span};

/// A small PKI made with the `openssl` command: `ca` signs the server's
/// certificate `server` (for 127.0.0.1 and localhost), `clients-ca` signs
/// the client certificate `client`, and `ca2` signs `server2`, the
/// server's next certificate, and `client2`, a client certificate from a
/// CA the server does not know; `ca` also signs `node`, a cluster node's
/// certificate, good for both ends of a connection. Each `<name>.pem` has a
/// `<name>.key`.
pub(crate) struct Pki {
    dir: PathBuf,
}

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tracelake-test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
[node]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
";

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command runs (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub(crate) fn new(dir: &Path) -> Pki {
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        for ca in ["ca", "clients-ca", "ca2"] {
            pki.key_and_request(ca);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{ca}.csr"),
                    "-signkey",
                    &format!("{ca}.key"),
                    "-days",
                    "3650",
                    "-extfile",
                    "openssl.cnf",
                    "-extensions",
                    "ca",
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        for (leaf, ca, kind) in [
            ("server", "ca", "server"),
            ("client", "clients-ca", "client"),
            ("server2", "ca2", "server"),
            ("client2", "ca2", "client"),
            ("node", "ca", "node"),
        ] {
            pki.key_and_request(leaf);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{leaf}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-set_serial",
                    "2",
                    "-days",
                    "3650",
                    "-extfile",
                    "openssl.cnf",
                    "-extensions",
                    kind,
                    "-out",
                    &format!("{leaf}.pem"),
                ],
            );
        }
        pki
    }

    /// A P-256 key (PKCS#8 PEM) and a signing request for it.
    fn key_and_request(&self, name: &str) {
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-config",
                "openssl.cnf",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub(crate) fn arg(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_string()
    }
}

/// A rustls client configuration trusting `ca`, offering ALPN h2 and
/// http/1.1, with the client certificate `client` if given, speaking only
/// `versions`.
fn client_config(
    pki: &Pki,
    ca: &str,
    client: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path(&format!("{ca}.pem"))).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// An HTTPS client (no pooling: each request is a new handshake, so a
/// reloaded certificate is seen at once).
fn https(config: rustls::ClientConfig) -> reqwest::Client {
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A TLS connection to `addr` that exchanges application data: the
/// protocol ALPN chose, or the error. (With TLS 1.3 the server checks a
/// client certificate after the client's handshake has ended, so only a
/// read shows a refusal: the server closes with an alert.)
async fn handshake(addr: SocketAddr, config: rustls::ClientConfig) -> Result<String, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let alpn = String::from_utf8(alpn.unwrap_or_default()).unwrap();
    // Something every listener answers: HTTP/2's preface gets a SETTINGS
    // frame, HTTP/1.1's request an answer.
    let hello: &[u8] = if alpn == "h2" {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0"
    } else {
        b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    };
    tls.write_all(hello).await.map_err(|e| e.to_string())?;
    let mut first = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut first)).await {
        Ok(Ok(1)) => Ok(alpn),
        Ok(Ok(_)) => Err("closed without an answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// What a plain-text HTTP request to a TLS port gets back (the server's
/// first bytes, lossy), or the error.
async fn plain_text(addr: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => String::from_utf8_lossy(&buf).into_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => panic!("a plain-text request to a TLS port got no end within 10 s"),
    }
}

fn tcp_listeners(server: &TestServer) -> [(&'static str, SocketAddr); 6] {
    [
        ("otlp-grpc", server.grpc),
        ("otlp-http", server.otlp_http),
        ("http", server.http),
        ("zipkin", server.zipkin),
        ("jaeger-http", server.jaeger_http),
        ("flight-sql", server.flight_sql),
    ]
}

fn tls_args(pki: &Pki, cert: &str) -> Vec<String> {
    vec![
        "--tls-cert-file".into(),
        pki.arg(&format!("{cert}.pem")),
        "--tls-key-file".into(),
        pki.arg(&format!("{cert}.key")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tcp_listener_speaks_tls_and_only_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let args = tls_args(&pki, "server");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let trusting = client_config(&pki, "ca", None, BOTH);
    let server =
        TestServer::start_tls(&dir.path().join("data"), &args, https(trusting.clone())).await;

    for (name, addr) in tcp_listeners(&server) {
        // TLS 1.2 is accepted by default, and 1.3; gRPC's h2 is offered.
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let config = client_config(&pki, "ca", None, &[version]);
            assert_eq!(
                handshake(addr, config).await.as_deref(),
                Ok("h2"),
                "{name} with {version:?}"
            );
        }
        // A client that does not trust the CA refuses the server.
        let error = handshake(addr, client_config(&pki, "ca2", None, BOTH))
            .await
            .unwrap_err();
        assert!(error.contains("UnknownIssuer"), "{name}: {error}");
        // Plain text gets no HTTP answer: the connection closes.
        let answer = plain_text(addr).await;
        assert!(
            !answer.contains("HTTP/1.1"),
            "{name} answered plain text: {answer}"
        );
    }

    // Clients that connect and say nothing hold up no one: with 300 of
    // them waiting (more than the old limit of handshakes at once), a
    // real client is answered at once, not when they time out (10 s).
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(
            tokio::net::TcpStream::connect(server.otlp_http)
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        handshake(server.otlp_http, client_config(&pki, "ca", None, BOTH)),
    )
    .await;
    assert_eq!(
        answered.as_ref().map(|r| r.as_deref()),
        Ok(Ok("h2")),
        "after {:?}",
        started.elapsed()
    );
    drop(idle);

    // Spans in over HTTPS (OTLP/HTTP and Zipkin), read back over HTTPS.
    server
        .export(&request("otlp-https", vec![span(0x7a5, 1)]))
        .await;
    let client = https(trusting);
    let zipkin = serde_json::json!([{
        "traceId": "00000000000000000000000000000b0b",
        "id": "0000000000000002",
        "name": "get /cart",
        "timestamp": now_nanos() / 1000,
        "duration": 1500,
        "localEndpoint": {"serviceName": "zipkin-https"},
    }]);
    let r = client
        .post(format!("https://{}/api/v2/spans", server.zipkin))
        .json(&zipkin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let rows = server
        .sql("SELECT service_name AS s FROM spans ORDER BY s")
        .await;
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"s": "otlp-https"}),
            serde_json::json!({"s": "zipkin-https"})
        ]
    );

    // The refused handshakes are counted per listener.
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    for (name, _) in tcp_listeners(&server) {
        let failed =
            format!("tracelake_tls_handshakes_total{{listener=\"{name}\",outcome=\"failed\"}}");
        assert!(metric(metrics, &failed) >= 2.0, "{failed}:\n{metrics}");
        let ok = format!("tracelake_tls_handshakes_total{{listener=\"{name}\",outcome=\"ok\"}}");
        assert!(metric(metrics, &ok) >= 2.0, "{ok}:\n{metrics}");
    }
}

/// The OpenTelemetry SDK's OTLP exporters and the ADBC Flight SQL driver
/// as users configure them for TLS (`tests/python/tls_clients.py`), with a
/// token; with mutual TLS also their client certificates.
async fn python_clients(
    server: &TestServer,
    pki: &Pki,
    client: Option<&str>,
    token: &str,
) -> Value {
    let python = python_with(
        "adbc_driver_flightsql, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, \
         opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "adbc-driver-flightsql opentelemetry-exporter-otlp-proto-grpc \
         opentelemetry-exporter-otlp-proto-http",
    )
    .expect("checked by the caller");
    let script = crate::checkout("tests/python/tls_clients.py");
    let script = script.to_str().unwrap();
    let (cert, key) = match client {
        Some(name) => (
            pki.arg(&format!("{name}.pem")),
            pki.arg(&format!("{name}.key")),
        ),
        None => ("-".into(), "-".into()),
    };
    crate::procs::json_output(tokio::process::Command::new(&python).args([
        script,
        &server.otlp_url(),
        &format!("https://{}", server.grpc),
        &format!("grpc+tls://{}", server.flight_sql),
        &pki.arg("ca.pem"),
        &cert,
        &key,
        token,
    ]))
    .await
}

fn has_python_clients() -> bool {
    python_with(
        "adbc_driver_flightsql, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, \
         opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "adbc-driver-flightsql opentelemetry-exporter-otlp-proto-grpc \
         opentelemetry-exporter-otlp-proto-http",
    )
    .is_some()
}

const TOKEN: &str = "tls-ingest-and-query";

fn tokens_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        format!(
            "[[tokens]]\nname = \"service\"\ntoken = \"{TOKEN}\"\nscopes = [\"ingest\", \"query\"]\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_over_tls_with_a_token() {
    if !has_python_clients() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let tokens = tokens_file(dir.path());
    let mut args = tls_args(&pki, "server");
    args.extend(["--auth-tokens-file".into(), tokens.to_str().unwrap().into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = https(client_config(&pki, "ca", None, BOTH));
    let server = TestServer::start_tls(&dir.path().join("data"), &args, client.clone()).await;

    let out = python_clients(&server, &pki, None, TOKEN).await;
    assert_eq!(out["http"]["ok"], true, "{out}");
    assert_eq!(out["grpc"]["ok"], true, "{out}");
    assert_eq!(
        out["flight"]["services"],
        serde_json::json!(["otlp-grpc-tls", "otlp-http-tls"]),
        "{out}"
    );
    // The benchmark driver (used for BENCHMARKS.md's TLS figure) over
    // HTTPS with the token: every span acknowledged and stored.
    use tracelake_bench::driver::{Config, run};
    let report = run(Config {
        spans: Some(2_000),
        batch: 500,
        streams: 2,
        pool_bytes: 4 << 20,
        token: Some(TOKEN.into()),
        ca_file: Some(pki.path("ca.pem")),
        ..Config::new(format!("https://{}", server.otlp_http))
    })
    .await
    .unwrap();
    assert_eq!(report.failed_requests, 0, "{:?}", report.first_error);
    assert!(report.spans_acked >= 2_000, "{}", report.spans_acked);
    let body: Value = client
        .post(server.url("/api/v1/sql"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"sql": "SELECT count(*) AS n FROM spans"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["rows"][0]["n"], 2 + report.spans_acked, "{body}");
    // The token still counts over TLS.
    let wrong = python_clients(&server, &pki, None, "not-a-token").await;
    assert_eq!(wrong["http"]["ok"], false, "{wrong}");
    assert_eq!(wrong["grpc"]["ok"], false, "{wrong}");
    let error = wrong["flight"]["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("unauthenticated"), "{wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_a_minimum_version() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut args = tls_args(&pki, "server");
    args.extend([
        "--tls-client-ca-file".into(),
        pki.arg("clients-ca.pem"),
        "--tls-min-version".into(),
        "1.3".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let with_cert = client_config(&pki, "ca", Some("client"), BOTH);
    let server = TestServer::start_tls(&dir.path().join("data"), &args, https(with_cert)).await;

    let tls13 = &[&rustls::version::TLS13];
    let tls12 = &[&rustls::version::TLS12];
    for (name, addr) in tcp_listeners(&server) {
        assert_eq!(
            handshake(addr, client_config(&pki, "ca", Some("client"), tls13))
                .await
                .as_deref(),
            Ok("h2"),
            "{name}"
        );
        // No client certificate: the server ends the connection.
        let error = handshake(addr, client_config(&pki, "ca", None, BOTH))
            .await
            .unwrap_err();
        assert!(error.contains("CertificateRequired"), "{name}: {error}");
        // A certificate the client CA did not sign: the same.
        let error = handshake(addr, client_config(&pki, "ca", Some("client2"), BOTH))
            .await
            .unwrap_err();
        assert!(error.contains("UnknownCA"), "{name}: {error}");
        // TLS 1.2 is below the minimum.
        let error = handshake(addr, client_config(&pki, "ca", Some("client"), tls12))
            .await
            .unwrap_err();
        assert!(error.contains("ProtocolVersion"), "{name}: {error}");
    }
    if !has_python_clients() {
        return;
    }
    let out = python_clients(&server, &pki, Some("client"), "-").await;
    assert_eq!(out["http"]["ok"], true, "{out}");
    assert_eq!(out["grpc"]["ok"], true, "{out}");
    assert_eq!(
        out["flight"]["services"],
        serde_json::json!(["otlp-grpc-tls", "otlp-http-tls"]),
        "{out}"
    );
    let without = python_clients(&server, &pki, None, "-").await;
    assert_eq!(without["http"]["ok"], false, "{without}");
    assert_eq!(without["grpc"]["ok"], false, "{without}");
    assert!(without["flight"]["error"].is_string(), "{without}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(pki.path("server.pem"), &cert).unwrap();
    std::fs::copy(pki.path("server.key"), &key).unwrap();
    let args = [
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ];
    let old = https(client_config(&pki, "ca", None, BOTH));
    let new = https(client_config(&pki, "ca2", None, BOTH));
    let server = TestServer::start_tls(&dir.path().join("data"), &args, old.clone()).await;
    let ready = |client: &reqwest::Client| client.get(server.url("/ready")).send();
    assert_eq!(ready(&old).await.unwrap().status(), 200);
    assert!(ready(&new).await.is_err());

    // The key first: for a moment the pair does not match, which keeps
    // the old certificate in force; then the certificate.
    std::fs::copy(pki.path("server2.key"), &key).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        ready(&old).await.unwrap().status(),
        200,
        "a mismatched pair is not taken"
    );
    std::fs::copy(pki.path("server2.pem"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&new).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate not served within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready(&old).await.is_err(),
        "the old certificate is still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_that_do_not_load_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    for (cert, key, error) in [
        ("server.pem", "client.key", "do not make a usable pair"),
        ("server.key", "server.key", "holds no PEM certificate"),
        ("server.pem", "server.pem", "invalid key file"),
        ("server.pem", "absent.key", "cannot read"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tracelake"))
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--tls-cert-file", &pki.arg(cert)])
            .args(["--tls-key-file", &pki.arg(key)])
            .args(["--listen-address", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{cert} + {key} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(error), "{cert} + {key}: {stderr}");
    }
}

/// A cluster whose ports speak TLS with client certificates required
/// (every node presents its own, signed by the cluster's CA): a query node
/// asks the ingest node for its buffered rows over TLS, and spreads SQL
/// over two SQL workers whose ports speak TLS only; a node that does not
/// trust the cluster's CA gets nothing from the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_speaks_tls_between_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut tls = tls_args(&pki, "node");
    tls.extend(["--tls-client-ca-file".into(), pki.arg("ca.pem")]);
    let client = https(client_config(&pki, "ca", Some("node"), BOTH));
    let token = [("TRACELAKE_PEER_TOKEN", "cluster-secret")];
    let start = |data: std::path::PathBuf, extra: Vec<String>| {
        let args: Vec<String> = tls.iter().cloned().chain(extra).collect();
        let client = client.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            TestServer::start_tls_with_env(&data, &args, &token, client).await
        }
    };
    let free = || crate::server::free_port().to_string();
    let (worker_a, worker_q) = (free(), free());
    let workers = format!("{worker_a},{worker_q}");
    let data = dir.path().join("a");
    let node_a = |flush: &str| -> Vec<String> {
        [
            "--node-id",
            "a",
            "--flush-max-age",
            flush,
            "--sql-worker-listen",
            &worker_a,
            // Its worker's own calls (shuffles) to other workers.
            "--cluster-ca-file",
            &pki.arg("ca.pem"),
        ]
        .map(String::from)
        .to_vec()
    };
    // Node a ingests and serves a worker: 40 spans committed, then 24 it
    // keeps buffered.
    let mut a = start(data.clone(), node_a("100ms")).await;
    let batch = |first: u64, n: u64| {
        let spans = (first..first + n)
            .map(|i| span(0x7150_0000 + u128::from(i % 8), i + 1))
            .collect();
        request("tls-cluster", spans)
    };
    a.export(&batch(0, 40)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while buffered(&a).await > 0.0 {
        assert!(Instant::now() < deadline, "a did not flush");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.terminate();
    let a = start(data.clone(), node_a("1h")).await;
    a.export(&batch(40, 24)).await;
    assert_eq!(buffered(&a).await, 24.0, "node a keeps these buffered");

    let storage = format!("file://{}", data.display());
    let query_args = |ca: bool| -> Vec<String> {
        let mut args: Vec<String> = [
            "--role",
            "query",
            "--storage-url",
            &storage,
            "--ingest-peers",
            &a.http.to_string(),
            "--sql-workers",
            &workers,
            "--sql-worker-task-bytes",
            "1",
        ]
        .map(String::from)
        .to_vec();
        if ca {
            args.extend(["--cluster-ca-file".into(), pki.arg("ca.pem")]);
        }
        args
    };
    let mut with_worker = query_args(true);
    with_worker.extend(["--sql-worker-listen".into(), worker_q.clone()]);
    let q = start(dir.path().join("q"), with_worker).await;

    // The buffered rows come over TLS from a; the join runs on both
    // workers, over TLS.
    let sql = "SELECT count(*) AS n, count(DISTINCT x.span_id) AS d FROM spans x JOIN spans y \
               ON x.trace_id = y.trace_id AND x.span_id = y.span_id";
    let (status, body) = q.sql_response(sql).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["n"], 64, "{body}");
    assert_eq!(body["rows"][0]["d"], 64, "{body}");
    // Both workers were called, over TLS.
    for node in [&a, &q] {
        let metrics = node.metrics().await;
        let ok = "tracelake_tls_handshakes_total{listener=\"sql-worker\",outcome=\"ok\"}";
        assert!(metric(&metrics, ok) >= 1.0, "{ok}:\n{metrics}");
    }
    // The worker ports speak TLS only: a plain-text gRPC call gets no
    // answer but the end of the connection.
    for worker in [&worker_a, &worker_q] {
        let mut tcp = tokio::net::TcpStream::connect(worker.as_str())
            .await
            .unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf))
            .await
            .expect("the worker port closes a plain-text connection");
        assert!(
            read.is_err() || !buf.starts_with(b"\0\0"),
            "{worker} answered plain-text HTTP/2: {buf:?}"
        );
    }

    // A node that checks the others against the system's roots (which do
    // not know the cluster's CA): the workers' answers never come.
    let stranger = start(dir.path().join("s"), query_args(false)).await;
    let (status, body) = stranger.sql_response(sql).await;
    assert!(status >= 500, "{status}: {body}");
    assert!(body.get("rows").is_none(), "{body}");
}

/// Rows `node` holds in its buffer, not yet committed.
async fn buffered(node: &TestServer) -> f64 {
    metric(
        &node.metrics().await,
        "tracelake_buffer_rows{tenant=\"default\"}",
    )
}
