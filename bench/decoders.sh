#!/usr/bin/env bash
# Ingest with the direct decoders against a baseline build, in one run
# (BENCHMARKS.md, "Decoders straight into Arrow"): for each server binary
# in turn, ROUNDS times, a fresh `tracelake serve` on loopback, then the
# driver for SECONDS with OTLP/HTTP protobuf and again with OTLP/JSON (4
# streams of 500-span requests), durable before ack; then the decode-only
# ceiling of every decoder. Prints one JSON line per measurement and a
# table of medians.
#
#   bench/decoders.sh BASELINE_BIN_DIR NEW_BIN_DIR [SECONDS] [ROUNDS]
#
# Each directory holds a release `tracelake`; the driver and the ceiling
# are NEW_BIN_DIR's `tracelake-bench` (the baseline's driver may lack
# `--encoding`). Needs curl and python3.
set -euo pipefail
baseline=$1
new=$2
seconds=${3:-20}
rounds=${4:-3}
work=$(mktemp -d)
base=27100
. "$(dirname "$0")/lib.sh"

: >"$work/results"
for round in $(seq "$rounds"); do
  for build in baseline new; do
    bin=$baseline
    [ "$build" = new ] && bin=$new
    for encoding in protobuf json; do
      serve "$bin" "$work/d" "$work/server.log"
      report=$("$new/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
        --seconds "$seconds" --streams 4 --batch 500 --encoding "$encoding" --json)
      stop
      line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"build":sys.argv[2],"encoding":sys.argv[3],"round":int(sys.argv[4]),"spans_per_second":r["spans_per_second"],"spans":r["spans_acked"],"failed":r["failed_requests"],"ack_p50_ms":r["ack_latency_ms"]["p50"],"ack_p99_ms":r["ack_latency_ms"]["p99"]}))' \
        "$report" "$build" "$encoding" "$round")
      echo "$line" | tee -a "$work/results"
    done
  done
done

ceiling=$("$new/tracelake-bench" ceiling --threads 2 --spans 100000 --rounds 3 --batch 500)
echo "$ceiling"

python3 - "$work/results" "$ceiling" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ceiling = json.loads(sys.argv[2])
def med(build, enc, key):
    return statistics.median(r[key] for r in rows if r["build"] == build and r["encoding"] == enc)
print("| encoding | baseline spans/s | new spans/s | new / baseline | new ack p50 / p99 ms |")
print("| --- | ---: | ---: | ---: | --- |")
for enc in ("protobuf", "json"):
    b, n = med("baseline", enc, "spans_per_second"), med("new", enc, "spans_per_second")
    print(f"| {enc} | {b:,.0f} | {n:,.0f} | {n / b:.2f} | {med('new', enc, 'ack_p50_ms'):.1f} / {med('new', enc, 'ack_p99_ms'):.1f} |")
print()
print("| decoder (2 threads) | spans/s |")
print("| --- | ---: |")
for name, v in ceiling.items():
    if isinstance(v, dict):
        print(f"| {name} | {v['spans_per_second']:,.0f} |")
PY
