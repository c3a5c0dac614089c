#!/usr/bin/env bash
# The Kafka receiver's consumption rate next to OTLP/HTTP ingest, in one
# run (BENCHMARKS.md, "Kafka receiver"): SPANS spans of the seeded workload
# are put on a 4-partition topic of a tansu broker (in memory, loopback) as
# otlp_proto messages of 500 spans, before tracelake starts; the rate is
# spans over the seconds from the server's start until every span is
# accepted (visible to queries; commits follow every --flush-max-age).
# Then the same spans through OTLP/HTTP (`tracelake-bench drive`, 4
# streams, 500 spans per request) into a fresh server. ROUNDS rounds,
# alternating; medians.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   TRACELAKE_TANSU=/var/tmp/tansu/bin/tansu bench/kafka.sh [DIR-WITH-BINARIES] [SPANS] [ROUNDS]
#
# DIR defaults to target/release, SPANS to 1000000, ROUNDS to 3. Needs curl
# and python3. Everything listens on 127.0.0.1 and stops when the script
# ends.
set -euo pipefail
bin=${1:-target/release}
spans=${2:-1000000}
rounds=${3:-3}
tansu=${TRACELAKE_TANSU:-tansu}
work=$(mktemp -d)
base=27400
kafka_port=$((base + 20))
. "$(dirname "$0")/lib.sh"
broker_pid=
cleanup() {
  stop
  [ -z "$broker_pid" ] || { kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

# A fresh broker holding the workload on topic otlp_spans.
broker() {
  [ -z "$broker_pid" ] || { kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; }
  "$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/ \
    >"$work/tansu.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$kafka_port) 2>/dev/null && break
    sleep 0.1
  done
  "$bin/tracelake-bench" kafka --brokers "127.0.0.1:$kafka_port" --topic otlp_spans \
    --partitions 4 --spans "$spans" --batch 500 >"$work/produced.json"
}

accepted() {
  curl -sf "http://127.0.0.1:$((base + 1))/metrics" |
    sed -n "s/^tracelake_spans_accepted_total{protocol=\"$1\"} \([0-9.e+]*\)$/\1/p"
}

kafka_round() {
  broker
  local sent start
  sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spans"])' "$work/produced.json")
  start=$(date +%s.%N)
  serve "$bin" "$work/d" "$work/server-kafka.log" --kafka-brokers "127.0.0.1:$kafka_port" \
    --kafka-topics otlp_spans=otlp_proto --flush-max-age 2s
  while :; do
    local n
    n=$(accepted kafka)
    [ "${n:-0}" = "" ] && n=0
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1] or 0) >= float(sys.argv[2]) else 1)' "${n:-0}" "$sent" && break
    sleep 0.05
  done
  local end
  end=$(date +%s.%N)
  stop
  python3 -c 'import sys; print(round(float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))' "$sent" "$start" "$end" >"$work/rate"
}

http_round() {
  serve "$bin" "$work/d" "$work/server-http.log" --flush-max-age 2s
  "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
    --streams 4 --batch 500 --spans "$spans" --json >"$work/drive.json"
  stop
  python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["spans_per_second"]))' "$work/drive.json" >"$work/rate"
}

declare -A rates
for round in $(seq "$rounds"); do
  # Not in $(...): the broker started in a subshell would outlive it.
  kafka_round
  k=$(cat "$work/rate")
  http_round
  h=$(cat "$work/rate")
  echo "round $round: Kafka $k spans/s, OTLP/HTTP $h spans/s"
  rates[kafka]="${rates[kafka]:-} $k"
  rates[http]="${rates[http]:-} $h"
done
python3 - "${rates[kafka]}" "${rates[http]}" <<'PY'
import statistics, sys
kafka, http = ([float(x) for x in a.split()] for a in sys.argv[1:3])
k, h = statistics.median(kafka), statistics.median(http)
print(f"median: Kafka {k:.0f} spans/s, OTLP/HTTP {h:.0f} spans/s, Kafka/HTTP {k / h:.2f}x")
PY
