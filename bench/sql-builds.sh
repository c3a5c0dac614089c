#!/usr/bin/env bash
# The runner's SQL suite on a finished store by two builds, interleaved
# query by query and round by round (`tracelake-bench sql`): medians, the
# new build's ratio to the old, and whether both gave the same rows
# (BENCHMARKS.md, "Grouping on strings by their views"). Both servers are
# query-role nodes on STORE, which they only read.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   [DUCKDB=1] bench/sql-builds.sh OLD-BIN-DIR NEW-BIN-DIR STORE [REPEAT]
#
# STORE is a runner's `--data-dir D` store (`D/store`); REPEAT (runs of
# each query on each build) defaults to 10. With DUCKDB=1, DuckDB runs
# each query too, last in each round, over the files the runner listed
# (`D/duckdb_input.json`; the python in TRACELAKE_PYTHON, else python3,
# with duckdb and pytz). The report is JSON on stdout.
# Everything listens on 127.0.0.1 and stops when the script ends.
set -euo pipefail
old=$1 new=$2 store=$3
repeat=${4:-10}
work=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
two_readers "$old" "$store" "$new" "$store"
duckdb=()
[ "${DUCKDB:-0}" = 1 ] && duckdb=(--duckdb "$store/../duckdb_input.json")
"$new/tracelake-bench" sql --endpoint http://127.0.0.1:27801 \
  --endpoint http://127.0.0.1:27901 --repeat "$repeat" ${duckdb[@]+"${duckdb[@]}"}
