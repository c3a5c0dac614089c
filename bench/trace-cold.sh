#!/usr/bin/env bash
# Trace by id right after a start, as the benchmark runner reads it: a
# query server (`--role query`) started on a store a runner left
# (`tracelake-bench run --data-dir DATA`), the runner's IDS trace ids
# (root spans in span-id order: traces of every hour, so nearly every
# read is the first in its file) read once ("first"), then once more
# ("again"); the server's peak RSS; stopped. Each round starts every given
# build in turn (BENCHMARKS.md, "Trace metadata cache").
#
#   cargo build --release -p tracelake
#   bench/trace-cold.sh DATA DIR-WITH-BINARIES [DIR-WITH-BINARIES...]
#
# ROUNDS (environment) defaults to 3, IDS to 20. Needs curl and python3.
# The server listens on 127.0.0.1 and stops when the script ends; it only
# reads the store.
set -euo pipefail
data=$1
shift
rounds=${ROUNDS:-3}
ids=${IDS:-20}
work=$(mktemp -d)
base=27400
. "$(dirname "$0")/lib.sh"

# read_all: every id once; the latencies (ms), one a line.
read_all() {
  while read -r id; do
    read -r code seconds < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' \
      "http://127.0.0.1:$((base + 1))/api/v1/traces/$id")
    [ "$code" = 200 ] || { echo "trace $id answered $code" >&2; exit 1; }
    python3 -c "print($seconds * 1000)"
  done <"$work/ids"
}

for round in $(seq "$rounds"); do
  for bin in "$@"; do
    launch "$bin" "$data" "$work/server.log" "$base" --role query
    server_pid=$launched_pid
    curl -sf "http://127.0.0.1:$((base + 1))/api/v1/sql" -H 'content-type: application/json' \
      -d "{\"sql\": \"SELECT encode(trace_id, 'hex') AS id FROM spans WHERE parent_span_id IS NULL ORDER BY span_id LIMIT $ids\"}" |
      python3 -c 'import json,sys; print("\n".join(r["id"] for r in json.load(sys.stdin)["rows"]))' >"$work/ids"
    read_all >"$work/first"
    read_all >"$work/again"
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
    stop
    python3 - "$round" "$bin" "$work/first" "$work/again" "$rss" <<'PY'
import statistics, sys
round_, bin_, first, again, rss = sys.argv[1:]
med = lambda f: statistics.median(float(x) for x in open(f))
print(f"round {round_} {bin_}: first {med(first):.1f} ms, again {med(again):.1f} ms "
      f"(medians of {sum(1 for _ in open(first))}), peak RSS {int(rss) // 1024} MiB")
PY
  done
done
