#!/usr/bin/env bash
# Where the CPU of ingest goes, and whether the WAL's fsync holds it back
# (BENCHMARKS.md, "Ingest's CPU budget"): in each round, the decode-only
# ceiling (protobuf, 2 threads), then one drive with the data directory on
# disk and one with it on tmpfs (/dev/shm, where an fsync costs nothing),
# 4 streams of 1,000-span requests into a closed hour as the runner sends
# them. Prints spans/s, the server's CPU microseconds a span and the cores
# it kept busy while the spans came (the driver builds its requests before
# it sends them, and then takes under a tenth of a core), the seconds spent
# in fsync and in flushes, and WAL bytes a span.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/ingest-budget.sh [DIR-WITH-BINARIES] [SECONDS] [ROUNDS]
#
# DIR defaults to target/release, SECONDS to 20, ROUNDS to 3. Needs curl,
# python3 and a tmpfs at /dev/shm. Everything listens on 127.0.0.1 and
# stops when the script ends.
set -euo pipefail
bin=${1:-target/release}
seconds=${2:-20}
rounds=${3:-3}
base=27300
. "$(dirname "$0")/lib.sh"
disk=$(mktemp -d)
shm=$(mktemp -d -p /dev/shm)
cleanup() {
  stop
  rm -rf "$disk" "$shm"
}

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# drive WHERE: one server on WHERE/d, one drive; prints its figures.
drive() {
  local where=$1 s0 s1
  serve "$bin" "$where/d" "$where/server.log"
  s0=$(cpu_ticks "$server_pid")
  "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
    --seconds "$seconds" --streams 4 --batch 1000 --start-seconds-ago 10800 \
    --json >"$where/drive.json" 2>/dev/null
  s1=$(cpu_ticks "$server_pid")
  curl -sf "http://127.0.0.1:$((base + 1))/metrics" >"$where/metrics"
  stop
  python3 - "$where/drive.json" "$where/metrics" "$(( s1 - s0 ))" "$ticks" <<'EOF'
import json, sys
drive = json.load(open(sys.argv[1]))
metrics = {}
for line in open(sys.argv[2]):
    if line.startswith("#") or not line.strip():
        continue
    name, value = line.rsplit(" ", 1)
    metrics[name.split("{")[0]] = metrics.get(name.split("{")[0], 0.0) + float(value)
spans = drive["spans_acked"]
server_s = int(sys.argv[3]) / int(sys.argv[4])
print(f"{drive['spans_per_second']:,.0f} spans/s, server {1e6 * server_s / spans:.2f} "
      f"CPU us/span on {server_s / drive['seconds']:.2f} cores, "
      f"fsync {metrics.get('tracelake_wal_fsync_seconds_sum', 0):.1f} s, "
      f"flush {metrics.get('tracelake_flush_seconds_sum', 0):.1f} s, "
      f"WAL {metrics.get('tracelake_wal_written_bytes_total', 0) / spans:.0f} B/span, "
      f"{drive['throttled_responses']} throttled")
EOF
}

for round in $(seq "$rounds"); do
  ceiling=$("$bin/tracelake-bench" ceiling --threads 2 --paths protobuf 2>/dev/null |
    python3 -c 'import json, sys; print(format(json.load(sys.stdin)["protobuf"]["spans_per_second"], ",.0f"))')
  echo "round $round ceiling (protobuf, 2 threads): $ceiling spans/s"
  echo "round $round disk:  $(drive "$disk")"
  echo "round $round tmpfs: $(drive "$shm")"
done
