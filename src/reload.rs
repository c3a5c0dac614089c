//! Settings that live in files and change without a restart (the tokens
//! file, TLS certificates and keys): one watcher that rereads the files when
//! their content changes (polled) and on SIGHUP, and publishes what they
//! load to every listener through a `watch` channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Loads a value from `paths` now — `load` makes it from the files'
/// contents, in the order of `paths`; a file that cannot be read or a value
/// that does not load is the error, which stops the start — and keeps it
/// current: every `every`, and at once on SIGHUP, the files are read again;
/// when any content differs from what the value was made from (or on
/// SIGHUP), `load` makes a new one. Then a file that cannot be read or a
/// value that does not load keeps the one in force and logs why (as
/// `what`). The watcher ends when every receiver is gone.
pub(crate) fn watch_files<T, F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    every: Duration,
    load: F,
) -> anyhow::Result<watch::Receiver<Arc<T>>>
where
    T: Send + Sync + 'static,
    F: Fn(&[Vec<u8>]) -> anyhow::Result<T> + Send + 'static,
{
    let read_all = {
        let paths = paths.clone();
        move || -> Result<Vec<Vec<u8>>, String> {
            paths
                .iter()
                .map(|p| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())))
                .collect()
        }
    };
    // The value and the snapshot the watcher compares with come from the
    // same read: a change right after it is seen at the first tick.
    let contents = read_all().map_err(anyhow::Error::msg)?;
    let initial = load(&contents)?;
    let mut last = Some(contents);
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            #[cfg(not(unix))]
            let forced = {
                tick.tick().await;
                false
            };
            if tx.is_closed() {
                return;
            }
            // Small files: reading them on the runtime costs less than a
            // hop to the blocking pool.
            let contents = read_all();
            if !forced && contents.as_ref().ok() == last.as_ref() {
                continue;
            }
            let files = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            match contents {
                Err(error) => {
                    // Reported once per change: a file being replaced
                    // (removed, then written) reads again on the next tick.
                    if last.take().is_some() || forced {
                        tracing::error!("{error}; keeping the {what} in force");
                    }
                }
                Ok(contents) => {
                    let loaded = load(&contents);
                    last = Some(contents);
                    match loaded {
                        Ok(value) => {
                            tracing::info!(files = %files, "{what} reloaded");
                            tx.send_replace(Arc::new(value));
                        }
                        Err(error) => {
                            tracing::error!(files = %files, "{error:#}; keeping the {what} in force");
                        }
                    }
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_changed_file_is_loaded_and_a_bad_one_keeps_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let parse = |c: &[Vec<u8>]| -> anyhow::Result<u32> {
            Ok(std::str::from_utf8(&c[0])?.trim().parse()?)
        };
        let mut rx = watch_files(
            "number",
            vec![path.clone()],
            Duration::from_millis(10),
            parse,
        )
        .unwrap();
        assert_eq!(**rx.borrow_and_update(), 1);
        std::fs::write(&path, "2").unwrap();
        rx.changed().await.unwrap();
        assert_eq!(**rx.borrow_and_update(), 2);
        // Not a number, then a missing file: the value stays.
        std::fs::write(&path, "two").unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!rx.has_changed().unwrap());
        assert_eq!(**rx.borrow(), 2);
        std::fs::write(&path, "3").unwrap();
        rx.changed().await.unwrap();
        assert_eq!(**rx.borrow(), 3);
        // What does not load at the start is the error.
        std::fs::write(&path, "three").unwrap();
        let error = watch_files("number", vec![path.clone()], Duration::from_secs(1), parse);
        assert!(error.is_err());
        let missing = watch_files(
            "number",
            vec![path.with_extension("x")],
            Duration::from_secs(1),
            parse,
        );
        assert!(format!("{:#}", missing.unwrap_err()).contains("cannot read"));
    }
}
