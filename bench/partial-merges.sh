#!/usr/bin/env bash
# What compaction writes and spends on an hour of more files than one job
# merges (BENCHMARKS.md, "Compaction's partial merges"): SPANS spans sent
# into a closed hour (two hours ago) with compaction off, which leaves the
# hour in many flushed files; then, for each of two server builds in turn,
# ROUNDS times, a copy of that table compacted at nice 0 with no delay until
# the job that merges the whole hour has committed. Prints, per run, the
# rows compaction wrote, its jobs' seconds and the server's CPU seconds.
#
#   bench/partial-merges.sh BASELINE_BIN_DIR NEW_BIN_DIR [SPANS] [ROUNDS]
#
# Each directory holds a release `tracelake`; the driver is NEW_BIN_DIR's
# `tracelake-bench`. SPANS defaults to 15000000 (70 flushed files on the
# project's machine), ROUNDS to 2. Needs curl and python3; about 2 GB of
# disk under $TMPDIR. The spans must fall in one hour: a run whose spans
# cross an hour's end stops after 30 minutes with the server's log.
set -euo pipefail
baseline=$1
new=$2
spans=${3:-15000000}
rounds=${4:-2}
work=$(mktemp -d)
base=27700
. "$(dirname "$0")/lib.sh"

metric() {
  curl -s "http://127.0.0.1:$((base + 1))/metrics" | awk -v k="$1" '$1 == k { print $2 }'
}

serve "$new" "$work/table" "$work/fill.log" --compaction-interval 0s
report=$("$new/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
  --spans "$spans" --streams 4 --batch 500 --start-seconds-ago 7200 --json)
stop
acked=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["spans_acked"])' "$report")
files=$(find "$work/table" -name 'part-*.parquet' | wc -l)
echo "table: $acked spans in $files flushed files"

for round in $(seq "$rounds"); do
  for build in baseline new; do
    bin=$baseline
    [ "$build" = new ] && bin=$new
    rm -rf "$work/copy"
    cp -a "$work/table" "$work/copy"
    log="$work/$build-$round.log"
    launch "$bin" "$work/copy" "$log" "$base" \
      --compaction-interval 1s --compaction-delay 0s --compaction-nice 0 --vacuum-grace 1h
    server_pid=$launched_pid
    cpu0=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
    # The hour is compacted when a job has merged all of its rows.
    for _ in $(seq 3600); do
      grep -q "compaction job .* rows=$acked " "$log" && break
      sleep 0.5
    done
    grep -q "compaction job .* rows=$acked " "$log" || { cat "$log" >&2; exit 1; }
    cpu1=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat")
    echo "{\"build\":\"$build\",\"round\":$round,\"rows_written\":$(metric tracelake_compaction_rows_total),\"jobs\":$(metric tracelake_compaction_seconds_count),\"job_seconds\":$(metric tracelake_compaction_seconds_sum),\"cpu_seconds\":$(((cpu1 - cpu0) / 100))}"
    stop
  done
done
rm -rf "$work"
