# Shared by the benchmark scripts (sourced): one tracelake server on
# loopback, its listeners on ports base+1 (query/UI), base+2 (OTLP/HTTP),
# base+3 (OTLP/gRPC), base+4 (Flight SQL), base+5 (Zipkin), base+6 (Jaeger
# HTTP), base+7 and base+8 (Jaeger UDP). The script sets `base`.

server_pid=

# launch BIN DATA_DIR LOG PORT_BASE [SERVER_ARGS...]: starts BIN/tracelake on
# DATA_DIR (kept as it is), its listeners on PORT_BASE+1..8, its log in LOG,
# and waits until /ready answers (over https when `scheme` is https; the
# probe does not check the certificate). Sets launched_pid; exits with the
# log when the server does not come up.
launch() {
  local bin=$1 data=$2 log=$3 at=$4
  shift 4
  "$bin/tracelake" serve --data-dir "$data" \
    --http-listen 127.0.0.1:$((at + 1)) --otlp-http-listen 127.0.0.1:$((at + 2)) \
    --otlp-grpc-listen 127.0.0.1:$((at + 3)) --flight-sql-listen 127.0.0.1:$((at + 4)) \
    --zipkin-listen 127.0.0.1:$((at + 5)) --jaeger-http-listen 127.0.0.1:$((at + 6)) \
    --jaeger-compact-listen 127.0.0.1:$((at + 7)) --jaeger-binary-listen 127.0.0.1:$((at + 8)) \
    "$@" 2>"$log" &
  launched_pid=$!
  for _ in $(seq 100); do
    curl -sfk "${scheme:-http}://127.0.0.1:$((at + 1))/ready" >/dev/null && return
    sleep 0.2
  done
  echo "server did not start" >&2
  cat "$log" >&2
  exit 1
}

# serve BIN DATA_DIR LOG [SERVER_ARGS...]: `launch` on an empty DATA_DIR and
# the script's `base`; sets server_pid.
serve() {
  local bin=$1 data=$2 log=$3
  shift 3
  rm -rf "$data"
  launch "$bin" "$data" "$log" "$base" "$@"
  server_pid=$launched_pid
}

# moto_start PORT: moto's S3 server (in memory) on 127.0.0.1:PORT, run by
# $python (which has moto), and the AWS_* credentials the nodes use; sets
# moto_port and moto_pid.
moto_start() {
  moto_port=$1
  "${python:-python3}" -m moto.server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
  moto_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$moto_port" >/dev/null && break; sleep 0.2; done
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
}

# moto_bucket NAME: creates the bucket NAME on moto_start's server and sets
# s3_args, a node's arguments for a table at s3://NAME/t.
moto_bucket() {
  "${python:-python3}" "$(dirname "${BASH_SOURCE[0]}")/../tests/python/s3_bucket.py" \
    "http://127.0.0.1:$moto_port" create "$1" >/dev/null
  s3_args=(--storage-url "s3://$1/t" --s3-endpoint "http://127.0.0.1:$moto_port" --s3-path-style true)
}

# Stops the server that `serve` started.
stop() {
  [ -z "$server_pid" ] || { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
  server_pid=
}

# On exit, by default: the server that `serve` started stops and the
# script's scratch directory `work`, if it set one, goes. A script with more
# to clean up defines its own `cleanup` after sourcing this file.
cleanup() {
  stop
  [ -z "${work:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# two_readers BIN-A STORE-A BIN-B STORE-B: query-role servers, A's HTTP
# port 27801 and B's 27901, on stores they only read, both stopped (and
# the script's `work` removed) when the script ends.
two_readers() {
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
  launch "$1" "$2" "$work/a.log" 27800 --role query
  pids+=("$launched_pid")
  launch "$3" "$4" "$work/b.log" 27900 --role query
  pids+=("$launched_pid")
}

# lookups PORT P IDS: trace by id of every id in the file IDS, P at a time,
# on the server whose HTTP port is PORT; prints lookups/s, the median and
# the p90 (curl's total time).
lookups() {
  local t0 t1 times
  times=$(mktemp)
  t0=$(date +%s.%N)
  xargs -P "$2" -I{} curl -s -o /dev/null -w '%{time_total}\n' \
    "http://127.0.0.1:$1/api/v1/traces/{}" <"$3" >"$times"
  t1=$(date +%s.%N)
  sort -n "$times" | awk -v s="$(echo "$t1 - $t0" | bc)" '{v[NR]=$1}
    END {printf "%.1f lookups/s, median %.1f ms, p90 %.1f ms", NR/s, v[int((NR+1)/2)]*1000, v[int(NR*0.9)]*1000}'
  rm -f "$times"
}
