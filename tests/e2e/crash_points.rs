//! A crash at each dangerous point of the write path, made exact by the
//! binary's fault points (`--fault-points POINT=abort`, debug builds only):
//! files uploaded but not committed, committed but the WAL not released, in
//! the middle of a compaction's commit, of retention's commit, and before
//! vacuum. After each crash and a restart every acknowledged span is stored
//! exactly once (spans of the expired partition at most once: retention may
//! have removed them), and no query run before the crash saw a span twice or
//! missed an acknowledged one (`watch`, over the spans retention keeps).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::server::TestServer;
use crate::spans::{request, span};

const HOUR_NS: u64 = 3_600_000_000_000;

/// Spans `first..first + n` of trace `trace`, moved `ago_ns` into the past.
fn spans_ago(
    trace: u128,
    first: u64,
    n: u64,
    ago_ns: u64,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    (first..first + n)
        .map(|i| {
            let mut s = span(trace, i);
            s.start_time_unix_nano -= ago_ns;
            s.end_time_unix_nano -= ago_ns;
            s
        })
        .collect()
}

/// Posts `spans`; true when acknowledged, false when the server is gone.
async fn send(
    server: &TestServer,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> bool {
    let r = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .body(request("crash-points", spans).encode_to_vec())
        .send()
        .await;
    match r {
        Ok(r) if r.status() == 200 => true,
        Ok(r) => panic!("unexpected status {}", r.status()),
        Err(_) => false,
    }
}

/// Committed rows, or `None` when the server did not answer (it may abort
/// at any moment here).
async fn committed_rows(server: &TestServer) -> Option<u64> {
    let r = reqwest::get(server.url("/api/v1/storage")).await.ok()?;
    let body: serde_json::Value = r.json().await.ok()?;
    body["rows"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_commit_point_loses_and_duplicates_nothing() {
    let points = [
        "flush.commit",
        "flush.release",
        "compact.commit",
        "compact.committed",
        "retention.commit",
        "retention.committed",
        "vacuum",
    ];
    let mut answers = 0;
    for point in points {
        eprintln!("crash point {point}");
        let dir = tempfile::tempdir().unwrap();
        let fault = format!("{point}=abort");
        let settings = [
            "--flush-max-age",
            "300ms",
            "--max-span-age",
            "3650d",
            "--compaction-interval",
            "300ms",
            "--compaction-delay",
            "0s",
            "--retention",
            "1d",
            "--retention-check-interval",
            "300ms",
            "--vacuum-grace",
            "0s",
        ];
        let mut args = vec!["--fault-points", fault.as_str()];
        args.extend(settings);
        let mut server = TestServer::start(dir.path(), &args).await;
        // Acknowledged spans that retention keeps, for the watching query.
        let kept = Arc::new(AtomicU64::new(0));
        let watch = crate::watch::Watch::start(
            server.url("/api/v1/sql"),
            "service_name = 'crash-points' AND trace_id <> X'000000000000000000000000000000e1'",
            "encode(trace_id, 'hex') || encode(span_id, 'hex')",
            Arc::clone(&kept),
        );
        // trace -> (span ids acknowledged, may retention remove them)
        let mut acked: BTreeMap<u128, (Vec<u64>, bool)> = BTreeMap::new();
        let batches = [
            (0xc1, spans_ago(0xc1, 1, 20, 2 * HOUR_NS), false), // a closed hour
            (0xe1, spans_ago(0xe1, 1, 20, 72 * HOUR_NS), true), // expired
            (0x01, spans_ago(0x01, 1, 20, 0), false),           // this hour
        ];
        for (trace, spans, expires) in batches {
            let ids: Vec<u64> = (1..=20).collect();
            if send(&server, spans).await {
                if !expires {
                    kept.fetch_add(ids.len() as u64, Ordering::SeqCst);
                }
                acked.insert(trace, (ids, expires));
            }
        }
        // A second file in the closed hour, so that compaction has work.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut exited = None;
        loop {
            if let Some(status) = server.try_exit() {
                exited = Some(status);
                break;
            }
            if committed_rows(&server).await.is_some_and(|r| r > 0) {
                break;
            }
            assert!(Instant::now() < deadline, "{point}: nothing was flushed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if exited.is_none() && send(&server, spans_ago(0xc2, 1, 20, 2 * HOUR_NS)).await {
            kept.fetch_add(20, Ordering::SeqCst);
            acked.insert(0xc2, ((1..=20).collect(), false));
        }
        let status = match exited {
            Some(status) => status,
            None => server.wait_exit(Duration::from_secs(60)).await,
        };
        let seen = watch.finish().await;
        eprintln!("crash point {point}: the watching query saw {seen:?}");
        assert!(
            seen.violations.is_empty(),
            "{point}: a query saw a duplicate or missed a row: {:?}",
            seen.violations
        );
        answers += seen.answers;
        assert_eq!(
            status.signal(),
            Some(6),
            "{point}: the server did not abort there: {status}"
        );

        let server = TestServer::start(dir.path(), &settings).await;
        // Watched again after the restart, while the restarted server
        // compacts and expires what the crash left.
        let watch = crate::watch::Watch::start(
            server.url("/api/v1/sql"),
            "service_name = 'crash-points' AND trace_id <> X'000000000000000000000000000000e1'",
            "encode(trace_id, 'hex') || encode(span_id, 'hex')",
            Arc::clone(&kept),
        );
        let rows = server
            .sql("SELECT trace_id, span_id FROM spans WHERE service_name = 'crash-points'")
            .await;
        let mut stored: BTreeMap<(String, String), usize> = BTreeMap::new();
        for row in &rows {
            let key = (
                row["trace_id"].as_str().unwrap().to_string(),
                row["span_id"].as_str().unwrap().to_string(),
            );
            *stored.entry(key).or_default() += 1;
        }
        let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(
            twice.is_empty(),
            "{point}: stored more than once: {twice:?}"
        );
        for (trace, (ids, expires)) in &acked {
            if *expires {
                continue;
            }
            for id in ids {
                let key = (
                    hex::encode(trace.to_be_bytes()),
                    hex::encode(id.to_be_bytes()),
                );
                assert!(
                    stored.contains_key(&key),
                    "{point}: acknowledged span {key:?} lost"
                );
            }
        }
        let seen = watch.finish().await;
        assert!(
            seen.violations.is_empty(),
            "{point}, after the restart: a query saw a duplicate or missed a row: {:?}",
            seen.violations
        );
        answers += seen.answers;
        eprintln!(
            "crash point {point}: {} rows after the restart, none lost or doubled",
            rows.len()
        );
    }
    assert!(answers > 0, "the watching query was never answered");
}

/// A commit that lands although its caller hears of a failure (the store's
/// answer lost on the way back): the flush must not put its rows back, or
/// the next flush stores them a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_stores_its_rows_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--fault-points",
            "flush.answer=eiox1",
            "--flush-max-age",
            "300ms",
        ],
    )
    .await;
    assert!(send(&server, spans_ago(0xa1, 1, 20, 0)).await);
    // The first flush's commit lands and "fails"; then more spans, flushed
    // by the next.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(send(&server, spans_ago(0xa2, 1, 20, 0)).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_rows(&server).await != Some(40) {
        assert!(
            Instant::now() < deadline,
            "committed rows: {:?} (40 sent)",
            committed_rows(&server).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(committed_rows(&server).await, Some(40));
    let rows = server
        .sql(
            "SELECT count(*) AS n, count(DISTINCT encode(trace_id, 'hex') || \
             encode(span_id, 'hex')) AS d FROM spans",
        )
        .await;
    assert_eq!(rows, vec![serde_json::json!({"n": 40, "d": 40})]);
    // The fault did fire, and the landed commit was recognised.
    let metrics = server.metrics().await;
    assert_eq!(
        crate::server::metric(&metrics, "tracelake_commits_landed_after_error_total"),
        1.0,
        "{metrics}"
    );
}
