//! Retention: partitions older than the retention leave the table, and
//! their files leave storage after the vacuum grace period.

use std::time::{Duration, Instant};

use crate::server::{TestServer, metric};
use crate::spans::{now_nanos, request, span};

/// The data files under `dir`, and their persisted trace keys.
fn data_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(data_files(&p));
            } else if p.extension().is_some_and(|x| x == "parquet" || x == "keys") {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_partitions_leave_the_table_and_storage() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        data.path(),
        &[
            "--max-span-age",
            "3650d",
            "--retention",
            "1d",
            "--retention-check-interval",
            "300ms",
            "--vacuum-grace",
            "0s",
            "--flush-max-age",
            "200ms",
        ],
    )
    .await;
    let three_days = 3 * 86_400 * 1_000_000_000u64;
    let old: Vec<_> = (1..=5)
        .map(|i| {
            let mut s = span(0xa, i);
            s.start_time_unix_nano -= three_days;
            s.end_time_unix_nano -= three_days;
            s
        })
        .collect();
    let recent: Vec<_> = (11..=15).map(|i| span(0xb, i)).collect();
    server.export(&request("kept", recent)).await;
    server.export(&request("expired", old)).await;

    let table = data.path().join("tenants/default/spans");
    let old_day = chrono_date(now_nanos() - three_days);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = server
            .sql("SELECT service_name, count(*) AS n FROM spans GROUP BY 1")
            .await;
        let old_files: Vec<_> = data_files(&table)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&format!("date={old_day}")))
            .collect();
        let metrics = reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if rows == vec![serde_json::json!({"service_name": "kept", "n": 5})]
            && old_files.is_empty()
            && metric(&metrics, "tracelake_files_expired_total") == 1.0
            && metric(&metrics, "tracelake_files_vacuumed_total") == 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not expired within 30 s: rows {rows:?}, old files {old_files:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Recent data stays, on storage too, with its trace keys.
    let kept = data_files(&table);
    for ext in ["parquet", "keys"] {
        assert!(
            kept.iter().any(|p| p.extension().is_some_and(|x| x == ext)),
            "no .{ext} file kept: {kept:?}"
        );
    }
    let (status, _) = server
        .get(&format!("/api/v1/traces/{:032x}", 0xbu128))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .get(&format!("/api/v1/traces/{:032x}", 0xau128))
        .await;
    assert_eq!(status, 404);
}

/// `YYYY-MM-DD` (UTC) of a Unix-nanosecond time.
fn chrono_date(unix_ns: u64) -> String {
    let days = unix_ns / 1_000_000_000 / 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}
