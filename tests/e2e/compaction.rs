//! Compaction of closed hour partitions, and trace-by-id pruning: a lookup
//! touches only the files whose trace-key range can hold the trace.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{TestServer, metric};
use crate::spans::{request, span};

const HOUR_NS: u64 = 3_600_000_000_000;

fn trace_id(i: u128) -> u128 {
    // Spread over the key space (the low half), as real ids are.
    (i << 64) | u128::from((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Files of the plan's Parquet scans, from `EXPLAIN`.
async fn files_scanned(server: &TestServer, sql: &str) -> usize {
    let plan = server
        .plan(&format!("EXPLAIN {sql}"), "physical_plan")
        .await;
    plan.lines()
        .filter(|l| l.contains("DataSourceExec") && l.contains("file_groups"))
        .map(|l| l.matches(".parquet").count())
        .sum()
}

/// Each thread's nice value by its name (`comm`, 15 characters at most).
fn thread_nices(pid: u32) -> std::collections::HashMap<String, i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            // Fields from the third on; nice is the 19th.
            let nice = rest.split(' ').nth(16)?.parse().ok()?;
            Some((comm.to_string(), nice))
        })
        .collect()
}

async fn storage(server: &TestServer) -> Value {
    let (status, body) = server.get("/api/v1/storage").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_hours_are_compacted_into_disjoint_files_and_lookups_touch_one() {
    let data = tempfile::tempdir().unwrap();
    let args = [
        "--flush-max-age",
        "50ms",
        "--compaction-interval",
        "200ms",
        "--compaction-delay",
        "0s",
        // Every written batch (2,048 rows) closes a file.
        "--compaction-target-bytes",
        "1",
        // Long enough for a read of the version before a compaction
        // to finish its files (with 0s a trace read racing the
        // vacuum found its file gone: a 500 seen in CI-like runs),
        // short enough for the vacuum check below.
        "--vacuum-grace",
        "2s",
        "--retention-check-interval",
        "300ms",
    ];
    let mut server = TestServer::start(data.path(), &args).await;
    // The compaction thread runs below the server's priority (the default
    // --compaction-nice 10); the threads that receive spans do not.
    let nices = thread_nices(server.pid());
    assert_eq!(nices.get("tracelake-compa"), Some(&10), "{nices:?}");
    assert_eq!(nices.get("tracelake"), Some(&0), "{nices:?}");
    // Half past the hour, `hours` hours before the start of the hour the
    // test began in: fixed for the whole test, so a clock hour turning
    // during the setup cannot split a round over two partitions.
    let anchor = crate::spans::now_nanos() / HOUR_NS * HOUR_NS + HOUR_NS / 2;
    let hours_ago = move |hours: u64, mut s: opentelemetry_proto::tonic::trace::v1::Span| {
        let duration = s.end_time_unix_nano - s.start_time_unix_nano;
        s.start_time_unix_nano = anchor - hours * HOUR_NS;
        s.end_time_unix_nano = s.start_time_unix_nano + duration;
        s
    };
    // Six flushes' worth of traces in two closed hours, each its own file.
    let (rounds, traces_per_round, spans_per_trace) = (6u128, 100u128, 10u64);
    for round in 0..rounds {
        let hours = 2 + (round % 2) as u64;
        let spans: Vec<_> = (0..traces_per_round)
            .flat_map(|t| {
                let trace = trace_id(round * traces_per_round + t + 1);
                (1..=spans_per_trace).map(move |s| hours_ago(hours, span(trace, s)))
            })
            .collect();
        server
            .export(&request(&format!("svc-{round}"), spans))
            .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let total = (rounds * traces_per_round) as u64 * spans_per_trace;
    let probe = trace_id(7);
    let before = server.get(&format!("/api/v1/traces/{probe:032x}")).await;
    assert_eq!(before.0, 200, "{before:?}");

    // Every data file has its trace keys persisted beside it; the vacuum
    // deletes the replaced files' keys with them.
    let table = data.path().join("tenants/default/spans");
    let keys_dir = table.join("_trace_index");
    // While compaction runs, every query sees each span exactly once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let partitions = loop {
        let counts = server
            .sql(
                "SELECT count(*) AS n, \
                 count(DISTINCT concat(encode(trace_id, 'hex'), encode(span_id, 'hex'))) AS d \
                 FROM spans",
            )
            .await;
        assert_eq!(counts[0]["n"], total, "{counts:?}");
        assert_eq!(counts[0]["d"], total, "{counts:?}");
        let storage = storage(&server).await;
        let partitions = storage["partitions"].as_array().unwrap().clone();
        assert_eq!(partitions.len(), 2, "{storage}");
        let on_disk = files_ending(&table, ".parquet");
        let keys = files_ending(&keys_dir, ".keys");
        let in_table = storage["files"].as_u64().unwrap() as usize;
        if partitions.iter().all(|p| p["compacted"] == true)
            && on_disk == in_table
            && keys == in_table
        {
            break partitions;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted and vacuumed in 60 s: {storage}, {on_disk} data files and {keys} \
             trace keys on disk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut files = 0;
    for partition in &partitions {
        let n = partition["files"].as_u64().unwrap() as usize;
        assert!(n >= 2, "the small target size rolls files: {partition}");
        let paths = partition["paths"].as_array().unwrap();
        assert!(
            paths
                .iter()
                .all(|p| p.as_str().unwrap().contains("/compacted-"))
        );
        assert_eq!(partition["rows"], total / 2);
        files += n;
    }

    // The same trace, the same answer.
    let after = server.get(&format!("/api/v1/traces/{probe:032x}")).await;
    assert_eq!(after, before);

    // A scan without a trace id reads every file; a lookup by trace id, with
    // no time range, one file: the trace index keeps the hour that holds it,
    // and in that hour the key ranges are disjoint. An absent id, none.
    let all = files_scanned(&server, "SELECT count(*) FROM spans WHERE duration_ns > 0").await;
    assert_eq!(all, files);
    for i in [1u128, 57, 133, 240, 599] {
        let id = trace_id(i);
        let sql = format!("SELECT * FROM spans WHERE trace_id = X'{id:032x}'");
        assert_eq!(files_scanned(&server, &sql).await, 1, "{sql}");
        let rows = server.sql(&sql).await;
        assert_eq!(rows.len() as u64, spans_per_trace, "{sql}");
    }
    // Without the trace index (a condition on the key alone), the Delta
    // log's per-file min/max of `trace_key` leave at most one file per hour
    // (an hour's files have disjoint key ranges), of the `files`.
    let key = server
        .sql(&format!(
            "SELECT trace_key FROM spans WHERE trace_id = X'{:032x}' LIMIT 1",
            trace_id(57)
        ))
        .await[0]["trace_key"]
        .as_i64()
        .unwrap();
    let by_key = format!("SELECT count(*) FROM spans WHERE trace_key = {key}");
    let n = files_scanned(&server, &by_key).await;
    assert!(
        (1..=partitions.len()).contains(&n) && n < files,
        "{by_key}: {n} files of {files}"
    );
    let ids = [3u128, 500]
        .map(|i| format!("X'{:032x}'", trace_id(i)))
        .join(", ");
    let sql = format!("SELECT count(*) AS n FROM spans WHERE trace_id IN ({ids})");
    let n = files_scanned(&server, &sql).await;
    assert!(n <= 2, "{sql}: {n} files of {files}");
    assert_eq!(server.sql(&sql).await[0]["n"], 2 * spans_per_trace);
    let absent = format!(
        "SELECT * FROM spans WHERE trace_id = X'{:032x}'",
        trace_id(10_000)
    );
    assert_eq!(files_scanned(&server, &absent).await, 0);

    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics")) as u64
    };
    assert!(counter("tracelake_compactions_total") >= 1);
    assert!(counter("tracelake_compaction_rows_total") >= total);
    assert!(counter("tracelake_compaction_files_out_total") >= files as u64);

    // After a restart the trace index comes from the persisted keys, not
    // from the data files: with every file's keys emptied, no lookup by id
    // finds its trace, though the rows are all there.
    server.terminate();
    let keys = all_files(&keys_dir);
    assert_eq!(keys.len(), files);
    let no_keys = [b"TLKEYS1\n".as_slice(), &[0u8; 8]].concat();
    for path in &keys {
        std::fs::write(path, &no_keys).unwrap();
    }
    let mut server = TestServer::start(data.path(), &args).await;
    let emptied = server.get(&format!("/api/v1/traces/{probe:032x}")).await;
    assert_eq!(emptied.0, 404, "{emptied:?}");
    let count = server.sql("SELECT count(*) AS n FROM spans").await;
    assert_eq!(count[0]["n"], total);
    // Keys lost (or a table written before they were kept): the index
    // reads the key columns and persists the keys again, and loads the
    // files' footers, as soon as a query sees the table, before any
    // lookup asks (in the background: a count is answered first).
    server.terminate();
    std::fs::remove_dir_all(&keys_dir).unwrap();
    let server = TestServer::start(data.path(), &args).await;
    let count = server.sql("SELECT count(*) AS n FROM spans").await;
    assert_eq!(count[0]["n"], total);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = server.metrics().await;
        let footers = metric(&metrics, "tracelake_trace_metadata_entries") as usize;
        let keys = files_ending(&keys_dir, ".keys");
        if keys == files && footers == files {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not loaded ahead in 30 s: {keys} keys and {footers} footers of {files} files"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = server.get(&format!("/api/v1/traces/{probe:032x}")).await;
    assert_eq!(again, before);
    assert_eq!(files_ending(&keys_dir, ".keys"), files);
}

/// The files under `dir`, at any depth.
fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// How many files under `dir`, at any depth, have a name ending in
/// `suffix`.
fn files_ending(dir: &std::path::Path, suffix: &str) -> usize {
    all_files(dir)
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .count()
}
