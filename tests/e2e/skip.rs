//! Skipped tests are listed, not hidden. A test that lacks something
//! optional (the shared fixtures, Python packages, Chromium, a tmpfs mount)
//! calls [`skip`]: in CI (`CI` set) that fails the test, since `.ci/run`
//! installs everything; elsewhere the skip is written straight to the
//! terminal (past libtest's capture of a passing test's output) and appended
//! to `<target>/tmp/skipped-tests.txt`, which `tests/run.sh` empties before
//! the run and prints at its end.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The list of this run's skips: `<target>/tmp/skipped-tests.txt`.
pub(crate) fn list() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt")
}

/// Records that the running test skips (all of it, or the part `reason`
/// names) for `reason`; panics in CI. The test is named by its thread
/// (libtest runs each test on a thread named after it), so call this from
/// the test's own body, not from a spawned task.
#[track_caller]
pub(crate) fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed thread>")
        .to_string();
    let line = record(std::env::var_os("CI").is_some(), &list(), &test, reason);
    let _ = std::io::stderr().write_all(format!("SKIPPED {line}").as_bytes());
}

/// Appends the skip's line to `list` (panics when `ci`); the line.
#[track_caller]
fn record(ci: bool, list: &Path, test: &str, reason: &str) -> String {
    assert!(
        !ci,
        "{test}: CI must provide what this test needs (see .ci/run): {reason}"
    );
    let line = format!("{test}: {reason}\n");
    if let Some(dir) = list.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", list.display()));
    line
}

#[test]
fn a_skip_fails_in_ci_and_is_listed_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("tmp/skipped-tests.txt");
    assert_eq!(
        record(false, &list, "mod::first", "no chromium"),
        "mod::first: no chromium\n"
    );
    record(false, &list, "mod::second", "no tmpfs");
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "mod::first: no chromium\nmod::second: no tmpfs\n"
    );
    let in_ci = std::panic::catch_unwind(|| record(true, &list, "mod::third", "no fixtures"));
    assert!(in_ci.is_err(), "a skip in CI fails the test");
    assert_eq!(std::fs::read_to_string(&list).unwrap().lines().count(), 2);
}

/// Every skip goes through [`skip`]: no test prints its own "skipped"
/// message (which libtest would hide in a passing test's output) or returns
/// early in CI.
#[test]
fn no_test_skips_on_its_own() {
    let dir = crate::checkout("tests/e2e");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "skip.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap().to_lowercase();
        for (at, _) in text.match_indices("eprintln!") {
            let statement = &text[at..at + text[at..].find(';').unwrap_or(text.len() - at)];
            assert!(
                !statement.contains("skip"),
                "{}: skip through crate::skip::skip, not {statement}",
                path.display()
            );
        }
    }
}
