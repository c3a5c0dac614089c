//! SIGTERM: the server stops being ready at once and never reports ready
//! again while it finishes, and what it buffered is committed before it
//! exits. The ports that take spans close first; the query port stays open
//! while the buffer is flushed, `/ready` answering 503 (docs/api.md), and
//! closes last.

use std::time::{Duration, Instant};

use crate::server::TestServer;
use crate::spans::{request, span};

/// One `/ready` probe: its status, or `None` when no answer came (the port
/// is closed), and how many Delta commits the table had once the probe had
/// its outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Probe {
    at: Instant,
    status: Option<u16>,
    commits_after: usize,
}

/// The number of commits in the Delta log of the table under `data`.
fn commits(data: &std::path::Path) -> usize {
    std::fs::read_dir(data.join("tenants/default/spans/_delta_log"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_from_sigterm_until_exit_and_the_buffer_is_committed() {
    let data = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(data.path(), &[]).await;
    // Enough buffered rows that the flush at shutdown takes a while.
    const REQUESTS: u64 = 12;
    const SPANS: u64 = 5_000;
    for r in 0..REQUESTS {
        let spans = (0..SPANS)
            .map(|i| {
                span(
                    u128::from(r + 1) << 64 | u128::from(i / 10),
                    r * SPANS + i + 1,
                )
            })
            .collect();
        server.export(&request("stopping", spans)).await;
    }
    assert_eq!(server.committed().await, Default::default(), "all buffered");

    // Probe /ready as a load balancer does, a new connection each time,
    // from before the signal until the process has exited.
    let url = server.url("/ready");
    let table = data.path().to_path_buf();
    let created = commits(&table);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn({
        let done = std::sync::Arc::clone(&done);
        async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut probes = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let status = client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16());
                probes.push(Probe {
                    at: Instant::now(),
                    status,
                    commits_after: commits(&table),
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            probes
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(120)).await;
    let exited = Instant::now();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let probes = prober.await.unwrap();
    assert!(status.success(), "server exited with {status}");

    let before: Vec<_> = probes.iter().filter(|p| p.at < signalled).collect();
    assert!(
        !before.is_empty() && before.iter().all(|p| p.status == Some(200)),
        "ready before the signal: {before:?}"
    );
    // The signal is handled a moment after it is sent: until then /ready
    // may still say 200. From the first answer that is not 200 on, none is.
    let after: Vec<_> = probes.iter().filter(|p| p.at >= signalled).collect();
    let stopping = after
        .iter()
        .position(|p| p.status != Some(200))
        .unwrap_or_else(|| panic!("/ready said 200 until the exit: {after:?}"));
    let late_ready: Vec<_> = after[stopping..]
        .iter()
        .filter(|p| p.status == Some(200))
        .collect();
    assert!(
        late_ready.is_empty(),
        "/ready said 200 again while stopping: {late_ready:?}"
    );
    // Not ready before the flush that shutdown runs had committed: from
    // the signal on, not only once the listeners close at the very end.
    assert_eq!(
        after[stopping].commits_after, created,
        "/ready said 200 until the buffer was committed: {after:?}"
    );
    // Until the shutdown's commit the query port is still open: every probe
    // that ended before it was answered, and with 503.
    let flushing: Vec<_> = after[stopping..]
        .iter()
        .filter(|p| p.commits_after == created)
        .collect();
    assert!(
        !flushing.is_empty() && flushing.iter().all(|p| p.status == Some(503)),
        "/ready while flushing at shutdown: {flushing:?}"
    );
    let while_flushing = flushing.len();
    let answered_503 = after.iter().filter(|p| p.status == Some(503)).count();
    let refused = after.iter().filter(|p| p.status.is_none()).count();
    eprintln!(
        "after SIGTERM: {} probes answered 200, then {answered_503} answered 503 and {refused} found the port closed ({while_flushing} before the shutdown's commit), over {:?} until the exit",
        stopping,
        exited - signalled
    );

    // Committed before the exit: the table holds every row (a WAL replay
    // would put them in the buffer, not in /api/v1/storage).
    let server = TestServer::start(data.path(), &[]).await;
    let rows: u64 = server.committed().await.values().sum();
    assert_eq!(rows, REQUESTS * SPANS);
}
