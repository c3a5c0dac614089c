#!/usr/bin/env bash
# Where the CPU of ingest goes, and whether the WAL's fsync holds it back
# (BENCHMARKS.md, "Ingest's CPU budget"): in each round, the decode-only
# ceiling (protobuf, 2 threads), then one drive with the data directory on
# disk and one with it on tmpfs (/dev/shm, where an fsync costs nothing),
# 4 streams of 1,000-span requests (the runner's) into a closed hour, with
# the server's default flushes and no compaction in the drive's time (the
# runner's shape, compaction included, is `bench/compaction.sh ... runner`).
# Prints spans/s, the server's CPU microseconds a span and the cores
# it kept busy while the spans came (the driver builds its requests before
# it sends them, and then takes under a tenth of a core), the seconds spent
# in fsync and in flushes, and WAL bytes a span.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/ingest-budget.sh [DIR-WITH-BINARIES] [SECONDS] [ROUNDS]
#
# DIR defaults to target/release, SECONDS to 20, ROUNDS to 3. Needs curl,
# python3 and a tmpfs at /dev/shm; the disk's directory is made under
# TMPDIR (default /var/tmp), which must not be a tmpfs. Everything listens
# on 127.0.0.1 and stops when the script ends.
set -euo pipefail
bin=${1:-target/release}
seconds=${2:-20}
rounds=${3:-3}
base=27300
. "$(dirname "$0")/lib.sh"
disk= shm=
cleanup() {
  stop
  rm -rf "${disk:-}" "${shm:-}"
}
disk=$(mktemp -d -p "${TMPDIR:-/var/tmp}")
shm=$(mktemp -d -p /dev/shm)
if [ "$(stat -f -c %T "$disk")" = tmpfs ]; then
  echo "$disk is on a tmpfs: set TMPDIR to a directory on disk" >&2
  exit 2
fi

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# drive WHERE: one server on WHERE/d, one drive; writes its figures to
# WHERE/figures. Runs in this shell (not in a command substitution), so
# that a failure stops the script and `cleanup` knows the server.
drive() {
  local where=$1 s0 s1
  serve "$bin" "$where/d" "$where/server.log"
  s0=$(cpu_ticks "$server_pid")
  "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
    --seconds "$seconds" --streams 4 --batch 1000 --start-seconds-ago 10800 \
    --json >"$where/drive.json"
  s1=$(cpu_ticks "$server_pid")
  curl -sf "http://127.0.0.1:$((base + 1))/metrics" >"$where/metrics"
  stop
  python3 - "$where/drive.json" "$where/metrics" "$(( s1 - s0 ))" "$ticks" >"$where/figures" <<'EOF'
import json, sys
drive = json.load(open(sys.argv[1]))
metrics = {}
for line in open(sys.argv[2]):
    if line.startswith("#") or not line.strip():
        continue
    name, value = line.rsplit(" ", 1)
    metrics[name.split("{")[0]] = metrics.get(name.split("{")[0], 0.0) + float(value)
spans = drive["spans_acked"]
if drive["failed_requests"] or not spans:
    sys.exit(f"the drive failed: {drive['failed_requests']} failed requests, {spans} spans acked, "
             f"first error {drive.get('first_error')}")
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
  "$bin/tracelake-bench" ceiling --threads 2 --paths protobuf >"$disk/ceiling.json"
  ceiling=$(python3 -c 'import json, sys; print(format(json.load(open(sys.argv[1]))["protobuf"]["spans_per_second"], ",.0f"))' "$disk/ceiling.json")
  echo "round $round ceiling (protobuf, 2 threads): $ceiling spans/s"
  drive "$disk"
  echo "round $round disk:  $(cat "$disk/figures")"
  drive "$shm"
  echo "round $round tmpfs: $(cat "$shm/figures")"
done
