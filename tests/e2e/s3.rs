//! Tables on an S3-compatible object store: moto's server, started by the
//! test on loopback (it honours conditional writes, which commits rely on,
//! as AWS S3 does). Ingest, flush, compaction, retention and vacuum run
//! against the bucket; trace by id and SQL read from it; and a server
//! started afterwards on an empty local directory finds every tenant's
//! table in the bucket and serves the same spans. Settings that would make
//! commits unsafe are refused at start, by name.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::procs;
use crate::server::{TestServer, python_with};
use crate::spans::{request, span};

pub(crate) const HOUR_NS: u64 = 3_600_000_000_000;

pub(crate) struct Moto {
    _child: procs::Guard,
    pub(crate) endpoint: String,
    python: String,
}

impl Moto {
    pub(crate) async fn start(python: &str) -> Self {
        let port = crate::server::free_port().port();
        let child = procs::Guard::spawn(
            std::process::Command::new(python)
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "moto",
        )
        .expect("moto's server starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(&endpoint).await.is_err() {
            assert!(Instant::now() < deadline, "moto not up within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            _child: child,
            endpoint,
            python: python.to_string(),
        }
    }

    /// A server with bucket `bucket`, or `None` (the test skips) without
    /// moto's Python packages.
    pub(crate) async fn with_bucket(bucket: &str) -> Option<Self> {
        let python = python_with("moto.server, boto3", "moto[s3] flask flask-cors")?;
        let moto = Moto::start(&python).await;
        moto.bucket("create", bucket).await;
        Some(moto)
    }

    /// The settings that put a server's tables at `s3://bucket/t` here.
    pub(crate) fn storage_args(&self, bucket: &str) -> Vec<String> {
        [
            "--storage-url",
            &format!("s3://{bucket}/t"),
            "--s3-endpoint",
            &self.endpoint,
            "--s3-path-style",
            "true",
        ]
        .map(String::from)
        .to_vec()
    }

    pub(crate) async fn bucket(&self, command: &str, bucket: &str) -> Vec<String> {
        self.bucket_with(command, bucket, &[]).await
    }

    /// Every file under `dir` into `bucket`, at `prefix/<its relative path>`.
    pub(crate) async fn upload(&self, bucket: &str, dir: &std::path::Path, prefix: &str) {
        self.bucket_with("upload", bucket, &[dir.to_str().unwrap(), prefix])
            .await;
    }

    async fn bucket_with(&self, command: &str, bucket: &str, more: &[&str]) -> Vec<String> {
        let script = crate::checkout("tests/python/s3_bucket.py");
        let script = script.to_str().unwrap();
        let out = procs::output(
            tokio::process::Command::new(&self.python)
                .args([script, &self.endpoint, command, bucket])
                .args(more),
        )
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

pub(crate) fn spans_ago(
    trace: u128,
    ids: std::ops::Range<u64>,
    ago_ns: u64,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    ids.map(|i| {
        let mut s = span(trace, i);
        s.start_time_unix_nano -= ago_ns;
        s.end_time_unix_nano -= ago_ns;
        s
    })
    .collect()
}

pub(crate) const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_live_on_s3() {
    let Some(python) = python_with("moto.server, boto3", "moto[s3] flask flask-cors") else {
        return;
    };
    let moto = Moto::start(&python).await;
    moto.bucket("create", "spans").await;
    let settings = [
        "--storage-url",
        "s3://spans/tracelake",
        "--s3-endpoint",
        moto.endpoint.as_str(),
        "--s3-path-style",
        "true",
        "--node-id",
        "n1",
        "--max-span-age",
        "3650d",
        "--flush-max-age",
        "200ms",
        "--compaction-interval",
        "300ms",
        "--compaction-delay",
        "0s",
        "--retention",
        "1d",
        "--retention-check-interval",
        "300ms",
        // Longer than a compaction takes on a loaded machine (a job that
        // outlasts it is not committed).
        "--vacuum-grace",
        "8s",
    ];
    let data = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_with_env(data.path(), &settings, &CREDENTIALS).await;
    // A closed hour in two flushes (compaction merges them), this hour, an
    // expired day, and a second tenant.
    server
        .export(&request("s3", spans_ago(0xa1, 1..6, 2 * HOUR_NS)))
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    server
        .export(&request("s3", spans_ago(0xa1, 6..11, 2 * HOUR_NS)))
        .await;
    server
        .export(&request("s3", spans_ago(0xb1, 1..4, 0)))
        .await;
    server
        .export(&request("s3", spans_ago(0xe1, 1..4, 72 * HOUR_NS)))
        .await;
    let r = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .header("x-scope-orgid", "team-b")
        .body(prost::Message::encode_to_vec(&request(
            "s3-b",
            spans_ago(0xc1, 1..3, 0),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Committed, compacted, expired and vacuumed, all on the bucket.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, storage) = server.get("/api/v1/storage").await;
        assert_eq!(status, 200, "{storage}");
        let partitions = storage["partitions"].as_array().unwrap().clone();
        let keys = moto.bucket("list", "spans").await;
        let stored: Vec<&String> = keys
            .iter()
            .filter(|k| {
                k.starts_with("tracelake/tenants/default/spans/date=") && k.ends_with(".parquet")
            })
            .collect();
        let in_table: usize = partitions
            .iter()
            .map(|p| p["files"].as_u64().unwrap() as usize)
            .sum();
        let rows: u64 = partitions.iter().map(|p| p["rows"].as_u64().unwrap()).sum();
        let done = rows == 13
            && partitions.len() == 2
            && partitions.iter().all(|p| p["compacted"] == true)
            && partitions
                .iter()
                .any(|p| p["rows"] == 10 && p["files"] == 1)
            && stored.len() == in_table;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled within 60 s: {partitions:?}, objects {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read_back = |server: &TestServer| {
        let server_url = server.url("");
        async move {
            let get = |path: String| {
                let url = format!("{server_url}{path}");
                async move {
                    let r = reqwest::get(url).await.unwrap();
                    (
                        r.status().as_u16(),
                        r.json::<serde_json::Value>().await.unwrap_or_default(),
                    )
                }
            };
            let (status, trace) = get(format!("/api/v1/traces/{:032x}", 0xa1u128)).await;
            assert_eq!(status, 200, "{trace}");
            assert_eq!(trace["spans"].as_array().unwrap().len(), 10);
            let (status, _) = get(format!("/api/v1/traces/{:032x}", 0xe1u128)).await;
            assert_eq!(status, 404, "expired");
        }
    };
    read_back(&server).await;
    let rows = server
        .sql("SELECT count(*) AS n, count(DISTINCT trace_id) AS traces FROM spans")
        .await;
    assert_eq!(rows, vec![serde_json::json!({"n": 13, "traces": 2})]);
    let metrics = server.metrics().await;
    assert!(
        crate::server::metric(&metrics, "tracelake_files_vacuumed_total") >= 1.0,
        "{metrics}"
    );

    // A node with nothing on its disk serves the same tables, and opens
    // every tenant's at start (found in the bucket: the storage URL has no
    // trailing slash, and `tenants/` is under its last segment).
    server.terminate();
    let empty = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_env(empty.path(), &settings, &CREDENTIALS).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("tenant=\"team-b\""),
        "team-b not opened at start: {metrics}"
    );
    read_back(&server).await;
    let r = reqwest::Client::new()
        .post(server.url("/api/v1/sql"))
        .header("x-scope-orgid", "team-b")
        .json(&serde_json::json!({"sql": "SELECT count(*) AS n FROM spans"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["rows"], serde_json::json!([{"n": 2}]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_make_s3_commits_unsafe_are_refused() {
    for (name, value) in [
        ("AWS_S3_ALLOW_UNSAFE_RENAME", "true"),
        ("AWS_S3_LOCKING_PROVIDER", "dynamodb"),
        ("AWS_CONDITIONAL_PUT", "disabled"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let out = procs::output(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelake"))
                .args(["serve", "--storage-url", "s3://spans/t", "--data-dir"])
                .arg(data.path())
                .env(name, value),
        )
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(name) && stderr.contains("not supported"),
            "{stderr}"
        );
    }
    let out = procs::output(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tracelake")).args([
            "serve",
            "--storage-url",
            "gs://bucket/t",
        ]),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gs:// is not supported"), "{stderr}");
}

/// The guarantee commits rest on, in its hard case: two writers of one
/// table commit at the same moment, over and over, so that they race for
/// the same log version. The store lets exactly one put the entry
/// (put-if-absent); delta-rs re-reads the log, finds the other commit does
/// not conflict (each replaces a file of its own partition) and commits at
/// the next version. No commit is lost: at the end each partition holds
/// exactly the file of its last replacement, and the log has one version
/// per commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_on_s3_each_land_once() {
    use std::sync::Arc;

    use tracelake_collector::metrics::Metrics;
    use tracelake_collector::s3::{S3Settings, register};
    use tracelake_collector::table::Table;
    use tracelake_collector::writer::{Stats, add_action};

    let Some(python) = python_with("moto.server, boto3", "moto[s3] flask flask-cors") else {
        return;
    };
    let moto = Moto::start(&python).await;
    moto.bucket("create", "race").await;
    register(S3Settings {
        endpoint: Some(moto.endpoint.clone()),
        region: Some("us-east-1".into()),
        path_style: true,
        credentials: Some(("test".into(), "test".into())),
    });
    let url = url::Url::parse("s3://race/t/spans/").unwrap();
    let open = || Table::open_or_create(&url, Arc::new(Metrics::default()));
    let file = |hour: u32, n: usize| {
        add_action(
            &format!("date=2026-12-01/hour={hour:02}/f{n}.parquet"),
            100,
            &Stats::default(),
        )
    };
    let a = open().await.unwrap();
    let first = a.commit(vec![file(1, 0), file(2, 0)], 1).await.unwrap();
    let b = open().await.unwrap();
    const ROUNDS: usize = 20;
    let replace = |table: Table, hour: u32| async move {
        for n in 1..=ROUNDS {
            let old = format!("date=2026-12-01/hour={hour:02}/f{}.parquet", n - 1);
            let done = table
                .replace(&[old], vec![file(hour, n)], &|| true)
                .await
                .unwrap();
            assert!(
                done.is_some(),
                "hour {hour} round {n}: the file left the table"
            );
        }
        table
    };
    let (a, b) = tokio::join!(tokio::spawn(replace(a, 1)), tokio::spawn(replace(b, 2)));
    let (a, _b) = (a.unwrap(), b.unwrap());
    // One version per commit: nothing overwrote anything.
    let reader = open().await.unwrap();
    assert_eq!(reader.version().await, Some(first + 2 * ROUNDS as i64));
    let mut files: Vec<String> = reader
        .files()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            format!("date=2026-12-01/hour=01/f{ROUNDS}.parquet"),
            format!("date=2026-12-01/hour=02/f{ROUNDS}.parquet"),
        ]
    );
    drop(a);
}
