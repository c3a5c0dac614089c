#!/usr/bin/env bash
# Ingest rate and trace-by-id latency while the query pool is saturated by
# heavy SQL (cross joins that never yield), against the same figures on the
# idle server, measured in one run (BENCHMARKS.md, "Query isolation"). The
# lookups are timed apart from the ingest phase, which takes both cores.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/isolation.sh [DIR-WITH-BINARIES] [SECONDS]
#
# DIR defaults to target/release; SECONDS (per phase) to 30. Needs curl and
# python3. Everything listens on 127.0.0.1 and stops when the script ends.
set -euo pipefail
bin=${1:-target/release}
seconds=${2:-30}
data=$(mktemp -d)
base=27000
. "$(dirname "$0")/lib.sh"
loops=()
cleanup() {
  for p in "${loops[@]}"; do kill "$p" 2>/dev/null || true; done
  stop
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

serve "$bin" "$data/d" "$data/server.log" --query-timeout 60s
http=http://127.0.0.1:$((base + 1))

# The trace every lookup reads: 20 spans.
trace=5b8efff798038103d269b633813fc60c
now=$(date +%s%N)
spans=""
for i in $(seq 1 20); do
  id=$(printf '%016x' "$i")
  spans="$spans${spans:+,}{\"traceId\":\"$trace\",\"spanId\":\"$id\",\"name\":\"op$i\",\"kind\":2,\"startTimeUnixNano\":\"$now\",\"endTimeUnixNano\":\"$((now + 1000000))\"}"
done
curl -sf "http://127.0.0.1:$((base + 2))/v1/traces" -H 'content-type: application/json' -d \
  "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"lookup\"}}]},\"scopeSpans\":[{\"spans\":[$spans]}]}]}" >/dev/null

# One phase: trace by id timed 200 times (20 per second) with no ingest,
# then the driver at full rate for SECONDS.
phase() {
  : >"$data/$1.lat"
  for _ in $(seq 200); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$http/api/v1/traces/$trace" >>"$data/$1.lat"
    sleep 0.05
  done
  "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
    --seconds "$seconds" --streams 4 --batch 1000 --json >"$data/$1.json"
}

phase idle
runaway='{"sql": "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 100000000) b"}'
for _ in 1 2 3 4; do
  (while true; do
     curl -s -o /dev/null -m 120 "$http/api/v1/sql" -H 'content-type: application/json' -d "$runaway" || true
   done) &
  loops+=($!)
done
sleep 3
phase busy
running=$(curl -s "$http/metrics" | grep '^tracelake_queries_running{class="heavy"}' || true)

python3 - "$data" "$running" <<'PY'
import json, statistics, sys
data, running = sys.argv[1], sys.argv[2]
def load(phase):
    report = json.load(open(f"{data}/{phase}.json"))
    lat = []
    for line in open(f"{data}/{phase}.lat"):
        code, t = line.split()
        if code != "200":
            sys.exit(f"{phase}: trace by id answered {code}")
        lat.append(float(t) * 1000)
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return report["spans_per_second"], statistics.median(lat), p99, len(lat)
idle, busy = load("idle"), load("busy")
print(f"heavy queries running during the busy phase: {running}")
print(f"{'':24}{'idle':>12}{'saturated':>12}{'ratio':>8}")
print(f"{'ingest spans/s':24}{idle[0]:12.0f}{busy[0]:12.0f}{busy[0] / idle[0]:8.2f}")
print(f"{'trace by id p50 ms':24}{idle[1]:12.1f}{busy[1]:12.1f}{busy[1] / idle[1]:8.2f}")
print(f"{'trace by id p99 ms':24}{idle[2]:12.1f}{busy[2]:12.1f}{busy[2] / idle[2]:8.2f}")
print(f"{'lookups':24}{idle[3]:12d}{busy[3]:12d}")
PY
