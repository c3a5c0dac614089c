//! The Kafka receiver against a real Kafka-compatible broker (tansu, on
//! loopback, in memory) and a real Kafka client producing what the
//! OpenTelemetry SDK's encoders, py_zipkin's protobuf encoder and Jaeger's
//! protobuf types make (`tests/python/kafka_produce.py`).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::procs;
use crate::server::{TestServer, metric, python_with};

/// The tansu binary: `TRACELAKE_TANSU`, else `tansu` on the PATH. `.ci/run`
/// installs it (a long build, cached outside the clone) and sets
/// `TRACELAKE_TANSU`; elsewhere the tests skip without it.
fn tansu() -> Option<String> {
    let candidates = std::env::var("TRACELAKE_TANSU")
        .ok()
        .into_iter()
        .chain(["tansu".to_string()]);
    for candidate in candidates {
        let works = std::process::Command::new(&candidate)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Some(candidate);
        }
    }
    crate::skip::skip(
        "no tansu broker (set TRACELAKE_TANSU, or `cargo install tansu --no-default-features \
         --features dynostore`; .ci/run does)",
    );
    None
}

/// A broker on loopback, storing in memory; killed on drop.
struct Broker {
    _child: procs::Guard,
    bootstrap: String,
}

impl Broker {
    async fn start(binary: &str) -> Self {
        Self::start_advertising(binary, None).await
    }

    /// A broker that tells clients to reach it at `advertised` (a TLS
    /// front's address, [`tls_front`]) instead of its own.
    async fn start_advertising(binary: &str, advertised: Option<&str>) -> Self {
        let port = crate::server::free_port().port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = advertised.map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
        let child = procs::Guard::spawn(
            std::process::Command::new(binary)
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &advertised])
                .args(["--storage-engine", "memory://tansu/"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "tansu",
        )
        .expect("tansu starts");
        let bootstrap = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&bootstrap).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            _child: child,
            bootstrap,
        }
    }
}

/// Runs `kafka_produce.py` with `args` after the bootstrap address.
async fn kafka_py(python: &str, broker: &Broker, args: &[&str]) -> Value {
    kafka_py_at(python, &broker.bootstrap, &[], args).await
}

/// [`kafka_py`] to the brokers at `bootstrap`, with `envs` naming the
/// connection's settings (`KAFKA_TLS_CA_FILE`, `KAFKA_SASL_USERNAME` and
/// `KAFKA_SASL_PASSWORD`: see the script).
async fn kafka_py_at(python: &str, bootstrap: &str, envs: &[(&str, &str)], args: &[&str]) -> Value {
    let script = crate::checkout("tests/python/kafka_produce.py");
    let script = script.to_str().unwrap();
    let mut command = tokio::process::Command::new(python);
    command.arg(script).arg(bootstrap).args(args);
    command.envs(envs.iter().copied());
    crate::procs::json_output(&mut command).await
}

/// Accepts TLS on `listener` (the PKI's `server` certificate, for
/// 127.0.0.1) and relays each connection's bytes to the broker at
/// `upstream` in plain text: a broker reached over TLS, as clients of a
/// broker with a TLS listener see it (tansu 0.6 cannot serve TLS itself).
fn tls_front(
    pki: &crate::tls::Pki,
    listener: tokio::net::TcpListener,
    upstream: String,
) -> tokio::task::JoinHandle<()> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    })
}

/// What a [`sasl_front`] saw: SASL/PLAIN exchanges that passed and that
/// failed, and connections closed for a request sent before authenticating.
#[derive(Default)]
struct SaslSeen {
    passed: AtomicUsize,
    failed: AtomicUsize,
    unauthenticated: AtomicUsize,
}

/// A broker that requires SASL/PLAIN, as Kafka does with
/// `sasl.enabled.mechanisms=PLAIN` (tansu 0.6 offers SCRAM only): accepts
/// on `listener`, relays ApiVersions to the broker at `upstream`, answers
/// SaslHandshake (v1) and SaslAuthenticate (v0-v2) itself, checking the
/// RFC 4616 message against `user` and `password`, and relays everything
/// after a successful exchange. A wrong password gets Kafka's
/// SASL_AUTHENTICATION_FAILED (58) and the connection is closed; any other
/// request before authenticating closes it too, as Kafka does. The Python
/// producer (kafka-python's SASL client) goes through it as well.
fn sasl_front(
    listener: tokio::net::TcpListener,
    upstream: String,
    user: &'static str,
    password: &'static str,
) -> (tokio::task::JoinHandle<()>, Arc<SaslSeen>) {
    let seen = Arc::new(SaslSeen::default());
    let counters = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, seen) = (upstream.clone(), Arc::clone(&counters));
            tokio::spawn(async move {
                let Ok(broker) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = sasl_connection(client, broker, user, password, &seen).await;
            });
        }
    });
    (task, seen)
}

/// One connection of a [`sasl_front`].
async fn sasl_connection(
    mut client: tokio::net::TcpStream,
    mut broker: tokio::net::TcpStream,
    user: &str,
    password: &str,
    seen: &SaslSeen,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    async fn frame(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
        let size = stream.read_i32().await?;
        let mut body = vec![0; usize::try_from(size).unwrap_or(0)];
        stream.read_exact(&mut body).await?;
        Ok(body)
    }
    async fn reply(stream: &mut tokio::net::TcpStream, body: &[u8]) -> std::io::Result<()> {
        stream.write_all(&(body.len() as i32).to_be_bytes()).await?;
        stream.write_all(body).await
    }
    fn uvarint(bytes: &[u8], at: &mut usize) -> usize {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let b = bytes[*at];
            *at += 1;
            value |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }
    fn put_uvarint(out: &mut Vec<u8>, mut value: usize) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    loop {
        let request = frame(&mut client).await?;
        let api_key = i16::from_be_bytes([request[0], request[1]]);
        let version = i16::from_be_bytes([request[2], request[3]]);
        let correlation = &request[4..8];
        // Request header v1/v2: the client id, a nullable int16-length string.
        let id_len = i16::from_be_bytes([request[8], request[9]]);
        let mut at = 10 + usize::try_from(id_len).unwrap_or(0);
        match api_key {
            18 => {
                reply(&mut broker, &request).await?;
                let response = frame(&mut broker).await?;
                reply(&mut client, &response).await?;
            }
            17 => {
                let len = i16::from_be_bytes([request[at], request[at + 1]]) as usize;
                let mechanism = &request[at + 2..at + 2 + len];
                let mut out = correlation.to_vec();
                let error: i16 = if mechanism == b"PLAIN" { 0 } else { 33 };
                out.extend(error.to_be_bytes());
                out.extend(1i32.to_be_bytes());
                out.extend(5i16.to_be_bytes());
                out.extend(b"PLAIN");
                reply(&mut client, &out).await?;
                if error != 0 {
                    return Ok(());
                }
            }
            36 => {
                let flexible = version >= 2;
                let token = if flexible {
                    // The header's tagged fields, then compact bytes.
                    for _ in 0..uvarint(&request, &mut at) {
                        let _tag = uvarint(&request, &mut at);
                        at += uvarint(&request, &mut at);
                    }
                    let len = uvarint(&request, &mut at) - 1;
                    &request[at..at + len]
                } else {
                    let len = i32::from_be_bytes(request[at..at + 4].try_into().unwrap());
                    &request[at + 4..at + 4 + len as usize]
                };
                // authzid NUL authcid NUL passwd
                let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
                let ok = parts.len() == 3
                    && parts[1] == user.as_bytes()
                    && parts[2] == password.as_bytes();
                let mut out = correlation.to_vec();
                if flexible {
                    out.push(0); // no tagged fields in the response header
                }
                out.extend(if ok { 0i16 } else { 58 }.to_be_bytes());
                let message = "Authentication failed: Invalid username or password";
                match (ok, flexible) {
                    (true, false) => out.extend((-1i16).to_be_bytes()),
                    (true, true) => out.push(0),
                    (false, false) => {
                        out.extend((message.len() as i16).to_be_bytes());
                        out.extend(message.as_bytes());
                    }
                    (false, true) => {
                        put_uvarint(&mut out, message.len() + 1);
                        out.extend(message.as_bytes());
                    }
                }
                if flexible {
                    out.push(1); // empty auth bytes
                } else {
                    out.extend(0i32.to_be_bytes());
                }
                if version >= 1 {
                    out.extend(0i64.to_be_bytes()); // no session lifetime
                }
                if flexible {
                    out.push(0);
                }
                reply(&mut client, &out).await?;
                if !ok {
                    seen.failed.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                seen.passed.fetch_add(1, Ordering::SeqCst);
                tokio::io::copy_bidirectional(&mut client, &mut broker).await?;
                return Ok(());
            }
            _ => {
                seen.unauthenticated.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
        }
    }
}

async fn create_topic(python: &str, broker: &Broker, topic: &str, partitions: u32) {
    kafka_py(python, broker, &["create", topic, &partitions.to_string()]).await;
}

/// Produces `count` one-trace messages to `topic` (trace ids from `first`);
/// what was sent.
async fn produce(
    python: &str,
    broker: &Broker,
    topic: &str,
    encoding: &str,
    first: u64,
    count: u64,
    bad_every: u64,
) -> Value {
    kafka_py(
        python,
        broker,
        &[
            "produce",
            topic,
            encoding,
            &format!("{first:#x}"),
            &count.to_string(),
            &bad_every.to_string(),
        ],
    )
    .await
}

/// The `expected` messages of the dead-letter topic `dead_spans`, checked
/// to be the bad ones `produce` wrote (every 7th of `otlp_spans`), each
/// once; their sources, sorted.
async fn dead_letters(python: &str, broker: &Broker, expected: usize) -> Vec<(i64, i64)> {
    let read = kafka_py(
        python,
        broker,
        &["consume", "dead_spans", &expected.to_string()],
    )
    .await;
    let read = read.as_array().unwrap();
    assert_eq!(read.len(), expected, "{read:#?}");
    let mut sources: Vec<(i64, i64)> = read
        .iter()
        .map(|m| {
            let h = &m["headers"];
            assert_eq!(
                m["value"],
                hex::encode(b"\xff\x00 not a message in any encoding"),
                "{m}"
            );
            assert!(m["key"].as_str().is_some_and(|k| k.len() == 32), "{m}");
            assert_eq!(h["tracelake.error.reason"], "undecodable", "{m}");
            assert!(
                h["tracelake.error.message"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
                "{m}"
            );
            assert_eq!(h["tracelake.source.topic"], "otlp_spans", "{m}");
            assert_eq!(h["tracelake.source.encoding"], "otlp_proto", "{m}");
            let source = |name: &str| h[name].as_str().unwrap().parse::<i64>().unwrap();
            (
                source("tracelake.source.partition"),
                source("tracelake.source.offset"),
            )
        })
        .collect();
    sources.sort();
    let before = sources.len();
    sources.dedup();
    assert_eq!(
        sources.len(),
        before,
        "a bad message copied twice: {read:#?}"
    );
    sources
}

fn python() -> Option<String> {
    python_with(
        "kafka, opentelemetry.exporter.otlp.proto.common, opentelemetry.exporter.zipkin.json, \
         py_zipkin.encoding.protobuf",
        "kafka-python opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-zipkin-json \
         py_zipkin",
    )
}

/// Spans per service, and the spans and their distinct (trace, span) pairs
/// (counted first: once every span sent is there, the count per service
/// sees them all too).
async fn counts(server: &TestServer) -> (Vec<Value>, u64, u64) {
    let all = server
        .sql(
            "SELECT count(*) AS n, \
             count(DISTINCT concat(encode(trace_id, 'hex'), encode(span_id, 'hex'))) AS d \
             FROM spans",
        )
        .await;
    let per_service = server
        .sql("SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1")
        .await;
    (
        per_service,
        all[0]["n"].as_u64().unwrap(),
        all[0]["d"].as_u64().unwrap(),
    )
}

/// Waits until `server` holds `spans` spans; fails on more, or after 60 s.
async fn wait_for(server: &TestServer, spans: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (per_service, n, distinct) = counts(server).await;
        assert_eq!(n, distinct, "a span stored twice: {per_service:?}");
        assert!(
            n <= spans,
            "{n} spans stored of {spans} sent: {per_service:?}"
        );
        if n == spans {
            return per_service;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {spans} spans stored after 60 s: {per_service:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoding_is_consumed_once_visible_before_its_commit_and_bad_messages_skipped() {
    let (Some(tansu), Some(python)) = (tansu(), python()) else {
        return;
    };
    let broker = Broker::start(&tansu).await;
    create_topic(&python, &broker, "otlp_spans", 3).await;
    create_topic(&python, &broker, "json_spans", 1).await;
    create_topic(&python, &broker, "zipkin_spans", 2).await;
    create_topic(&python, &broker, "jaeger_spans", 2).await;
    create_topic(&python, &broker, "jaeger_json_spans", 1).await;
    create_topic(&python, &broker, "zipkin_proto_spans", 1).await;
    create_topic(&python, &broker, "dead_spans", 2).await;
    let data = tempfile::tempdir().unwrap();
    let topics = "otlp_spans=otlp_proto,json_spans=otlp_json,zipkin_spans=zipkin_json,\
                  jaeger_spans=jaeger_proto,jaeger_json_spans=jaeger_json,\
                  zipkin_proto_spans=zipkin_proto,late_spans=otlp_proto";
    let args = [
        "--kafka-brokers",
        broker.bootstrap.as_str(),
        "--kafka-topics",
        topics,
        "--kafka-dead-letter-topic",
        "dead_spans",
        "--kafka-metadata-refresh",
        "500ms",
        // Nothing is committed while the server runs: what queries see
        // comes from the partitions' buffers.
        "--flush-max-age",
        "1h",
    ];
    let mut server = TestServer::start(data.path(), &args).await;
    // Bad messages in the middle of a partition: every 7th of 30.
    let proto = produce(&python, &broker, "otlp_spans", "otlp_proto", 0x1000, 30, 7).await;
    let json = produce(&python, &broker, "json_spans", "otlp_json", 0x2000, 10, 0).await;
    let zipkin = produce(
        &python,
        &broker,
        "zipkin_spans",
        "zipkin_json",
        0x3000,
        10,
        0,
    )
    .await;
    let jaeger = produce(
        &python,
        &broker,
        "jaeger_spans",
        "jaeger_proto",
        0x5000,
        10,
        0,
    )
    .await;
    let jaeger_json = produce(
        &python,
        &broker,
        "jaeger_json_spans",
        "jaeger_json",
        0x6000,
        10,
        0,
    )
    .await;
    let zipkin_proto = produce(
        &python,
        &broker,
        "zipkin_proto_spans",
        "zipkin_proto",
        0x8000,
        10,
        0,
    )
    .await;
    assert_eq!(proto["bad"], 4);
    let spans = |v: &Value| v["spans"].as_u64().unwrap();
    let total: u64 = [&proto, &json, &zipkin, &jaeger, &jaeger_json, &zipkin_proto]
        .map(spans)
        .iter()
        .sum();
    let per_service = wait_for(&server, total).await;
    assert_eq!(
        per_service,
        vec![
            serde_json::json!({"service_name": "kafka-jaeger_json", "n": spans(&jaeger_json)}),
            serde_json::json!({"service_name": "kafka-jaeger_proto", "n": spans(&jaeger)}),
            serde_json::json!({"service_name": "kafka-otlp_json", "n": spans(&json)}),
            serde_json::json!({"service_name": "kafka-otlp_proto", "n": spans(&proto)}),
            serde_json::json!({"service_name": "kafka-zipkin_json", "n": spans(&zipkin)}),
            serde_json::json!({"service_name": "kafka-zipkin_proto", "n": spans(&zipkin_proto)}),
        ]
    );
    assert!(
        server.committed().await.is_empty(),
        "committed before the flush age"
    );
    // A query node asking this node for what it has not committed sees the
    // Kafka partitions' buffers too.
    {
        let query_dir = tempfile::tempdir().unwrap();
        let root = format!("file://{}", data.path().display());
        let peer = server.http.to_string();
        let query = TestServer::start(
            query_dir.path(),
            &[
                "--role",
                "query",
                "--storage-url",
                &root,
                "--ingest-peers",
                &peer,
            ],
        )
        .await;
        let (per_service, n, distinct) = counts(&query).await;
        assert_eq!((n, distinct), (total, total), "{per_service:?}");
        let trace = jaeger["traces"][1].as_str().unwrap();
        let (status, body) = query.get(&format!("/api/v1/traces/{trace}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["spans"].as_array().unwrap().len(), 3, "{body}");
    }
    // A trace of each encoding through the trace API, whole, its spans
    // linked to their parents.
    for sent in [&proto, &json, &zipkin, &jaeger, &jaeger_json, &zipkin_proto] {
        let trace = sent["traces"][2].as_str().unwrap();
        let (status, body) = server.get(&format!("/api/v1/traces/{trace}")).await;
        assert_eq!(status, 200, "{body}");
        let names: std::collections::BTreeSet<&str> = body["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["charge", "checkout", "reserve"].into(),
            "{trace}: {body}"
        );
        let roots = body["spans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["parentSpanId"].is_null())
            .count();
        assert_eq!(roots, 1, "{trace}: {body}");
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "tracelake_kafka_bad_messages_total{topic=\"otlp_spans\",reason=\"undecodable\"}"
        ),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "tracelake_spans_accepted_total{protocol=\"kafka\"}"
        ),
        total as f64
    );
    // The bad messages are on the dead-letter topic, as they came, saying
    // why and whence.
    let dead = dead_letters(&python, &broker, 4).await;
    assert_eq!(
        metric(
            &metrics,
            "tracelake_kafka_dead_letters_total{topic=\"otlp_spans\",reason=\"undecodable\"}"
        ),
        4.0,
        "{metrics}"
    );
    let ready = server.ready_text().await;
    for partition in [
        "otlp_spans/0",
        "otlp_spans/2",
        "json_spans/0",
        "zipkin_spans/1",
    ] {
        assert!(
            ready.contains(&format!("kafka {partition}: consuming")),
            "{ready}"
        );
    }

    // A clean stop commits what is buffered; the next start resumes after
    // it: nothing consumed twice.
    server.terminate();
    let server = TestServer::start(data.path(), &args).await;
    assert_eq!(
        server.committed().await.values().sum::<u64>(),
        total,
        "not committed at the stop"
    );
    let more = produce(&python, &broker, "otlp_spans", "otlp_proto", 0x4000, 6, 0).await;
    wait_for(&server, total + spans(&more)).await;
    // Committed past them, the bad messages are not copied again.
    assert_eq!(dead_letters(&python, &broker, 4).await, dead);
    // A topic made while the receiver runs is consumed once the topics are
    // listed again (tansu cannot add partitions to a topic; the same
    // listing finds those).
    let before = server.ready_text().await;
    assert!(
        before.contains("kafka: Kafka topics late_spans do not exist"),
        "{before}"
    );
    create_topic(&python, &broker, "late_spans", 2).await;
    let late = produce(&python, &broker, "late_spans", "otlp_proto", 0x9000, 8, 0).await;
    wait_for(&server, total + spans(&more) + spans(&late)).await;
    let after = server.ready_text().await;
    assert!(
        after.contains("kafka late_spans/1: consuming") && !after.contains("do not exist"),
        "{after}"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "tracelake_spans_accepted_total{protocol=\"kafka\"}"
        ),
        (spans(&more) + spans(&late)) as f64,
        "messages consumed again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_before_or_just_after_a_commit_stores_every_message_once() {
    let (Some(tansu), Some(python)) = (tansu(), python()) else {
        return;
    };
    let broker = Broker::start(&tansu).await;
    create_topic(&python, &broker, "crash_spans", 2).await;
    let data = tempfile::tempdir().unwrap();
    let args = [
        "--kafka-brokers",
        broker.bootstrap.as_str(),
        "--kafka-topics",
        "crash_spans=otlp_proto",
        "--flush-max-age",
        "100ms",
    ];
    // Killed with a batch's files uploaded and its commit not made (the
    // second commit: one has landed), then right after a commit landed,
    // before the consumer heard of it; each time with more to consume.
    let mut sent = 0;
    for (first, fault) in [
        (0x1_0000, "kafka.commit=abort@2"),
        (0x2_0000, "kafka.committed=abort@1"),
    ] {
        let batch = produce(&python, &broker, "crash_spans", "otlp_proto", first, 120, 0).await;
        sent += batch["spans"].as_u64().unwrap();
        let mut with_fault = args.to_vec();
        with_fault.extend(["--fault-points", fault]);
        let mut server = TestServer::spawn_unready(data.path(), &with_fault);
        let status = server.wait_exit(Duration::from_secs(60)).await;
        assert!(!status.success(), "{fault}: the fault point did not abort");
    }
    // And killed -9 while consuming.
    let mut server = TestServer::start(data.path(), &args).await;
    let more = produce(
        &python,
        &broker,
        "crash_spans",
        "otlp_proto",
        0x4_0000,
        100,
        0,
    )
    .await;
    sent += more["spans"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    let server = TestServer::start(data.path(), &args).await;
    wait_for(&server, sent).await;
    // All in the table, none only in a buffer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.committed().await.values().sum::<u64>() != sent {
        assert!(Instant::now() < deadline, "not all committed in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two ingest nodes sharing the partitions of a topic and one table on S3
/// (moto): each stores its share once; when one stops and the other takes
/// every partition (`--kafka-member 0/1`), it resumes after what the first
/// committed; and when both consume the same partitions at once (a
/// configuration mistake), the table's offsets still keep every message
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_partitions_and_a_change_of_owner_duplicates_nothing() {
    let (Some(tansu), Some(python)) = (tansu(), python()) else {
        return;
    };
    let Some(moto) = crate::s3::Moto::with_bucket("kafka").await else {
        return;
    };
    let broker = Broker::start(&tansu).await;
    create_topic(&python, &broker, "shared_spans", 4).await;
    let storage = moto.storage_args("kafka");
    let node = |id: &'static str, member: &'static str| -> Vec<String> {
        storage
            .iter()
            .cloned()
            .chain(
                [
                    "--role",
                    "ingest,query",
                    "--node-id",
                    id,
                    "--kafka-brokers",
                    broker.bootstrap.as_str(),
                    "--kafka-topics",
                    "shared_spans=otlp_proto",
                    "--kafka-member",
                    member,
                    "--flush-max-age",
                    "200ms",
                ]
                .map(String::from),
            )
            .collect()
    };
    let start = |dir: &tempfile::TempDir, args: Vec<String>| {
        let dir = dir.path().to_path_buf();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            TestServer::start_with_env(&dir, &args, &crate::s3::CREDENTIALS).await
        }
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start(&dir_a, node("a", "0/2")).await;
    let mut b = start(&dir_b, node("b", "1/2")).await;
    let mut sent = 0;
    let batch = |first: u64| {
        let (python, broker) = (python.clone(), &broker);
        async move {
            produce(&python, broker, "shared_spans", "otlp_proto", first, 80, 0).await["spans"]
                .as_u64()
                .unwrap()
        }
    };
    sent += batch(0x1_0000).await;
    // Both committed their share: the table holds everything once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&a).await != sent {
        assert!(
            Instant::now() < deadline,
            "not committed by both nodes in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = reqwest::get(a.url("/ready"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ready.contains("kafka shared_spans/0: consuming")
            && ready.contains("kafka shared_spans/2: consuming")
            && !ready.contains("shared_spans/1"),
        "a owns partitions 0 and 2: {ready}"
    );

    // b stops; a takes every partition and resumes after b's offsets.
    b.terminate();
    a.terminate();
    sent += batch(0x2_0000).await;
    a = start(&dir_a, node("a", "0/1")).await;
    wait_for(&a, sent).await;

    // b comes back with its old share while a keeps all: partitions 1 and
    // 3 have two consumers. Whichever commits first wins; the other drops
    // what it buffered and fetches again after the winner's offset.
    b = start(&dir_b, node("b", "1/2")).await;
    for first in [0x3_0000, 0x4_0000, 0x5_0000] {
        sent += batch(first).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&a).await != sent {
        let now = committed(&a).await;
        assert!(
            now <= sent,
            "more spans committed than sent: {now} of {sent}"
        );
        assert!(Instant::now() < deadline, "not all committed in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.terminate();
    a.terminate();
    let a = start(&dir_a, node("a", "0/1")).await;
    let (per_service, n, distinct) = counts(&a).await;
    assert_eq!((n, distinct), (sent, sent), "{per_service:?}");
}

/// A consumer frozen between uploading its files and committing them (a
/// machine that stalls) while another consumer of the same partition
/// commits the very same offsets: when the first wakes, its commit fails
/// (Delta's conflict check: the same application id committed since its
/// snapshot), and on the retry the table holds exactly the offsets it
/// buffered, so its rows are stored already. It must neither commit them
/// again with its next offsets nor fetch them again. Deterministic: both
/// consumers start after every message of the first batch is on the
/// broker and flush only once they have fetched it all (`--flush-max-age`
/// 2 s), so both first commits end at the same offset; the second consumer
/// stops right after its commit. (A commit refused before it is tried,
/// `table::Error::Fenced` on a snapshot that already holds the other
/// consumer's offsets, takes the same decision in `Consumer::flush`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_frozen_at_its_commit_while_another_commits_the_same_offsets_stores_them_once() {
    let (Some(tansu), Some(python)) = (tansu(), python()) else {
        return;
    };
    let broker = Broker::start(&tansu).await;
    create_topic(&python, &broker, "frozen_spans", 1).await;
    let table = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", table.path().display());
    let node = |id: &'static str, fault: &'static str| -> Vec<String> {
        [
            "--storage-url",
            storage.as_str(),
            "--node-id",
            id,
            "--kafka-brokers",
            broker.bootstrap.as_str(),
            "--kafka-topics",
            "frozen_spans=otlp_proto",
            "--flush-max-age",
            "2s",
            "--fault-points",
            fault,
        ]
        .map(String::from)
        .to_vec()
    };
    let spawn = |dir: &tempfile::TempDir, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestServer::spawn_unready(dir.path(), &args)
    };
    let mut sent = produce(
        &python,
        &broker,
        "frozen_spans",
        "otlp_proto",
        0x1_0000,
        60,
        0,
    )
    .await["spans"]
        .as_u64()
        .unwrap();

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = spawn(&dir_a, node("a", "kafka.commit=stop@1x1"));
    a.until_stopped("a's first Kafka commit").await;
    let mut b = spawn(&dir_b, node("b", "kafka.committed=stop@1x1"));
    b.until_stopped("b's first Kafka commit landing").await;
    assert!(a.is_stopped(), "a ran on");

    a.resume();
    a.until_ready().await;
    // a's next commit holds only what follows: with the batch above kept
    // in its buffer, these would land with it, twice in the table.
    sent += produce(
        &python,
        &broker,
        "frozen_spans",
        "otlp_proto",
        0x2_0000,
        40,
        0,
    )
    .await["spans"]
        .as_u64()
        .unwrap();
    wait_for(&a, sent).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&a).await != sent {
        assert!(Instant::now() < deadline, "not all committed in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = a.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "tracelake_kafka_refetches_total{topic=\"frozen_spans\",partition=\"0\"}"
        ),
        0.0,
        "a found other offsets than its own in the table (the case under test did not \
         happen) or fetched again what the table holds"
    );
    // Everything committed, so the buffer is empty: the table alone holds
    // each span once.
    let (per_service, n, distinct) = counts(&a).await;
    assert_eq!((n, distinct), (sent, sent), "{per_service:?}");
    b.kill9();
}

/// Spans in the table (`/api/v1/storage`).
async fn committed(node: &TestServer) -> u64 {
    node.committed().await.values().sum()
}

/// `--kafka-tls`: the receiver reaches a broker over TLS, checking its
/// certificate against `--kafka-tls-ca-file`; against the system's roots
/// (which do not know the test's CA) it refuses the broker, says so in
/// `/ready`, and consumes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_reaches_brokers_over_tls_and_checks_their_certificates() {
    let (Some(tansu), Some(python)) = (tansu(), python()) else {
        return;
    };
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = crate::tls::Pki::new(pki_dir.path());
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_address = front.local_addr().unwrap().to_string();
    let broker = Broker::start_advertising(&tansu, Some(&tls_address)).await;
    let _front = tls_front(&pki, front, broker.bootstrap.clone());
    let ca = pki.arg("ca.pem");
    let tls_env = [("KAFKA_TLS_CA_FILE", ca.as_str())];
    kafka_py_at(
        &python,
        &tls_address,
        &tls_env,
        &["create", "tls_spans", "2"],
    )
    .await;
    let sent = kafka_py_at(
        &python,
        &tls_address,
        &tls_env,
        &["produce", "tls_spans", "otlp_proto", "0x7000", "8", "0"],
    )
    .await;
    let spans = sent["spans"].as_u64().unwrap();
    assert_eq!(spans, 24, "{sent}");

    let data = tempfile::tempdir().unwrap();
    let base = [
        "--kafka-brokers",
        tls_address.as_str(),
        "--kafka-topics",
        "tls_spans=otlp_proto",
        "--kafka-tls",
        "true",
    ];
    let mut with_ca = base.to_vec();
    with_ca.extend(["--kafka-tls-ca-file", ca.as_str()]);
    let server = TestServer::start(data.path(), &with_ca).await;
    wait_for(&server, spans).await;
    drop(server);

    // Without the CA: the broker's certificate is refused.
    let other = tempfile::tempdir().unwrap();
    let server = TestServer::start(other.path(), &base).await;
    let ready = broker_refused(&server).await;
    assert!(ready.to_lowercase().contains("certificate"), "{ready}");
    let (_, n, _) = counts(&server).await;
    assert_eq!(
        n, 0,
        "spans consumed from a broker whose certificate was not checked"
    );
}

/// Waits up to 60 s for `/ready` to say the brokers cannot be reached, and
/// returns what it says.
async fn broker_refused(server: &TestServer) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = server.ready_text().await;
        if ready.contains("kafka: cannot reach the Kafka brokers") {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "no broker refused within 60 s: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `--kafka-sasl-username` with `TRACELAKE_KAFKA_SASL_PASSWORD`: the
/// receiver authenticates with SASL/PLAIN to a broker that requires it
/// ([`sasl_front`] before tansu) and consumes everything; with a wrong
/// password, or without SASL, the broker refuses it, `/ready` says so,
/// and nothing is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_authenticates_with_sasl_plain() {
    let (Some(tansu), Some(python)) = (tansu(), python()) else {
        return;
    };
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = front.local_addr().unwrap().to_string();
    let broker = Broker::start_advertising(&tansu, Some(&address)).await;
    let (_front, seen) = sasl_front(front, broker.bootstrap.clone(), "tracelake", "s3cret");
    let sasl_env = [
        ("KAFKA_SASL_USERNAME", "tracelake"),
        ("KAFKA_SASL_PASSWORD", "s3cret"),
    ];
    kafka_py_at(&python, &address, &sasl_env, &["create", "sasl_spans", "2"]).await;
    let sent = kafka_py_at(
        &python,
        &address,
        &sasl_env,
        &["produce", "sasl_spans", "otlp_proto", "0x7100", "8", "0"],
    )
    .await;
    let spans = sent["spans"].as_u64().unwrap();
    assert_eq!(spans, 24, "{sent}");
    assert!(
        seen.passed.load(Ordering::SeqCst) >= 2,
        "the producer did not authenticate"
    );
    let before = seen.passed.load(Ordering::SeqCst);

    let args = [
        "--kafka-brokers",
        address.as_str(),
        "--kafka-topics",
        "sasl_spans=otlp_proto",
        "--kafka-sasl-username",
        "tracelake",
    ];
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_env(
        data.path(),
        &args,
        &[("TRACELAKE_KAFKA_SASL_PASSWORD", "s3cret")],
    )
    .await;
    wait_for(&server, spans).await;
    assert!(seen.passed.load(Ordering::SeqCst) > before);
    drop(server);

    // A wrong password: SASL_AUTHENTICATION_FAILED.
    let failed = seen.failed.load(Ordering::SeqCst);
    let other = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_env(
        other.path(),
        &args,
        &[("TRACELAKE_KAFKA_SASL_PASSWORD", "wrong")],
    )
    .await;
    let ready = broker_refused(&server).await;
    assert!(ready.to_lowercase().contains("sasl"), "{ready}");
    assert!(seen.failed.load(Ordering::SeqCst) > failed);
    let (_, n, _) = counts(&server).await;
    assert_eq!(n, 0, "spans consumed with a wrong password");
    drop(server);

    // No SASL: the broker closes the connection at the first request.
    let unauthenticated = seen.unauthenticated.load(Ordering::SeqCst);
    let third = tempfile::tempdir().unwrap();
    let server = TestServer::start(third.path(), &args[..4]).await;
    broker_refused(&server).await;
    assert!(seen.unauthenticated.load(Ordering::SeqCst) > unauthenticated);
    let (_, n, _) = counts(&server).await;
    assert_eq!(n, 0, "spans consumed without authenticating");
}

/// Backpressure: with `--max-buffer-bytes` below what one fetch brings, a
/// partition stops fetching once it holds rows, until their commit empties
/// its buffer: the rest waits on the broker as lag. The record batches
/// (four producer runs, or more) are larger than the fetch limit, so tansu
/// sends nothing until the receiver widens the fetch; none is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_pauses_while_the_buffered_rows_are_over_the_limit() {
    let (Some(tansu), Some(python)) = (tansu(), python()) else {
        return;
    };
    let broker = Broker::start(&tansu).await;
    create_topic(&python, &broker, "slow_spans", 1).await;
    let mut spans = 0;
    for run in 0..4 {
        let sent = produce(
            &python,
            &broker,
            "slow_spans",
            "otlp_proto",
            0x7200 + run * 16,
            10,
            0,
        )
        .await;
        spans += sent["spans"].as_u64().unwrap();
    }
    assert_eq!(spans, 120);

    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        data.path(),
        &[
            "--kafka-brokers",
            &broker.bootstrap,
            "--kafka-topics",
            "slow_spans=otlp_proto",
            "--kafka-fetch-max-bytes",
            "512",
            "--max-buffer-bytes",
            "1",
            "--flush-max-age",
            "2s",
        ],
    )
    .await;
    // The first pause comes right after the first fetch: a batch is
    // buffered and the rest is still on the broker.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let metrics = server.metrics().await;
        if metric(&metrics, "tracelake_kafka_fetch_pauses_total") > 0.0 {
            break metrics;
        }
        assert!(Instant::now() < deadline, "no pause within 60 s: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lag = metric(
        &metrics,
        "tracelake_kafka_lag{topic=\"slow_spans\",partition=\"0\"}",
    );
    assert!(
        lag > 0.0,
        "paused with nothing left on the broker: {metrics}"
    );
    let (_, visible, _) = counts(&server).await;
    assert!(visible < spans, "all {visible} spans fetched at once");

    wait_for(&server, spans).await;
}
