#!/usr/bin/env bash
# Trace lookups on a table on moto's S3 server, by query nodes of two builds
# alternated, one and four at a time (BENCHMARKS.md, "Reads that share the
# table's refresh"). An ingest node (NEW's) fills the table for SECONDS
# (flushed every 2 s, not compacted), then stops; the query nodes read it.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/lookups-s3.sh OLD-BIN-DIR NEW-BIN-DIR [SECONDS] [ROUNDS] [IDS]
#
# SECONDS defaults to 15, ROUNDS to 2, IDS to 100. Needs curl, python3 and
# moto's server (`pip install -r tests/python/requirements.txt`; PYTHON names
# the interpreter that has it). Everything listens on 127.0.0.1 and stops
# when the script ends.
set -euo pipefail
old=$1 new=$2
seconds=${3:-15}
rounds=${4:-2}
count=${5:-100}
python=${PYTHON:-python3}
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
moto_pid=
pids=()
trap 'kill "${pids[@]}" $moto_pid 2>/dev/null; rm -rf "$work"' EXIT
moto_start 28100
moto_bucket lookups

launch "$new" "$work/ingest" "$work/ingest.log" 28000 "${s3_args[@]}" --node-id i1 \
  --flush-max-age 2s --compaction-interval 0s
ingest=$launched_pid
"$new/tracelake-bench" drive --endpoint http://127.0.0.1:28002 --streams 4 --batch 500 \
  --seconds "$seconds" --pool-mib 256 --json >"$work/drive.json"
sleep 5
curl -sf http://127.0.0.1:28001/api/v1/sql -H 'content-type: application/json' \
  -d "{\"sql\": \"SELECT encode(trace_id, 'hex') AS id FROM spans WHERE parent_span_id IS NULL ORDER BY span_id LIMIT $count\"}" |
  python3 -c 'import json,sys; print("\n".join(r["id"] for r in json.load(sys.stdin)["rows"]))' >"$work/ids"
curl -sf http://127.0.0.1:28001/api/v1/storage |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["rows"], "spans in", d["files"], "files")'
kill "$ingest"
wait "$ingest" 2>/dev/null || true

launch "$old" "$work/old" "$work/old.log" 28200 "${s3_args[@]}" --role query
pids+=("$launched_pid")
launch "$new" "$work/new" "$work/new.log" 28300 "${s3_args[@]}" --role query
pids+=("$launched_pid")

for round in $(seq "$rounds"); do
  for build in old new; do
    port=$([ $build = old ] && echo 28201 || echo 28301)
    echo "round $round $build one at a time: $(lookups $port 1 "$work/ids")"
    echo "round $round $build four at a time: $(lookups $port 4 "$work/ids")"
  done
done
