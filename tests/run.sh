#!/usr/bin/env bash
# The test command: `cargo test --workspace --locked` (with any further
# arguments, e.g. `tests/run.sh --test e2e zipkin`), then the list of tests
# that skipped for want of something optional (Chromium, the Python
# packages, the shared fixtures, a tmpfs mount; tests/e2e/skip.rs). Without
# it those skips show only as SKIPPED lines amid the output. In CI (`CI`
# set) a skip fails its test instead, so the list stays empty.
set -uo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
list="$target/tmp/skipped-tests.txt"
# Emptied once per run, so that an earlier run's skips are never listed.
rm -f "$list"

cargo test --workspace --locked "$@"
status=$?

if [ -s "$list" ]; then
  echo
  echo "SKIPPED: $(wc -l <"$list") tests (or parts) did not run here; what they check is unproven in this run:"
  sort "$list" | sed 's/^/  /'
fi
exit "$status"
