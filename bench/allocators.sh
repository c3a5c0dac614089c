#!/usr/bin/env bash
# Ingest with other allocators put in front of one release server
# (BENCHMARKS.md, "jemalloc"): for ROUNDS rounds, for glibc's malloc (as the
# binary has it), mimalloc and jemalloc from Debian's packages
# (`apt-get install libmimalloc2.0 libjemalloc2`) through LD_PRELOAD, a
# fresh `tracelake serve` on loopback, then the driver for SECONDS with
# OTLP/HTTP protobuf and again with OTLP/JSON (4 streams of 500-span
# requests, durable before ack). Prints one JSON line per run: spans/s, the
# server's CPU a span (from /proc/PID/stat) and its peak RSS.
#
#   bench/allocators.sh BIN_DIR [SECONDS] [ROUNDS]
#
# BIN_DIR holds a release `tracelake` and `tracelake-bench`. A binary that
# sets its own global allocator (as tracelake does since jemalloc) keeps
# it whatever is preloaded: measure a build from before that, or compare
# builds with bench/decoders.sh.
set -euo pipefail
bin=$1
seconds=${2:-20}
rounds=${3:-3}
base=27300
. "$(dirname "$0")/lib.sh"
work=$(mktemp -d)
lib=/usr/lib/x86_64-linux-gnu
for round in $(seq "$rounds"); do
  for alloc in glibc mimalloc jemalloc; do
    case $alloc in
      glibc) preload= ;;
      mimalloc) preload=$lib/libmimalloc.so.2 ;;
      jemalloc) preload=$lib/libjemalloc.so.2 ;;
    esac
    for encoding in protobuf json; do
      rm -rf "$work/d"
      LD_PRELOAD=$preload launch "$bin" "$work/d" "$work/server.log" "$base"
      pid=$launched_pid
      cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      "$bin/tracelake-bench" drive --endpoint "http://127.0.0.1:$((base + 2))" \
        --seconds "$seconds" --streams 4 --batch 500 --encoding "$encoding" --json >"$work/report"
      cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
      kill "$pid"
      wait "$pid" || true
      python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
ticks, round_, hwm = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
print(json.dumps({"round": round_, "alloc": sys.argv[2], "encoding": sys.argv[3],
  "spans_per_second": round(r["spans_per_second"]),
  "server_cpu_us_per_span": round(ticks * 1e4 / r["spans_acked"], 2),
  "peak_rss_mib": hwm // 1024}))' "$work/report" "$alloc" "$encoding" $((cpu1 - cpu0)) "$round" "$hwm"
    done
  done
done
rm -rf "$work"
