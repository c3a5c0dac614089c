//! Process hygiene: no process a test starts outlives it (issue 19).
//!
//! Every process goes through [`Guard::spawn`] or [`output`], which start it
//! - in a process group of its own, so that it and everything it starts
//!   (chromedriver's Chromium with its zygotes, renderers and GPU process)
//!   are killed together with one signal;
//! - with `TRACELAKE_OWNER=<pid>:<start time>:<tag>` in its environment:
//!   this test process, and a tag unique to the guard. Children inherit it
//!   (Chromium's crash handlers, which leave the group and session, keep
//!   it), so the guard also kills what carries its tag, a later run kills
//!   what a run that was interrupted left behind (the owner is gone), and
//!   `tests/leaked-processes.sh` finds what is left at the end of a run;
//! - with a watchdog in the same group: `sh` blocked reading a pipe only
//!   this process holds open. When the pipe closes (the guard is dropped,
//!   or this process ends in any way, even by SIGKILL) it kills its group.
//!
//! A guard is dropped when its test ends, whether it passes or panics: it
//! kills the group, waits for the leader, closes the watchdog's pipe (which
//! kills what is left of the group, the watchdog included) and kills any
//! process still carrying its tag.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

/// The environment variable that marks a process as started by a test (the
/// benchmark runner sets it on its server too).
pub(crate) const OWNER: &str = "TRACELAKE_OWNER";

/// A process a test started, with everything it starts; killed on drop.
pub(crate) struct Guard {
    child: Child,
    watchdog: Option<Child>,
    tag: String,
    done: bool,
}

impl Guard {
    /// Starts `cmd` in a group of its own, marked `kind`, with a watchdog.
    pub(crate) fn spawn(cmd: &mut Command, kind: &str) -> io::Result<Self> {
        SWEEP.call_once(kill_orphans);
        let tag = new_tag(kind);
        let child = cmd.process_group(0).env(OWNER, &tag).spawn()?;
        let watchdog = watchdog(child.id(), &tag);
        Ok(Self {
            child,
            watchdog,
            tag,
            done: false,
        })
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGKILL to the group and to whatever carries this guard's tag; waits
    /// for the leader. Does nothing the second time.
    pub(crate) fn kill(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        // While the leader is not reaped its id names this group and no other.
        if let Ok(None) = self.child.try_wait()
            && !signal(&[format!("-{}", self.child.id())])
        {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        close_watchdog(self.watchdog.take());
        kill_tagged(&self.tag);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a client program with [`output`] that prints one JSON document:
/// fails the test (with the program's stderr) unless it succeeds, and
/// returns what it printed.
pub(crate) async fn json_output(cmd: &mut tokio::process::Command) -> serde_json::Value {
    let output = output(cmd).await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Runs `cmd` to its end like `tokio::process::Command::output`, in a
/// group of its own with a watchdog, marked; if the future is dropped first
/// (or the test panics) the process and its children are killed.
pub(crate) async fn output(cmd: &mut tokio::process::Command) -> io::Result<Output> {
    SWEEP.call_once(kill_orphans);
    let tag = new_tag("client");
    let child = cmd
        .process_group(0)
        .env(OWNER, &tag)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let _cleanup = Cleanup {
        watchdog: child.id().and_then(|pid| watchdog(pid, &tag)),
        tag,
    };
    child.wait_with_output().await
}

/// What is left of a group whose leader tokio reaps.
struct Cleanup {
    watchdog: Option<Child>,
    tag: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        close_watchdog(self.watchdog.take());
        kill_tagged(&self.tag);
    }
}

/// `sh` in group `pgid` that kills the group when its stdin closes. The
/// pipe's other end is close-on-exec, so only this process holds it.
fn watchdog(pgid: u32, tag: &str) -> Option<Child> {
    let pgid = i32::try_from(pgid).ok()?;
    Command::new("sh")
        .args(["-c", "read -r _; kill -9 0"])
        .process_group(pgid)
        .env(OWNER, tag)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .inspect_err(|e| eprintln!("no watchdog for process group {pgid}: {e}"))
        .ok()
}

fn close_watchdog(watchdog: Option<Child>) {
    if let Some(mut watchdog) = watchdog {
        drop(watchdog.stdin.take());
        let _ = watchdog.wait();
    }
}

static SWEEP: Once = Once::new();
static TAGS: AtomicU64 = AtomicU64::new(0);

/// `<pid>:<start time>` of this process.
fn me() -> &'static str {
    static ME: OnceLock<String> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        format!("{pid}:{}", start_time(pid).unwrap_or_default())
    })
}

fn new_tag(kind: &str) -> String {
    let n = TAGS.fetch_add(1, Ordering::Relaxed);
    format!("{}:{kind}-{n}", me())
}

/// When `pid` started (clock ticks after boot): with the pid, it names one
/// process even after the pid is reused.
fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)
}

fn process_group(pid: u32) -> Option<u64> {
    stat_field(pid, 5)
}

/// A numeric field of `/proc/<pid>/stat`, numbered as in proc(5).
fn stat_field(pid: u32, field: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command name in parentheses, may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(field.checked_sub(3)?)?
        .parse()
        .ok()
}

/// Whether the owner named by a marker (`<pid>:<start time>:…`) runs.
fn owner_alive(marker: &str) -> bool {
    let mut parts = marker.split(':');
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    match (pid.parse(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Processes carrying a marker, with its value (this process excluded).
fn marked() -> Vec<(u32, String)> {
    let prefix = format!("{OWNER}=");
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let value = environ
                .split(|&b| b == 0)
                .find_map(|v| v.strip_prefix(prefix.as_bytes()))?;
            Some((pid, String::from_utf8_lossy(value).into_owned()))
        })
        .collect()
}

/// SIGKILL to each of `targets` (pids, or `-pgid`); false if `kill` could
/// not run.
fn signal(targets: &[String]) -> bool {
    Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(targets)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Kills what carries `tag` until nothing does (a process may start another
/// while being killed).
fn kill_tagged(tag: &str) {
    for _ in 0..50 {
        let pids: Vec<String> = marked()
            .into_iter()
            .filter(|(_, value)| value == tag)
            .map(|(pid, _)| pid.to_string())
            .collect();
        if pids.is_empty() {
            return;
        }
        signal(&pids);
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("processes tagged {tag} survive SIGKILL");
}

/// Kills what an earlier test process started and left behind when it was
/// interrupted: marked processes whose owner has exited, and the groups they
/// lead (Chromium's zygote children overwrite their environment with their
/// arguments, but stay in chromedriver's group).
fn kill_orphans() {
    let orphans: Vec<(u32, String)> = marked()
        .into_iter()
        .filter(|(_, value)| !owner_alive(value))
        .collect();
    let mut targets = Vec::new();
    for (pid, value) in &orphans {
        let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args = String::from_utf8_lossy(&args).replace('\0', " ");
        eprintln!("killing {pid}, left behind by an earlier test run ({value}): {args}");
        if process_group(*pid) == Some(u64::from(*pid)) {
            targets.push(format!("-{pid}"));
        }
        targets.push(pid.to_string());
    }
    if !targets.is_empty() {
        signal(&targets);
    }
}
