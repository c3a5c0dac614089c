//! A full disk: ingest answers 503 with Retry-After and acknowledges
//! nothing it could not make durable, queries keep working, nothing already
//! acknowledged is lost or stored twice, and ingest resumes by itself once
//! space returns. On a real size-limited filesystem (tmpfs) and through the
//! binary's fault points (a failed WAL write, a failed fsync, a failed
//! upload of a Parquet file).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::server::TestServer;
use crate::spans::{request, span};

/// Posts one OTLP request of `n` spans of `trace` starting at span id
/// `first`; returns the status and the Retry-After header.
async fn post(server: &TestServer, trace: u128, first: u64, n: u64) -> (u16, Option<String>) {
    let spans = (first..first + n).map(|i| span(trace, i)).collect();
    let r = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .body(request("disk", spans).encode_to_vec())
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry)
}

/// The span ids stored for `trace`, failing on any duplicate.
async fn stored(server: &TestServer, trace: u128) -> BTreeSet<u64> {
    let rows = server
        .sql(&format!(
            "SELECT span_id FROM spans WHERE trace_id = X'{}'",
            hex::encode(trace.to_be_bytes())
        ))
        .await;
    let mut ids = BTreeSet::new();
    for row in rows {
        let id = u64::from_str_radix(row["span_id"].as_str().unwrap(), 16).unwrap();
        assert!(ids.insert(id), "span {id} is stored twice");
    }
    ids
}

/// Every acknowledged span is stored exactly once; spans of refused
/// requests may be stored (at least once delivery), but never twice.
fn assert_kept(acked: &BTreeSet<u64>, stored: &BTreeSet<u64>) {
    let lost: Vec<_> = acked.difference(stored).collect();
    assert!(lost.is_empty(), "acknowledged spans lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_write_is_refused_cut_off_and_then_ingest_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // The 3rd, 4th and 5th appends fail half-way through their record.
    let args = ["--fault-points", "wal.write=enospc@3x3"];
    let mut server = TestServer::start(dir.path(), &args).await;
    let trace = 0xd15c_f011;
    let mut acked = BTreeSet::new();
    let mut statuses = Vec::new();
    for i in 0..8u64 {
        let (status, retry) = post(&server, trace, i * 10 + 1, 10).await;
        statuses.push(status);
        match status {
            200 => acked.extend(i * 10 + 1..i * 10 + 11),
            503 => assert_eq!(retry.as_deref(), Some("1")),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(statuses, [200, 200, 503, 503, 503, 200, 200, 200]);
    // Queries keep working and see exactly what was acknowledged.
    assert_eq!(stored(&server, trace).await, acked);
    // The cut-off records are gone from the log: a crash and a replay
    // bring back exactly the acknowledged spans.
    server.kill9();
    let server = TestServer::start(dir.path(), &[]).await;
    assert_eq!(stored(&server, trace).await, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_never_acknowledged_and_later_records_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--fault-points", "wal.fsync=eio@3x2"];
    let mut server = TestServer::start(dir.path(), &args).await;
    let trace = 0xf5_c0_00;
    let mut acked = BTreeSet::new();
    let mut refused = 0;
    for i in 0..8u64 {
        let (status, retry) = post(&server, trace, i * 10 + 1, 10).await;
        match status {
            200 => acked.extend(i * 10 + 1..i * 10 + 11),
            503 => {
                assert_eq!(retry.as_deref(), Some("1"));
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused >= 1, "no request was refused");
    assert!(
        acked.len() >= 50,
        "too few requests acknowledged: {acked:?}"
    );
    assert_kept(&acked, &stored(&server, trace).await);
    server.kill9();
    let server = TestServer::start(dir.path(), &[]).await;
    assert_kept(&acked, &stored(&server, trace).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_keep_the_rows_until_storage_works_again() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--fault-points",
        "flush.put=enospcx3",
        "--flush-max-age",
        "1s",
    ];
    let server = TestServer::start(dir.path(), &args).await;
    let trace = 0x0b_1ec7;
    for i in 0..3u64 {
        assert_eq!(post(&server, trace, i * 10 + 1, 10).await.0, 200);
    }
    let acked: BTreeSet<u64> = (1..=30).collect();
    // Three flushes fail (the rows stay buffered and queryable), then one
    // commits them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert_eq!(stored(&server, trace).await, acked);
        if committed_rows(&server).await == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "the rows were never committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rows in the table's committed files (`/api/v1/storage`).
async fn committed_rows(server: &TestServer) -> u64 {
    let (status, body) = server.get("/api/v1/storage").await;
    assert_eq!(status, 200, "{body}");
    body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows"].as_u64().unwrap())
        .sum()
}

/// A tmpfs of `size` mounted at `path` until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self(path.to_path_buf())),
            other => {
                crate::skip::skip(&format!(
                    "cannot mount a tmpfs here (needs root): {other:?}"
                ));
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` until a write fails; returns the file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ingest_keeps_queries_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("fs"), "24m") else {
        return;
    };
    let data = fs.0.join("data");
    let args = ["--flush-max-age", "1s", "--wal-segment-bytes", "1048576"];
    let mut server = TestServer::start(&data, &args).await;
    let trace = 0x00f1_11ed;
    let mut acked = BTreeSet::new();
    assert_eq!(post(&server, trace, 1, 50).await.0, 200);
    acked.extend(1..51);

    let filler = fill(&fs.0);
    // Every request is refused now, with a hint to retry.
    let mut next = 51;
    let mut refused = 0;
    for _ in 0..5 {
        let (status, retry) = post(&server, trace, next, 50).await;
        match status {
            200 => acked.extend(next..next + 50),
            503 => {
                assert_eq!(retry.as_deref(), Some("1"));
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
        next += 50;
    }
    assert!(
        refused >= 4,
        "only {refused} of 5 requests refused on a full disk"
    );
    // Flushes fail too meanwhile (Parquet files cannot be written); reads
    // go on and see what was acknowledged.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_kept(&acked, &stored(&server, trace).await);
    let (status, _) = server.get("/ready").await;
    assert_eq!(status, 200);

    // Space returns: ingest resumes by itself, flushes catch up.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = post(&server, trace, next, 50).await;
        if status == 200 {
            acked.extend(next..next + 50);
            next += 50;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingest did not resume ({status})"
        );
        next += 50;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..3 {
        assert_eq!(post(&server, trace, next, 50).await.0, 200);
        acked.extend(next..next + 50);
        next += 50;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_rows(&server).await < acked.len() as u64 {
        assert!(Instant::now() < deadline, "flushes did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_kept(&acked, &stored(&server, trace).await);
    // And a crash now loses nothing either.
    server.kill9();
    let server = TestServer::start(&data, &[]).await;
    assert_kept(&acked, &stored(&server, trace).await);
    drop(server);
}
