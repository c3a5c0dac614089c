#!/usr/bin/env bash
# Trace lookups by one build on two stores of the same spans, alternated:
# two runner stores made with the same `--seed` and `--spans` (the
# workload is the same spans, shifted in time) by two builds whose files
# differ (BENCHMARKS.md, "Columns that hold nothing"). Both servers are
# query-role nodes that only read their store.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/lookups-stores.sh BIN-DIR STORE-A STORE-B [ROUNDS] [IDS]
#
# A store is a runner's `--data-dir D` store (`D/store`); ROUNDS defaults
# to 3, IDS (trace ids looked up one at a time, root spans in span-id
# order as the runner picks them, taken from STORE-A) to 400. Needs curl
# and python3. Everything listens on 127.0.0.1 and stops when the script
# ends.
set -euo pipefail
bin=$1 a=$2 b=$3
rounds=${4:-3}
count=${5:-400}
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
two_readers "$bin" "$a" "$bin" "$b"

curl -sf "http://127.0.0.1:27801/api/v1/sql" -H 'content-type: application/json' \
  -d "{\"sql\": \"SELECT encode(trace_id, 'hex') AS id FROM spans WHERE parent_span_id IS NULL ORDER BY span_id LIMIT $count\"}" |
  python3 -c 'import json,sys; print("\n".join(r["id"] for r in json.load(sys.stdin)["rows"]))' >"$work/ids"
# The same ids must be in both stores, or the two would not compare.
missing=$(head -20 "$work/ids" | while read -r id; do
  curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:27901/api/v1/traces/$id"
done | grep -vc '^200$' || true)
[ "$missing" = 0 ] || { echo "STORE-B lacks $missing of 20 of STORE-A's traces: not the same spans" >&2; exit 1; }
lookups 27801 1 "$work/ids" >/dev/null # warm both
lookups 27901 1 "$work/ids" >/dev/null
for round in $(seq "$rounds"); do
  echo "round $round A: $(lookups 27801 1 "$work/ids")"
  echo "round $round B: $(lookups 27901 1 "$work/ids")"
done
