#!/usr/bin/env bash
# Ingest on an S3-compatible store against local disk, alternating in one run
# (BENCHMARKS.md, "Tables on S3 and several ingest nodes"): OTLP/HTTP
# protobuf, 4 streams of 500-span requests, ROUNDS rounds of SECONDS each per
# mode, flushes every 2 s so that uploads and commits happen during the run:
#
#   local    one node, the table in its data directory
#   s3       one node, the table on moto's S3 server (in memory, loopback)
#   s3x2     two ingest nodes on the same table, 2 streams each (the rate is
#            their sum), plus a compactor node
#
# After each run the rows in the table are counted through a query node (or
# the node itself) and compared with the spans acknowledged.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/s3.sh [DIR-WITH-BINARIES] [SECONDS] [ROUNDS]
#
# DIR defaults to target/release, SECONDS to 20, ROUNDS to 3. Needs curl,
# python3 and moto's server (`pip install -r tests/python/requirements.txt`;
# PYTHON names the interpreter that has it). Everything listens on 127.0.0.1
# and stops when the script ends.
set -euo pipefail
bin=${1:-target/release}
seconds=${2:-20}
rounds=${3:-3}
python=${PYTHON:-python3}
work=$(mktemp -d)
base=27200
. "$(dirname "$0")/lib.sh"
moto_pid=
extra_pids=()
cleanup() {
  stop
  for pid in "${extra_pids[@]}" $moto_pid; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

moto_start $((base + 50))

common=(--flush-max-age 2s --compaction-delay 0s)

# node NAME PORT-BASE ARGS...: a further server (ports PORT-BASE+1..8).
node() {
  local name=$1 nbase=$2
  shift 2
  launch "$bin" "$work/$name" "$work/$name.log" "$nbase" "$@"
  extra_pids+=("$launched_pid")
}

# drive PORT STREAMS OUT: one driver against the OTLP/HTTP port.
drive() {
  "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$1" --streams "$2" --batch 500 \
    --seconds "$seconds" --pool-mib 128 --json >"$3"
}
field() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]]))' "$1" "$2"; }

# rows PORT: the spans in the table, once everything is flushed.
rows() {
  curl -sf "http://127.0.0.1:$1/api/v1/sql" -H 'content-type: application/json' \
    -d '{"sql": "SELECT count(*) AS n FROM spans"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])'
}

# run MODE ROUND: prints spans/s, spans acknowledged, rows in the table.
run() {
  local mode=$1 round=$2 rate acked
  case $mode in
    local | s3)
      local args=("${common[@]}")
      if [ "$mode" = s3 ]; then
        moto_bucket "b$round-$mode"
        args+=("${s3_args[@]}" --node-id n1)
      fi
      serve "$bin" "$work/d" "$work/server-$mode-$round.log" "${args[@]}"
      drive $((base + 2)) 4 "$work/drive.json"
      rate=$(field "$work/drive.json" spans_per_second)
      acked=$(field "$work/drive.json" spans_acked)
      kill "$server_pid"
      wait "$server_pid" || true
      server_pid=
      # Read back by a node on the same data directory and table (the
      # buffer was flushed at the stop).
      node d $((base + 40)) "${args[@]}"
      echo "$rate $acked $(rows $((base + 41)))"
      kill "${extra_pids[@]}" 2>/dev/null || true
      wait "${extra_pids[@]}" 2>/dev/null || true
      extra_pids=()
      ;;
    s3x2)
      local b="b$round-x2"
      moto_bucket "$b"
      local more=("${s3_args[@]}")
      node "i1-$round" $((base + 10)) "${common[@]}" "${more[@]}" --role ingest --node-id i1
      node "i2-$round" $((base + 20)) "${common[@]}" "${more[@]}" --role ingest --node-id i2
      node "c-$round" $((base + 30)) "${common[@]}" "${more[@]}" --role compactor
      drive $((base + 12)) 2 "$work/d1.json" &
      local d1=$!
      drive $((base + 22)) 2 "$work/d2.json"
      wait $d1
      rate=$(($(field "$work/d1.json" spans_per_second) + $(field "$work/d2.json" spans_per_second)))
      acked=$(($(field "$work/d1.json" spans_acked) + $(field "$work/d2.json" spans_acked)))
      for pid in "${extra_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
      for pid in "${extra_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
      extra_pids=()
      node "q-$round" $((base + 40)) "${more[@]}" --role query
      echo "$rate $acked $(rows $((base + 41)))"
      kill "${extra_pids[@]}" 2>/dev/null || true
      wait "${extra_pids[@]}" 2>/dev/null || true
      extra_pids=()
      ;;
  esac
}

declare -A rates
for round in $(seq "$rounds"); do
  for mode in local s3 s3x2; do
    read -r rate acked stored < <(run "$mode" "$round")
    echo "round $round $mode: $rate spans/s, $acked acknowledged, $stored in the table"
    [ "$acked" = "$stored" ] || echo "  MISMATCH: acknowledged $acked, stored $stored" >&2
    rates[$mode]="${rates[$mode]:-} $rate"
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
local_rate=$(median "${rates[local]}")
for mode in local s3 s3x2; do
  m=$(median "${rates[$mode]}")
  echo "median $mode: $m spans/s ($(python3 -c "print(round($m / $local_rate, 3))") x local)"
done
