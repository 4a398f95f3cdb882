#!/usr/bin/env bash
# Per-request cost of the data-action hop, independent of how busy the machine is: the gateway
# (realistic benchmark action, every feature on, RUST_LOG as shipped) serves a fixed number of
# requests from `ab -k`, and
#   - callgrind (default): instructions (Ir) per request of the whole process, and an estimate of
#     cycles per request from its cache simulation (Ir + 10 × L1 misses + 100 × LL misses —
#     kcachegrind's estimate; the machine's VM exposes no hardware counters to `perf stat`);
#     the top functions by inclusive cost go to bench/out/;
#   - MODE=perf: `perf stat -e task-clock,context-switches` over the same requests (CPU time
#     per request, user + kernel: less stable under load); with PROFILE=1 also a
#     `perf record` profile (self time by symbol) in bench/out/.
# Usage: bench/hopcost.sh [REQUESTS] (default 4000 under callgrind, 40000 with MODE=perf).
# GATEWAY_BIN=path measures a prebuilt binary (default: target/release, built if missing).
# Bounded, loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${MODE:-callgrind}"
if [ "$MODE" = perf ]; then REQUESTS="${1:-40000}"; else REQUESTS="${1:-4000}"; fi
CONNS="${CONNS:-8}"
UP_PORT=19181 NGX_PORT=19182 GW_PORT=19183
OUT=bench/out; mkdir -p "$OUT"
WORK=$(mktemp -d)
GW_PID=""
trap bench_cleanup EXIT
# shellcheck source=bench/lib.sh
. bench/lib.sh

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need ab || ! need valgrind || ! need perf; then
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light apache2-utils valgrind linux-perf >/dev/null
fi
if [ -z "${GATEWAY_BIN:-}" ]; then
  GATEWAY_BIN="${CARGO_TARGET_DIR:-target}/release/genesys-gateway"
  [ -x "$GATEWAY_BIN" ] || cargo build --release --quiet
fi

bench_nginx_conf "$UP_PORT" "$NGX_PORT"
nginx -p "$WORK" -c nginx.conf
bench_gateway_toml "$GW_PORT" "$UP_PORT"
printf '%s' "$BENCH_BODY" > "$WORK/body.json"
URL="http://127.0.0.1:$GW_PORT/v1/actions/benchUser"
load() { # requests → ab's summary lines
  ab -q -k -n "$1" -c "$CONNS" -p "$WORK/body.json" -T application/json -H "Authorization: $BENCH_AUTH" "$URL" \
    | grep -E '^(Complete requests|Failed requests|Non-2xx responses|Keep-Alive requests)' || true
}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
export RUST_LOG="${GW_RUST_LOG:-info}"

if [ "$MODE" = perf ]; then
  "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" > "$WORK/gateway.log" 2>&1 &
  GW_PID=$!
  bench_wait_healthy "$GW_PORT"
  load 2000 >/dev/null
  perf stat -e task-clock,context-switches -p "$GW_PID" -o "$WORK/stat.txt" &
  STAT=$!
  sleep 0.2
  load "$REQUESTS"
  kill -INT "$STAT"; wait "$STAT" || true
  python3 - "$WORK/stat.txt" "$REQUESTS" <<'PY'
import re, sys
text = open(sys.argv[1]).read(); n = int(sys.argv[2])
clock = float(re.search(r'([\d.,]+)\s+msec task-clock', text).group(1).replace(',', ''))
cs = float(re.search(r'([\d,]+)\s+context-switches', text).group(1).replace(',', ''))
print(f"task-clock {clock / n * 1000:.1f} µs/request, context switches {cs / n:.2f}/request ({n} requests)")
PY
  [ -n "${PROFILE:-}" ] || exit 0
  perf record -q -F 2000 -g --call-graph dwarf,16384 -p "$GW_PID" -o "$WORK/perf.data" &
  REC=$!
  sleep 0.2
  load 6000 >/dev/null
  kill -INT "$REC"; wait "$REC" || true
  perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio --percent-limit 0.7 -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -60 > "$OUT/hopcost-perf-$STAMP.txt"
  echo "profile (self time by symbol): $OUT/hopcost-perf-$STAMP.txt"
  exit 0
fi

valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$WORK/cg.out.%p" \
  "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" > "$WORK/gateway.log" 2>&1 &
GW_PID=$!
bench_wait_healthy "$GW_PORT"
load 500 >/dev/null
callgrind_control -z "$GW_PID" >/dev/null
load "$REQUESTS"
callgrind_control -d "$GW_PID" >/dev/null
sleep 1
# The dump made on request is part 1 (`cg.out.<pid>.1`): the counts since they were zeroed.
DUMP=$(ls -t "$WORK"/cg.out.*.1 | head -1)
python3 - "$DUMP" "$REQUESTS" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
events, totals = None, None
for line in open(path):
    if line.startswith('events:'):
        events = line.split()[1:]
    elif line.startswith('totals:') or line.startswith('summary:'):
        totals = [int(x) for x in line.split()[1:]]
t = dict(zip(events, totals))
l1 = t.get('I1mr', 0) + t.get('D1mr', 0) + t.get('D1mw', 0)
ll = t.get('ILmr', 0) + t.get('DLmr', 0) + t.get('DLmw', 0)
cycles = t['Ir'] + 10 * l1 + 100 * ll
print(f"instructions {t['Ir'] / n:,.0f}/request, estimated cycles {cycles / n:,.0f}/request "
      f"(L1 misses {l1 / n:,.0f}, LL misses {ll / n:,.0f}; {n} requests)")
PY
callgrind_annotate --inclusive=yes "$DUMP" 2>/dev/null | head -80 > "$OUT/hopcost-callgrind-$STAMP.txt" || true
cp "$DUMP" "$OUT/hopcost-callgrind-$STAMP.out"
echo "inclusive costs: $OUT/hopcost-callgrind-$STAMP.txt (raw: $OUT/hopcost-callgrind-$STAMP.out)"
