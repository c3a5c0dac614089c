#!/usr/bin/env bash
# Ingest rate with TLS and tokens on, against the same server and load with
# both off, alternating in one run (BENCHMARKS.md, "TLS and tokens"): OTLP/HTTP
# protobuf, 4 streams of 500-span requests, ROUNDS rounds of SECONDS each per
# mode; prints each run and the medians.
#
#   cargo build --release -p tracelake -p tracelake-bench
#   bench/tls.sh [DIR-WITH-BINARIES] [SECONDS] [ROUNDS]
#
# DIR defaults to target/release, SECONDS to 20, ROUNDS to 3. Needs openssl
# (the certificates are made here), curl and python3. Everything listens on
# 127.0.0.1 and stops when the script ends.
set -euo pipefail
bin=${1:-target/release}
seconds=${2:-20}
rounds=${3:-3}
work=$(mktemp -d)
base=27100
. "$(dirname "$0")/lib.sh"

# A CA and a server certificate for 127.0.0.1 (P-256).
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tracelake-bench
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
EOF
(
  cd "$work"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -new -config openssl.cnf "${ec[@]}" -keyout ca.key -out ca.csr 2>/dev/null
  openssl x509 -req -in ca.csr -signkey ca.key -days 30 -extfile openssl.cnf -extensions ca \
    -out ca.pem 2>/dev/null
  openssl req -new -config openssl.cnf "${ec[@]}" -keyout server.key -out server.csr 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 30 \
    -extfile openssl.cnf -extensions server -out server.pem 2>/dev/null
)
token=bench-token-$RANDOM$RANDOM
printf '[[tokens]]\nname = "bench"\ntoken = "%s"\nscopes = ["ingest", "query"]\n' "$token" \
  >"$work/tokens.toml"

# run MODE ROUND: one server, one drive; prints spans/s.
run() {
  local mode=$1 round=$2 extra=() drive=()
  scheme=http
  if [ "$mode" = secure ]; then
    extra=(--tls-cert-file "$work/server.pem" --tls-key-file "$work/server.key"
      --auth-tokens-file "$work/tokens.toml")
    scheme=https
    drive=(--ca-file "$work/ca.pem" --token "$token")
  fi
  serve "$bin" "$work/d" "$work/server-$mode-$round.log" "${extra[@]}"
  "$bin/tracelake-bench" drive --endpoint "$scheme://127.0.0.1:$((base + 2))" \
    --streams 4 --batch 500 --seconds "$seconds" --pool-mib 256 --json "${drive[@]}" \
    >"$work/drive-$mode-$round.json"
  stop
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["spans_per_second"]), r["failed_requests"])' \
    "$work/drive-$mode-$round.json"
}

plain=() secure=()
for round in $(seq "$rounds"); do
  read -r rate failed < <(run plain "$round")
  echo "round $round plain:  $rate spans/s ($failed failed requests)"
  plain+=("$rate")
  read -r rate failed < <(run secure "$round")
  echo "round $round TLS+tokens: $rate spans/s ($failed failed requests)"
  secure+=("$rate")
done
python3 - "${plain[*]}" "${secure[*]}" <<'EOF'
import statistics, sys
plain = [float(x) for x in sys.argv[1].split()]
secure = [float(x) for x in sys.argv[2].split()]
p, s = statistics.median(plain), statistics.median(secure)
print(f"median plain {p:.0f} spans/s, TLS+tokens {s:.0f} spans/s, ratio {s / p:.3f}")
EOF
