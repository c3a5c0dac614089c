//! Fault points for tests: named places on the write path where a test can
//! make the operation fail as a full disk would, or abort the whole process,
//! to prove what happens at exactly that point:
//!
//! | point | where |
//! | --- | --- |
//! | `wal.write`, `wal.fsync`, `wal.create` | appending a record, syncing it, starting a segment |
//! | `flush.put` | uploading a flushed Parquet file |
//! | `flush.commit` | files uploaded, before the Delta commit |
//! | `flush.answer` | the commit landed, and its caller is told it failed (an answer lost) |
//! | `flush.release` | committed, before the WAL segments are released |
//! | `compact.commit`, `compact.committed` | before and after a compaction's commit |
//! | `retention.commit`, `retention.committed` | before and after retention's commit |
//! | `vacuum` | before deleting files no longer in the table |
//! | `kafka.commit`, `kafka.committed` | before and after the commit of a Kafka partition's rows |
//! | `upgrade.commit`, `upgrade.committed` | before and after the commit of one partition rewritten into the current layout |
//!
//! Only debug builds (what the test suite runs) have them: the hidden
//! `serve --fault-points` setting (or `TRACELAKE_FAULTS`) hands its value to
//! [`configure`]; in release builds [`hit`] is an empty inline function and
//! [`configure`] refuses. The value is a comma-separated list of
//! `point=action[@from][xcount]`:
//!
//! - `action` is `enospc` (fail with "no space left on device"), `eio`,
//!   `abort` (end the process at once, as a crash or `kill -9` would), or
//!   `stop` (the process stops itself with SIGSTOP, as a frozen machine
//!   would, until the test sends SIGCONT; its clocks go on meanwhile);
//! - `@from` makes the first `from - 1` hits pass (default 1);
//! - `xcount` limits how many hits fail (default: all from then on).
//!
//! For example `wal.fsync=enospc@3x2` fails the third and fourth fsync.

use std::io;

/// Passes, or fails / aborts when a test asked for it at `point`.
#[cfg(debug_assertions)]
pub fn hit(point: &'static str) -> io::Result<()> {
    imp::hit(point)
}

/// Release builds have no fault points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_point: &'static str) -> io::Result<()> {
    Ok(())
}

/// Arms the fault points of `spec` (see the module docs), once, at start.
#[cfg(debug_assertions)]
pub fn configure(spec: &str) -> Result<(), String> {
    imp::configure(spec)
}

/// Release builds have no fault points.
#[cfg(not(debug_assertions))]
pub fn configure(_spec: &str) -> Result<(), String> {
    Err("fault points exist only in debug builds".into())
}

#[cfg(debug_assertions)]
mod imp {
    use std::collections::HashMap;
    use std::io;
    use std::sync::OnceLock;

    use parking_lot::Mutex;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Action {
        Enospc,
        Eio,
        Abort,
        Stop,
    }

    #[derive(Debug)]
    struct Fault {
        action: Action,
        from: u64,
        count: Option<u64>,
        hits: u64,
    }

    static FAULTS: OnceLock<Mutex<HashMap<String, Fault>>> = OnceLock::new();

    pub(super) fn configure(spec: &str) -> Result<(), String> {
        let faults = parse(spec)?;
        FAULTS
            .set(Mutex::new(faults))
            .map_err(|_| "fault points are already configured".to_string())
    }

    fn parse(spec: &str) -> Result<HashMap<String, Fault>, String> {
        let mut out = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (point, rest) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected point=action"))?;
            let (rest, count) = match rest.split_once('x') {
                Some((r, c)) => (
                    r,
                    Some(c.parse().map_err(|_| format!("{item:?}: bad count"))?),
                ),
                None => (rest, None),
            };
            let (action, from) = match rest.split_once('@') {
                Some((a, f)) => (a, f.parse().map_err(|_| format!("{item:?}: bad @from"))?),
                None => (rest, 1),
            };
            let action = match action {
                "enospc" => Action::Enospc,
                "eio" => Action::Eio,
                "abort" => Action::Abort,
                "stop" => Action::Stop,
                other => return Err(format!("{item:?}: unknown action {other:?}")),
            };
            out.insert(
                point.to_string(),
                Fault {
                    action,
                    from,
                    count,
                    hits: 0,
                },
            );
        }
        Ok(out)
    }

    pub(super) fn hit(point: &'static str) -> io::Result<()> {
        let Some(faults) = FAULTS.get() else {
            return Ok(());
        };
        let action = {
            let mut faults = faults.lock();
            let Some(f) = faults.get_mut(point) else {
                return Ok(());
            };
            f.hits += 1;
            let fires = f.hits >= f.from && f.count.is_none_or(|c| f.hits < f.from + c);
            if !fires {
                return Ok(());
            }
            f.action
        };
        match action {
            Action::Abort => {
                eprintln!("tracelake: fault point {point}: aborting");
                std::process::abort();
            }
            Action::Stop => {
                eprintln!("tracelake: fault point {point}: stopping (SIGSTOP)");
                stop_here();
                eprintln!("tracelake: fault point {point}: running on (SIGCONT)");
                Ok(())
            }
            Action::Enospc => Err(io::Error::from_raw_os_error(28)),
            Action::Eio => Err(io::Error::from_raw_os_error(5)),
        }
    }

    /// Stops the process with SIGSTOP; returns once a SIGCONT has let it
    /// run on, never before it stopped.
    ///
    /// A signal sent to the process is taken by one of its threads, the
    /// main one if it can, and that thread stops the others only once it
    /// runs: on a busy machine, milliseconds after `kill` has returned,
    /// during which the thread at the fault point would run on past it (a
    /// commit it was to stop before has landed that way). So this thread
    /// waits until the signal has been taken (it is then no longer pending
    /// for the process, `ShdPnd` in `/proc/thread-self/status`): by then the
    /// thread that took it has told this one to stop, which it does on its
    /// way back from that read.
    fn stop_here() {
        const SIGSTOP_BIT: u64 = 1 << (19 - 1);
        let sent = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            eprintln!("tracelake: cannot send SIGSTOP; aborting");
            std::process::abort();
        }
        let pending = || -> Option<bool> {
            let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
            let mask = status.lines().find_map(|l| l.strip_prefix("ShdPnd:"))?;
            Some(u64::from_str_radix(mask.trim(), 16).ok()? & SIGSTOP_BIT != 0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pending().unwrap_or(false) {
            if std::time::Instant::now() > deadline {
                eprintln!("tracelake: SIGSTOP not taken in 10 s; aborting");
                std::process::abort();
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn specs_parse() {
            let f = parse("wal.fsync=enospc@3x2, flush.commit=abort").unwrap();
            let fsync = &f["wal.fsync"];
            assert_eq!(
                (fsync.action, fsync.from, fsync.count),
                (Action::Enospc, 3, Some(2))
            );
            assert_eq!(f["flush.commit"].action, Action::Abort);
            assert_eq!(
                parse("upgrade.commit=stop").unwrap()["upgrade.commit"].action,
                Action::Stop
            );
            assert!(parse("wal.fsync").is_err());
            assert!(parse("wal.fsync=melt").is_err());
        }
    }
}
