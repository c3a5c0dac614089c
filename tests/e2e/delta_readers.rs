//! The README promises that any Delta reader reads the table: the Python
//! `deltalake` package reads every committed span with its attributes, in
//! the partition of its start hour. (DuckDB's `delta_scan` needs its `delta`
//! extension, which DuckDB downloads from its own server at `INSTALL` time,
//! out of reach here; its Parquet reader is what the benchmark runner uses.)

use crate::server::{TestServer, python_with};
use crate::spans::{kv, request, span};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_delta_reader_reads_every_committed_span() {
    let Some(python) = python_with("deltalake, pyarrow", "deltalake pyarrow") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]).await;
    let mut sent = Vec::new();
    for t in 1..=3u128 {
        let spans: Vec<_> = (1..=4u64)
            .map(|i| {
                let mut s = span(t, t as u64 * 10 + i);
                s.attributes = vec![kv("http.route", &format!("/r/{t}/{i}"))];
                s
            })
            .collect();
        sent.extend(spans.iter().map(|s| {
            (
                hex::encode(&s.trace_id),
                hex::encode(&s.span_id),
                s.name.clone(),
                (s.end_time_unix_nano - s.start_time_unix_nano) as i64,
                format!(
                    "/r/{t}/{}",
                    u64::from_be_bytes(s.span_id[..].try_into().unwrap()) % 10
                ),
                s.start_time_unix_nano,
            )
        }));
        server.export(&request("delta-reader", spans)).await;
    }
    // SIGTERM commits everything buffered.
    server.terminate();
    let table = dir.path().join("tenants/default/spans");
    let script = crate::checkout("tests/python/delta_reader.py");
    let script = script.to_str().unwrap();
    let out = crate::procs::json_output(
        tokio::process::Command::new(&python)
            .arg(script)
            .arg(&table),
    )
    .await;
    assert_eq!(
        out["partition_columns"],
        serde_json::json!(["date", "hour"])
    );
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), sent.len(), "{out}");
    sent.sort();
    for (row, (trace, span_id, name, duration, route, start)) in rows.iter().zip(&sent) {
        assert_eq!(row["trace_id"], *trace);
        assert_eq!(row["span_id"], *span_id);
        assert_eq!(row["name"], *name);
        assert_eq!(row["service"], "delta-reader");
        assert_eq!(row["duration_ns"], *duration);
        assert_eq!(row["route"], *route);
        assert!(row["map_route"].is_null(), "stored once: {row}");
        let secs = (*start / 1_000_000_000) as i64;
        let when = chrono::DateTime::from_timestamp(secs, 0).unwrap();
        assert_eq!(
            row["partition"],
            when.format("%Y-%m-%d/%H").to_string(),
            "span {span_id} is in the partition of its start hour"
        );
    }
}
