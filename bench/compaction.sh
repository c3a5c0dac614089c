#!/usr/bin/env bash
# Ingest rate while compaction works on the same machine, with the
# compaction thread at nice 0, at the default nice 10 and under Linux's
# SCHED_IDLE policy (`chrt --idle`, set from outside on the running
# thread), and with compaction off as the baseline; alternating, ROUNDS
# rounds of SECONDS each (BENCHMARKS.md, "Compaction against ingest").
#
# SHAPE `small` (the default): spans sent into a closed hour (two hours
# ago) in 500-span requests, flushed every 2 s into small files that
# compaction (every second, no delay) keeps merging. SHAPE `runner`: the
# benchmark runner's server settings and requests (1,000-span requests
# into the six closed hours before this one, flushes at least every 5 s,
# compaction every 2 s, no delay).
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/compaction.sh [DIR-WITH-BINARIES] [SECONDS] [ROUNDS] [SHAPE]
#
# DIR defaults to target/release, SECONDS to 30, ROUNDS to 2. Needs curl,
# python3 and chrt (util-linux). Everything listens on 127.0.0.1 and stops
# when the script ends.
set -euo pipefail
bin=${1:-target/release}
seconds=${2:-30}
rounds=${3:-2}
shape=${4:-small}
case $shape in
  small)
    server_args=(--flush-max-age 2s --compaction-delay 0s --compaction-target-bytes 67108864)
    interval=1s
    drive_args=(--batch 500 --pool-mib 256 --start-seconds-ago 7200) ;;
  runner)
    server_args=(--max-span-age 30d --retention 0s --compaction-delay 0s --vacuum-grace 1h
      --retention-check-interval 10s --flush-max-age 5s)
    interval=2s
    drive_args=(--batch 1000 --pool-mib 2048 --start-seconds-ago 21600) ;;
  *) echo "SHAPE is small or runner" >&2; exit 2 ;;
esac
work=$(mktemp -d)
base=27200
. "$(dirname "$0")/lib.sh"

# run MODE: one server, one drive; prints spans/s and compactions done.
run() {
  local mode=$1 extra=() tid
  case $mode in
    off) extra=(--compaction-interval 0s) ;;
    nice0 | idle) extra=(--compaction-interval "$interval" --compaction-nice 0) ;;
    nice10) extra=(--compaction-interval "$interval" --compaction-nice 10) ;;
  esac
  serve "$bin" "$work/d" "$work/server-$mode.log" "${server_args[@]}" "${extra[@]}"
  if [ "$mode" = idle ]; then
    tid=$(grep -l '^tracelake-compa' /proc/"$server_pid"/task/*/comm | head -1 | cut -d/ -f5) || true
    if [ -z "$tid" ] || ! chrt --idle -p 0 "$tid"; then
      stop
      echo "cannot put the compaction thread under SCHED_IDLE" >&2
      exit 1
    fi
  fi
  "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
    --streams 4 --seconds "$seconds" "${drive_args[@]}" --json >"$work/drive.json"
  local compactions
  compactions=$(curl -sf "http://127.0.0.1:$((base + 1))/metrics" |
    sed -n 's/^tracelake_compactions_total \([0-9.]*\)$/\1/p')
  stop
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["spans_per_second"]), r["failed_requests"], sys.argv[2] or 0)' \
    "$work/drive.json" "$compactions"
}

declare -A rates
for round in $(seq "$rounds"); do
  for mode in off nice0 nice10 idle; do
    read -r rate failed compactions < <(run "$mode")
    echo "round $round $mode: $rate spans/s ($failed failed requests, $compactions compactions)"
    rates[$mode]="${rates[$mode]:-} $rate"
  done
done
python3 - "${rates[off]}" "${rates[nice0]}" "${rates[nice10]}" "${rates[idle]}" <<'PY'
import statistics, sys
off, nice0, nice10, idle = ([float(x) for x in a.split()] for a in sys.argv[1:5])
o = statistics.median(off)
for name, r in [("compaction off", off), ("nice 0", nice0), ("nice 10", nice10), ("SCHED_IDLE", idle)]:
    m = statistics.median(r)
    print(f"median {name}: {m:.0f} spans/s, {m / o:.3f} of compaction off")
PY
