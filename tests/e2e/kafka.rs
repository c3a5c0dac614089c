//! The Kafka receiver against a real Kafka-compatible broker (tansu, on
//! loopback, in memory) and a real Kafka client producing what the
//! OpenTelemetry SDK's encoders make (`tests/python/kafka_produce.py`).

use std::process::Stdio;
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = procs::Guard::spawn(
            std::process::Command::new(binary)
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kafka_produce.py");
    crate::procs::json_output(
        tokio::process::Command::new(python)
            .arg(script)
            .arg(&broker.bootstrap)
            .args(args),
    )
    .await
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

fn python() -> Option<String> {
    python_with(
        "kafka, opentelemetry.exporter.otlp.proto.common, opentelemetry.exporter.zipkin.json",
        "kafka-python opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-zipkin-json",
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
    let data = tempfile::tempdir().unwrap();
    let topics = "otlp_spans=otlp_proto,json_spans=otlp_json,zipkin_spans=zipkin_json,\
                  jaeger_spans=jaeger_proto,jaeger_json_spans=jaeger_json";
    let args = [
        "--kafka-brokers",
        broker.bootstrap.as_str(),
        "--kafka-topics",
        topics,
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
    assert_eq!(proto["bad"], 4);
    let spans = |v: &Value| v["spans"].as_u64().unwrap();
    let total: u64 = [&proto, &json, &zipkin, &jaeger, &jaeger_json]
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
    for sent in [&proto, &json, &zipkin, &jaeger, &jaeger_json] {
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
    let ready = reqwest::get(server.url("/ready"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "tracelake_spans_accepted_total{protocol=\"kafka\"}"
        ),
        spans(&more) as f64,
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
        assert!(
            committed(&a).await <= sent,
            "more spans committed than sent"
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

/// Spans in the table (`/api/v1/storage`).
async fn committed(node: &TestServer) -> u64 {
    node.committed().await.values().sum()
}
