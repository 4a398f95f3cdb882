#!/usr/bin/env bash
# Data-action hop benchmark (the performance target: ≥ 0.8× nginx, +0.3 ms median, +2 ms p99): the same trivial upstream reached
#   (a) directly,
#   (b) through nginx proxy_pass (worker_processes auto, upstream keepalive 64),
#   (c) through the bare hop (bench/bare-hop: hyper server → hyper-util client, the gateway's
#       runtime layout, none of its work — the ceiling of this stack),
#   (d) through the gateway with a realistic action (params + output mapping + output schema +
#       Basic inbound auth + an upstream with an API key),
# measured in one run on loopback with a release build.
#   1. max throughput: wrk -t1 -c32 -d${DURATION}s, POST with a 16-byte JSON body → ratio gateway/nginx
#   2. latency at half load: oha at 50 % of the gateway's max rate → p50/p99 of each path; the
#      gateway's added latency is its percentile minus the direct upstream's.
# Bounded (a few runs of DURATION seconds), loopback only. Usage: bench/dataaction.sh [DURATION]
# GATEWAY_BIN=path measures a prebuilt binary instead of building target/release;
# GW_IO_THREADS=n sets the gateway's server.io_threads (default 0: one per core).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-5}"
CONNS=32
UP_PORT=19081 NGX_PORT=19082 GW_PORT=19083 BARE_PORT=19084
OUT=bench/out; mkdir -p "$OUT"
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; nginx -p "$WORK" -c nginx.conf -s stop 2>/dev/null || true; rm -rf "$WORK"' EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light wrk >/dev/null
fi
need oha || cargo install oha --locked --quiet
cargo build --release --quiet --manifest-path bench/bare-hop/Cargo.toml
BARE_BIN=bench/bare-hop/target/release/bare-hop
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --quiet
  GATEWAY_BIN=./target/release/genesys-gateway
fi

# --- nginx: trivial upstream + proxy -------------------------------------------------------
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_nginx_conf "$UP_PORT" "$NGX_PORT"
nginx -p "$WORK" -c nginx.conf

# --- gateway ---------------------------------------------------------------------------------
bench_gateway_toml "$GW_PORT" "$UP_PORT"
"$BARE_BIN" "127.0.0.1:$BARE_PORT" "http://127.0.0.1:$UP_PORT" "$(nproc)" &
RUST_LOG="${GW_RUST_LOG:-info}" "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" > "$WORK/gateway.log" 2>&1 &
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$GW_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

AUTH="Basic $(printf 'genesys:bench-password' | base64)"
BODY='{"userId":"u-1"}'   # 16 bytes
check=$(curl -fsS -X POST -H "Authorization: $AUTH" -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$GW_PORT/v1/actions/benchUser")
echo "gateway answers: $check"

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "$AUTH"
LUA

rps() { wrk -t1 -c$CONNS -d${DURATION}s -s "$WORK/post.lua" "$1" | awk '/Requests\/sec/ {print $2}'; }
# Warm-up, then the measured runs, interleaved so both see the same machine state.
rps "http://127.0.0.1:$GW_PORT/v1/actions/benchUser" >/dev/null
NGX1=$(rps "http://127.0.0.1:$NGX_PORT/users/u-1")
BARE1=$(rps "http://127.0.0.1:$BARE_PORT/users/u-1")
GW1=$(rps "http://127.0.0.1:$GW_PORT/v1/actions/benchUser")
NGX2=$(rps "http://127.0.0.1:$NGX_PORT/users/u-1")
BARE2=$(rps "http://127.0.0.1:$BARE_PORT/users/u-1")
GW2=$(rps "http://127.0.0.1:$GW_PORT/v1/actions/benchUser")
NGX=$(python3 -c "print(round(($NGX1+$NGX2)/2))")
GW=$(python3 -c "print(round(($GW1+$GW2)/2))")
BARE=$(python3 -c "print(round(($BARE1+$BARE2)/2))")
RATIO=$(python3 -c "print(f'{$GW/$NGX:.2f}')")
BARE_RATIO=$(python3 -c "print(f'{$BARE/$NGX:.2f}')")

HALF=$(python3 -c "print(max(1, round($GW/2)))")
lat() { # url → "p50_ms p99_ms"
  oha --no-tui -z ${DURATION}s -c $CONNS -q "$HALF" --latency-correction -m POST \
      -H "Authorization: $AUTH" -H 'Content-Type: application/json' -d "$BODY" --output-format json "$1" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin)["latencyPercentiles"]; print("%.3f %.3f" % (d["p50"]*1000, d["p99"]*1000))'
}
read -r UP50 UP99 < <(lat "http://127.0.0.1:$UP_PORT/users/u-1")
read -r NG50 NG99 < <(lat "http://127.0.0.1:$NGX_PORT/users/u-1")
read -r BA50 BA99 < <(lat "http://127.0.0.1:$BARE_PORT/users/u-1")
read -r GW50 GW99 < <(lat "http://127.0.0.1:$GW_PORT/v1/actions/benchUser")
ADD50=$(python3 -c "print(f'{$GW50-$UP50:.3f}')")
ADD99=$(python3 -c "print(f'{$GW99-$UP99:.3f}')")

REPORT="$OUT/dataaction-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "### Data-action hop — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t1 -c$CONNS -d${DURATION}s"
  echo
  echo "| path | requests/s (2 runs) | p50 ms @ ${HALF}/s | p99 ms @ ${HALF}/s |"
  echo "|---|---|---|---|"
  echo "| upstream direct | – | $UP50 | $UP99 |"
  echo "| nginx proxy_pass | $NGX1, $NGX2 | $NG50 | $NG99 |"
  echo "| bare hop (ceiling) | $BARE1, $BARE2 | $BA50 | $BA99 |"
  echo "| gateway action | $GW1, $GW2 | $GW50 | $GW99 |"
  echo
  echo "- throughput ratio gateway/nginx: **$RATIO** (target ≥ 0.80); bare hop/nginx: $BARE_RATIO"
  echo "- gateway added latency at half load: median **$ADD50 ms** (target ≤ 0.3), p99 **$ADD99 ms** (target ≤ 2)"
  VERDICT=$(python3 -c "
ok = $RATIO >= 0.80 and $ADD50 <= 0.3 and $ADD99 <= 2.0
print(('PASS' if ok else 'MISS') + ': ratio $RATIO (>= 0.80), added median $ADD50 ms (<= 0.3), added p99 $ADD99 ms (<= 2)')")
  echo
  echo "verdict: $VERDICT"
} | tee "$REPORT"
