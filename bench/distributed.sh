#!/usr/bin/env bash
# Distributed SQL against one query node, on one table on S3 (moto's
# server on loopback), in one sitting: an ingest node loads SPANS spans of
# the benchmark's workload; then a query node alone and a query node
# coordinating two SQL workers (itself and a second query node) run the
# benchmark's SQL suite, interleaved, REPEAT times each
# (`tracelake-bench sql`): medians, ratios to the single node, and whether
# the answers are equal. Every process shares this machine's cores, so
# this measures the cost of distribution, not the speed-up of more
# machines.
#
#   [OLD_BIN=dir] bench/distributed.sh [BIN_DIR] [SPANS] [REPEAT]
#   (needs moto: pip install 'moto[s3]' flask flask-cors boto3)
set -euo pipefail
bin=${1:-target/release}
spans=${2:-2000000}
repeat=${3:-10}
python=${PYTHON:-python3}
work=$(mktemp -d)
base=28200
. "$(dirname "$0")/lib.sh"
moto_pid=
pids=()
cleanup() {
  for pid in "${pids[@]}" $moto_pid; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

moto_start $((base + 90))
moto_bucket dist
s3=("${s3_args[@]}")
export TRACELAKE_PEER_TOKEN=bench-secret

node() {
  local name=$1 at=$2
  shift 2
  launch "$bin" "$work/$name" "$work/$name.log" "$at" "${s3[@]}" "$@"
  pids+=("$launched_pid")
}

node ingest "$base" --role ingest,compactor --node-id i1 --flush-max-age 2s
"$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" --spans "$spans" \
  --streams 4 --batch 1000 --pool-mib 512 --json >"$work/drive.json"
# Stopping flushes what is buffered: the query nodes read the table only.
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
pids=()

workers="127.0.0.1:$((base + 20)),127.0.0.1:$((base + 30))"
node single $((base + 10)) --role query
node coordinator $((base + 20)) --role query --sql-worker-listen "127.0.0.1:$((base + 20))" --sql-workers "$workers"
node worker $((base + 30)) --role query --sql-worker-listen "127.0.0.1:$((base + 30))" --sql-workers "$workers"

endpoints=(--endpoint "http://127.0.0.1:$((base + 11))" --endpoint "http://127.0.0.1:$((base + 21))")
# OLD_BIN: another build's directory, run as one more single query node
# listed first (the baseline of the ratios).
if [ -n "${OLD_BIN:-}" ]; then
  launch "$OLD_BIN" "$work/old" "$work/old.log" $((base + 40)) "${s3[@]}" --role query
  pids+=("$launched_pid")
  endpoints=(--endpoint "http://127.0.0.1:$((base + 41))" "${endpoints[@]}")
fi

echo "spans loaded: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spans_acked"])' "$work/drive.json")" >&2
"$bin/tracelake-bench" sql --repeat "$repeat" "${endpoints[@]}"
