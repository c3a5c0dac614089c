#!/usr/bin/env bash
# Local disk, one node on S3, and two ingest + two query nodes on S3, in one
# run (BENCHMARKS.md, "Reads on S3 and on a cluster (issue 15)"). Each setup gets the
# same spans: the benchmark's workload with seed 1 and with seed 2, SPANS/2
# each, sent at once by two drivers (OTLP/HTTP protobuf, 2 streams of
# 500-span requests each; the rate is their sum), with flushes every 2 s:
#
#   local    one node, the table in its data directory
#   s3       one node, the table on moto's S3 server (in memory, loopback)
#   cluster  two ingest nodes (one also the compactor) on one S3 table, each
#            fed by one driver; two query nodes, each asking both ingest
#            nodes for what they have not committed (--ingest-peers) and
#            running SQL on both query nodes (--sql-workers)
#
# Once every acknowledged span is in each table, the nodes stay up and the
# reads of the runner's query suite (`tracelake-bench reads`: trace by id,
# absent ids, searches, the cross-trace breakdown) and its SQL suite
# (`tracelake-bench sql`) run against the local node, the S3 node and the
# first query node, interleaved, REPEAT times each: medians and ratios to
# local disk. Every process shares this machine's cores.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/cluster.sh [DIR-WITH-BINARIES] [SPANS] [REPEAT]
#
# DIR defaults to target/release, SPANS to 1000000, REPEAT to 20. Needs curl,
# python3 and moto's server (`pip install -r tests/python/requirements.txt`;
# PYTHON names the interpreter that has it). Everything listens on 127.0.0.1
# and stops when the script ends.
set -euo pipefail
bin=${1:-target/release}
spans=${2:-1000000}
repeat=${3:-20}
python=${PYTHON:-python3}
work=$(mktemp -d)
base=29200
. "$(dirname "$0")/lib.sh"
moto_pid=
pids=()
cleanup() {
  local status=$?
  # The nodes first: a compactor gives its lease back to the store on
  # its way out.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "$moto_pid" ] || kill "$moto_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "$status" != 0 ]; then
    for log in "$work"/*.log; do
      [ -e "$log" ] && { echo "== $log" >&2; tail -20 "$log" >&2; }
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

moto_start $((base + 90))
export TRACELAKE_PEER_TOKEN=bench-secret

# node NAME PORT-BASE ARGS...: a server on ports PORT-BASE+1..8.
node() {
  local name=$1 at=$2
  shift 2
  launch "$bin" "$work/$name" "$work/$name.log" "$at" --flush-max-age 2s "$@"
  pids+=("$launched_pid")
}

# drive PORT SEED OUT: one driver, SPANS/2 spans of SEED, to an OTLP/HTTP port.
drive() {
  "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$1" --streams 2 --batch 500 \
    --spans $((spans / 2)) --seed "$2" --pool-mib 256 --json >"$3"
}
field() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]]))' "$1" "$2"; }

# load NAME PORT1 PORT2: both drivers at once (seed 1 to PORT1, seed 2 to
# PORT2); sets rate (summed) and acked.
load() {
  drive "$2" 1 "$work/$1-1.json" &
  local first=$!
  drive "$3" 2 "$work/$1-2.json" || { echo "$1: the second driver failed" >&2; exit 1; }
  wait "$first" || { echo "$1: the first driver failed" >&2; exit 1; }
  rate=$(($(field "$work/$1-1.json" spans_per_second) + $(field "$work/$1-2.json" spans_per_second)))
  acked=$(($(field "$work/$1-1.json" spans_acked) + $(field "$work/$1-2.json" spans_acked)))
}

# settle NAME HTTP-PORT ACKED: waits until the node at HTTP-PORT sees
# every acknowledged span (a request stored whose acknowledgement was lost
# makes more).
settle() {
  local n=0
  for _ in $(seq 300); do
    n=$(curl -sf "http://127.0.0.1:$2/api/v1/sql" -H 'content-type: application/json' \
      -d '{"sql": "SELECT count(*) AS n FROM spans"}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])') || n=0
    [ "$n" -ge "$3" ] && return
    sleep 1
  done
  echo "$1: $n spans in the table, $3 acknowledged" >&2
  exit 1
}

node local "$base" --node-id l1
load local $((base + 2)) $((base + 2))
local_rate=$rate local_acked=$acked
settle local $((base + 1)) "$local_acked"

moto_bucket one
node s3 $((base + 10)) "${s3_args[@]}" --node-id s1
load s3 $((base + 12)) $((base + 12))
s3_rate=$rate s3_acked=$acked
settle s3 $((base + 11)) "$s3_acked"

moto_bucket two
node i1 $((base + 20)) "${s3_args[@]}" --role ingest,compactor --node-id i1
node i2 $((base + 30)) "${s3_args[@]}" --role ingest --node-id i2
peers="127.0.0.1:$((base + 21)),127.0.0.1:$((base + 31))"
workers="127.0.0.1:$((base + 48)),127.0.0.1:$((base + 58))"
node q1 $((base + 40)) "${s3_args[@]}" --role query --ingest-peers "$peers" \
  --sql-worker-listen "127.0.0.1:$((base + 48))" --sql-workers "$workers"
node q2 $((base + 50)) "${s3_args[@]}" --role query --ingest-peers "$peers" \
  --sql-worker-listen "127.0.0.1:$((base + 58))" --sql-workers "$workers"
load cluster $((base + 22)) $((base + 32))
cluster_rate=$rate cluster_acked=$acked
# The query node reads the ingest nodes' buffers too: wait on the second
# query node, which counts the table and the buffers alike.
settle cluster $((base + 51)) "$cluster_acked"
# Two flush periods more: what was buffered is in the tables too.
sleep 5

ratio() { python3 -c "print(round($1 / $2, 3))"; }
echo "ingest local:   $local_rate spans/s ($local_acked acknowledged)"
echo "ingest s3:      $s3_rate spans/s ($s3_acked acknowledged), $(ratio "$s3_rate" "$local_rate") x local"
echo "ingest cluster: $cluster_rate spans/s ($cluster_acked acknowledged), $(ratio "$cluster_rate" "$local_rate") x local"

endpoints=(--endpoint "http://127.0.0.1:$((base + 1))" --endpoint "http://127.0.0.1:$((base + 11))"
  --endpoint "http://127.0.0.1:$((base + 41))")
echo "endpoints: local, s3, cluster (query node q1)"
"$bin/tracelake-bench" reads --repeat "$repeat" "${endpoints[@]}"
"$bin/tracelake-bench" sql --repeat "$repeat" "${endpoints[@]}"
