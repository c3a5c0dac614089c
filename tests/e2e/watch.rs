//! A query that watches a server while a crash test runs, so that "no query
//! ever saw a duplicate or a missing row" is checked on the live server, not
//! only after the restart. It counts the rows a filter selects and their
//! distinct keys in one statement (one snapshot), as often as it can:
//!
//! - a key counted twice is a row a query saw twice;
//! - fewer rows than were acknowledged before the query was sent is a lost
//!   (or not yet visible) acknowledged row: an acknowledged span is in the
//!   buffer, visible to every later query, before its answer leaves;
//! - fewer rows than an earlier answer of the same server process is a row
//!   that went missing (a flush or commit that hid it for a moment).
//!
//! Queries that fail (the server is being killed or aborts) are not
//! answers and count for nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// What a watch saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Answers received.
    pub(crate) answers: u64,
    /// The highest row count answered.
    pub(crate) max_rows: u64,
    /// What contradicted the guarantees, at most a few.
    pub(crate) violations: Vec<String>,
}

pub(crate) struct Watch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Seen>,
}

impl Watch {
    /// Starts watching the server whose SQL endpoint is `sql_url`: the rows
    /// `filter` (an SQL condition) selects, keyed by `key` (an SQL
    /// expression unique per span); `acked` holds how many of those rows
    /// have been acknowledged so far.
    pub(crate) fn start(sql_url: String, filter: &str, key: &str, acked: Arc<AtomicU64>) -> Self {
        let sql =
            format!("SELECT count(*) AS n, count(DISTINCT {key}) AS d FROM spans WHERE {filter}");
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let client = reqwest::Client::new();
                let mut seen = Seen::default();
                while !stop.load(Ordering::SeqCst) {
                    let floor = acked.load(Ordering::SeqCst);
                    let answer = client
                        .post(&sql_url)
                        .json(&json!({ "sql": sql }))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    let body: Option<Value> = match answer {
                        Ok(r) if r.status() == 200 => r.json().await.ok(),
                        _ => None,
                    };
                    if let Some(row) = body.as_ref().map(|b| &b["rows"][0]) {
                        let (n, d) = (row["n"].as_u64().unwrap(), row["d"].as_u64().unwrap());
                        let mut violation = |v: String| {
                            if seen.violations.len() < 5 {
                                seen.violations.push(v);
                            }
                        };
                        if d != n {
                            violation(format!("{n} rows but {d} distinct: {} duplicates", n - d));
                        }
                        if n < floor {
                            violation(format!("{n} rows after {floor} were acknowledged"));
                        }
                        if n < seen.max_rows {
                            violation(format!("{n} rows after {} were seen", seen.max_rows));
                        }
                        seen.answers += 1;
                        seen.max_rows = seen.max_rows.max(n);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            }
        });
        Self { stop, task }
    }

    /// Stops watching; what was seen.
    pub(crate) async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}
