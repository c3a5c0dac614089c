#!/usr/bin/env bash
# The first trace lookup after a restart, with the trace index's keys
# persisted beside the data files and without them (each file's footer and
# key column read instead, as before they were kept): a table of many small
# files (flushed every second, compaction off), one server start per
# lookup, alternating, ROUNDS rounds (BENCHMARKS.md, "Persisted trace
# index").
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/trace-index.sh [DIR-WITH-BINARIES] [SECONDS] [ROUNDS]
#
# DIR defaults to target/release, SECONDS (of ingest) to 60, ROUNDS to 5.
# Needs curl and python3. Everything listens on 127.0.0.1 and stops when
# the script ends.
set -euo pipefail
bin=${1:-target/release}
seconds=${2:-60}
rounds=${3:-5}
work=$(mktemp -d)
base=27300
. "$(dirname "$0")/lib.sh"
args=(--flush-max-age 1s --compaction-interval 0s)
table="$work/d/tenants/default/spans"

serve "$bin" "$work/d" "$work/ingest.log" "${args[@]}"
"$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
  --streams 4 --batch 500 --seconds "$seconds" --pool-mib 256 --json >"$work/drive.json"
sql() {
  curl -sf "http://127.0.0.1:$((base + 1))/api/v1/sql" -H 'content-type: application/json' \
    -d "{\"sql\": \"$1\"}"
}
# The last trace written: its keys are in the last file the index loads.
id=$(sql "SELECT encode(trace_id, 'hex') AS id FROM spans ORDER BY start_time_unix_nano DESC LIMIT 1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["id"])')
stop
files=$(find "$table" -name '*.parquet' -not -path '*/_delta_log/*' | wc -l)
spans=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spans_acked"])' "$work/drive.json")
echo "$spans spans in $files data files; looking up trace $id"

# lookup MODE: a start, the first lookup's seconds, a stop.
lookup() {
  [ "$1" = persisted ] || rm -rf "$table/_trace_index"
  launch "$bin" "$work/d" "$work/server-$1.log" "$base" "${args[@]}"
  server_pid=$launched_pid
  local code seconds
  read -r code seconds < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' \
    "http://127.0.0.1:$((base + 1))/api/v1/traces/$id")
  stop
  [ "$code" = 200 ] || { echo "lookup answered $code" >&2; exit 1; }
  echo "$seconds"
}

declare -A times
for round in $(seq "$rounds"); do
  for mode in persisted columns; do
    t=$(lookup "$mode")
    echo "round $round, keys $mode: first lookup ${t} s"
    times[$mode]="${times[$mode]:-} $t"
  done
done
python3 - "${times[persisted]}" "${times[columns]}" <<'PY'
import statistics, sys
persisted, columns = ([float(x) for x in a.split()] for a in sys.argv[1:3])
p, c = statistics.median(persisted), statistics.median(columns)
print(f"median first lookup: persisted keys {p * 1000:.1f} ms, key columns {c * 1000:.1f} ms, "
      f"{p / c:.2f}x")
PY
