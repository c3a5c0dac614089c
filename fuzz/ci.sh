#!/usr/bin/env bash
# Builds the fuzz targets (stable toolchain, no sanitizer) and runs each one
# for a bounded time from its seeds; fails when any target finds a crash.
# See docs/fuzzing.md.
#
#   FUZZ_SECONDS     seconds per target (default 30)
#   FUZZ_TARGETS     targets to run, space-separated (default: all)
#   FUZZ_ARGS        extra libFuzzer flags, after (so overriding) the defaults
#   FUZZ_TARGET_DIR  cargo target dir (default /var/tmp/tracelake-fuzz-target,
#                    apart from the main build's so neither invalidates the other)
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/tracelake-fuzz-target}"
export CARGO_TERM_COLOR=never

# libfuzzer-sys compiles libFuzzer with the C++ compiler.
if ! command -v c++ >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz has no --locked: fail here when Cargo.lock is out of date.
cargo metadata --locked --format-version 1 >/dev/null

cargo fuzz build -s none

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
# Public samples kept beside the clone (never committed): extra starting
# points for the Zipkin and OTLP/JSON targets when they are there.
fixtures=../../shared/fixtures

failed=()
summary=()
for target in $targets; do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  samples=()
  case "$target" in
    zipkin_json) samples=("$fixtures"/zipkin_*.json "$fixtures"/opentelemetry-collector-contrib_sample*.json) ;;
    otlp_json) samples=("$fixtures"/opentelemetry-proto_trace.json "$fixtures"/jaeger_otlp2jaeger-in.json) ;;
  esac
  for f in "${samples[@]}"; do
    if [ -f "$f" ]; then install -m 0644 "$f" "$corpus/fixture-$(basename "$f")"; fi
  done
  log="$(mktemp)"
  stamp="$(mktemp)" # older than this run's artifacts
  echo "== fuzz $target for ${seconds}s"
  status=0
  # New inputs go to corpus/<target>; seeds/<target> is only read.
  # -timeout: one input taking 10 s counts as a crash (a hang).
  cargo fuzz run -s none "$target" "$corpus" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  units="$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)"
  grep -E '^(INFO: seed corpus|#[0-9]+[[:space:]]+(INITED|DONE))' "$log" || true
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    summary+=("$target: FAILED (exit $status) after ${execs:-?} executions")
    echo "-- $target failed:"
    grep -E -A4 'panicked at|ERROR: libFuzzer|^SUMMARY|Test unit written' "$log" | head -n 60 || tail -n 60 "$log"
    # The inputs this run wrote.
    find "artifacts/$target" -type f -newer "$stamp" 2>/dev/null | while read -r a; do
      echo "-- input $a (hex, first 4 KiB): $(od -An -v -tx1 "$a" | tr -d ' \n' | head -c 8192)"
    done
  else
    summary+=("$target: ${execs:-?} executions in ${seconds}s, ${units:-?} new corpus units, no crash")
  fi
  rm -f "$log" "$stamp"
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs above; artifacts in fuzz/artifacts/)" >&2
  exit 1
fi
