#!/usr/bin/env bash
# Trace lookups on a finished store by two builds, alternated: one at a
# time, four at a time, and one at a time beside Jaeger searches of 20
# traces run back to back (BENCHMARKS.md, "Reads that share the table's
# refresh"). Both servers are query-role nodes on STORE, which they only
# read.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/lookups.sh OLD-BIN-DIR NEW-BIN-DIR STORE [ROUNDS] [IDS]
#
# STORE is a runner's `--data-dir D` store (`D/store`); ROUNDS defaults to
# 3, IDS (trace ids looked up, root spans in span-id order as the runner
# picks them) to 400. Needs curl and python3. Everything listens on
# 127.0.0.1 and stops when the script ends.
set -euo pipefail
old=$1 new=$2 store=$3
rounds=${4:-3}
count=${5:-400}
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
two_readers "$old" "$store" "$new" "$store"

sql() {
  curl -sf "http://127.0.0.1:27801/api/v1/sql" -H 'content-type: application/json' \
    -d "{\"sql\": \"$1\"}"
}
sql "SELECT encode(trace_id, 'hex') AS id FROM spans WHERE parent_span_id IS NULL ORDER BY span_id LIMIT $count" |
  python3 -c 'import json,sys; print("\n".join(r["id"] for r in json.load(sys.stdin)["rows"]))' >"$work/ids"
# The Jaeger search: the busiest service of the last hour, 20 traces.
read -r service start end < <(sql "SELECT service_name AS s, max(start_time_unix_nano) AS m FROM spans GROUP BY 1 ORDER BY count(*) DESC LIMIT 1" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["rows"][0]; e=r["m"]//1000+1; print(r["s"], e-3600*10**6, e)')
search="/jaeger/api/traces?service=$service&limit=20&start=$start&end=$end"

# beside PORT: half the ids one at a time while searches run; and the
# searches done meanwhile.
beside() {
  rm -f "$work/stop" "$work/searches"
  (while [ ! -f "$work/stop" ]; do
    curl -s -o /dev/null "http://127.0.0.1:$1$search"
    echo >>"$work/searches"
  done) &
  head -n $((count / 2)) "$work/ids" >"$work/half"
  lookups "$1" 1 "$work/half"
  touch "$work/stop"
  wait $!
  echo ", searches $(wc -l <"$work/searches")"
}

for round in $(seq "$rounds"); do
  for build in old new; do
    port=$([ $build = old ] && echo 27801 || echo 27901)
    echo "round $round $build one at a time: $(lookups $port 1 "$work/ids")"
    echo "round $round $build four at a time: $(lookups $port 4 "$work/ids")"
    echo "round $round $build beside searches: $(beside $port)"
  done
done
