#!/usr/bin/env bash
# Ingest rate while compaction works on the same machine: spans sent into a
# closed hour (two hours ago), flushed every 2 s into small files that
# compaction (every second, no delay) keeps merging, with the compaction
# thread at nice 0 and at the default nice 10, and with compaction off as the
# baseline; alternating, ROUNDS rounds of SECONDS each (BENCHMARKS.md,
# "Compaction against ingest").
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/compaction.sh [DIR-WITH-BINARIES] [SECONDS] [ROUNDS]
#
# DIR defaults to target/release, SECONDS to 30, ROUNDS to 2. Needs curl and
# python3. Everything listens on 127.0.0.1 and stops when the script ends.
set -euo pipefail
bin=${1:-target/release}
seconds=${2:-30}
rounds=${3:-2}
work=$(mktemp -d)
base=27200
. "$(dirname "$0")/lib.sh"

# run MODE: one server, one drive; prints spans/s and compactions done.
run() {
  local mode=$1 extra=()
  case $mode in
    off) extra=(--compaction-interval 0s) ;;
    nice0) extra=(--compaction-interval 1s --compaction-nice 0) ;;
    nice10) extra=(--compaction-interval 1s --compaction-nice 10) ;;
  esac
  serve "$bin" "$work/d" "$work/server-$mode.log" \
    --flush-max-age 2s --compaction-delay 0s --compaction-target-bytes 67108864 "${extra[@]}"
  "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
    --streams 4 --batch 500 --seconds "$seconds" --pool-mib 256 --start-seconds-ago 7200 \
    --json >"$work/drive.json"
  local compactions
  compactions=$(curl -sf "http://127.0.0.1:$((base + 1))/metrics" |
    sed -n 's/^tracelake_compactions_total \([0-9.]*\)$/\1/p')
  stop
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["spans_per_second"]), r["failed_requests"], sys.argv[2] or 0)' \
    "$work/drive.json" "$compactions"
}

declare -A rates
for round in $(seq "$rounds"); do
  for mode in off nice0 nice10; do
    read -r rate failed compactions < <(run "$mode")
    echo "round $round $mode: $rate spans/s ($failed failed requests, $compactions compactions)"
    rates[$mode]="${rates[$mode]:-} $rate"
  done
done
python3 - "${rates[off]}" "${rates[nice0]}" "${rates[nice10]}" <<'PY'
import statistics, sys
off, nice0, nice10 = ([float(x) for x in a.split()] for a in sys.argv[1:4])
o = statistics.median(off)
for name, r in [("compaction off", off), ("nice 0", nice0), ("nice 10", nice10)]:
    m = statistics.median(r)
    print(f"median {name}: {m:.0f} spans/s, {m / o:.3f} of compaction off")
PY
