#!/usr/bin/env bash
# Event ingest benchmark (targets: batches of 100 ≥ 20 000 durably accepted events/s on SQLite,
# single-event requests ≥ 3 000/s), in one run on loopback with a release build:
#   0. the disk's own limit on the file system of the gateway's database: single-row and
#      100-row `synchronous=FULL` commits/s (examples/disk_commits.rs) — single-event requests/s
#      above the single-row commit rate is what group commit buys;
#   1. single-event requests (ES256 token, a new transaction_id each) with wrk -c${CONNS};
#   2. batches of 100 events per request;
#   3. batches of 100 offered on a fixed schedule at PACED_EVENTS events/s (default 20 000, the
#      target) by PACED_CONNS connections (default 64): does delivery keep up with acceptance at
#      that rate (queue depth each second)?
# After each run, the drain: how fast the rest is delivered with no load beside it;
# on SQLite, then on PostgreSQL when GATEWAY_BENCH_DATABASE_URL is set: a database of the
# bench's own (it is migrated and filled, never cleaned) — not the server's `postgres` database.
# Every accepted event goes to one local target (a trivial HTTP receiver), and the delivery queue
# depth is sampled from /metrics during each run. WORKERS sets `[delivery] workers` (default 8).
# Bounded: each run lasts DURATION seconds. Usage: bench/ingest.sh [DURATION] (default 10).
# RUNS picks runs (default "1 100 paced"; e.g. RUNS=paced for the paced run alone).
# GATEWAY_BIN=path measures a prebuilt binary instead of building target/release; DISK_BIN=path
# likewise for the disk probe (examples/disk_commits). PROFILE=1 also samples the gateway with
# `perf record -g` during each run (bench/out/ingest-<store>-<batch>.perf; read it with
# `perf report -i FILE --no-children`).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS="${CONNS:-64}"
PACED_EVENTS="${PACED_EVENTS:-20000}" PACED_CONNS="${PACED_CONNS:-64}"
WORKERS="${WORKERS:-8}" # [delivery] workers: concurrent delivery attempts (8 is the default)
GW_PORT=19183 RECV_PORT=19184
OUT=bench/out; mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ingest-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; nginx -p "$WORK" -c nginx.conf -s stop 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light wrk >/dev/null
fi
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --quiet
  GATEWAY_BIN=./target/release/genesys-gateway
fi
if [ -z "${DISK_BIN:-}" ]; then
  cargo build --release --quiet --example disk_commits
  DISK_BIN="${CARGO_TARGET_DIR:-target}/release/examples/disk_commits"
fi

# --- the disk's own limit, where the SQLite database will live -------------------------------
DISK=$("$DISK_BIN" "$WORK" 3)
echo "disk ($WORK): $DISK"

# --- a trivial local target: nginx answering 200 to every POST (one worker, so that the target
# takes a bounded share of the two cores; a Python receiver was slower than the gateway) -------
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_nginx_receiver "$RECV_PORT"
nginx -p "$WORK" -c nginx.conf

# --- wrk scripts: a new transaction_id per event ------------------------------------------------
cat > "$WORK/events.lua" <<'LUA'
local counter = 0
local batch = tonumber(os.getenv("BATCH") or "1")
local token = os.getenv("TOKEN")
-- RUN names this wrk invocation: LuaJIT's math.random starts from the same seed every time,
-- so without it each run would repeat the transaction ids of the one before (duplicates).
local prefix = (os.getenv("RUN") or "run") .. "-"
local threads = 0
function setup(thread) threads = threads + 1; thread:set("id", tostring(threads)) end
function init(args) prefix = prefix .. (id or "t") .. "-" end
local function event()
  counter = counter + 1
  return '{"transaction_id":"' .. prefix .. counter .. '","event_type":"Order Created",' ..
         '"timestamp":1714559400,"amount":1234567890.12345678901,"currency":"EUR"}'
end
request = function()
  local body
  if batch == 1 then body = event() else
    local parts = {}
    for i = 1, batch do parts[i] = event() end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return wrk.format("POST", "/v1/events",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
-- RATE (requests/s of this wrk thread): requests leave on a fixed schedule, one every
-- 1000/RATE ms, whatever the answers' latency (wrk's delay() runs before each next request of a
-- connection; every connection of the thread takes the next free slot). A fixed pause after
-- each answer, as before, offered far less than intended once the answers slowed down (16
-- connections × one batch per pause + 46 ms of service time gave 14 000 events/s, not 22 000).
-- When the gateway cannot keep the schedule the slots fall behind and requests go at once:
-- the run is then as fast as it can be and the accepted rate says by how much it fell short.
local rate = tonumber(os.getenv("RATE") or "0")
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock, bench_timespec *ts);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 / rate
  local next_slot = nil
  delay = function()
    local now = now_ms()
    if next_slot == nil or next_slot < now - 1000 then next_slot = now end
    next_slot = next_slot + interval
    local wait = next_slot - now
    if wait < 1 then return 0 end
    return math.floor(wait)
  end
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d non2xx=%d errors=%d\n", summary.requests,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA

config() { bench_ingest_toml "$GW_PORT" "$RECV_PORT" "$1" "$WORKERS"; }

queue_depth() { curl -fs "http://127.0.0.1:$GW_PORT/metrics" | awk '/^gateway_delivery_queue_depth /{printf "%d", $2}'; }

# What was still queued when the load stopped, and how fast the engine delivers it with no
# ingest beside it (bounded: at most 60 s). Depth is what the engine still owes the target.
drain() { # $1 = label
  local start; start=$(queue_depth); start=${start:-0}
  local t0; t0=$(date +%s.%N)
  local left=$start
  for _ in $(seq 1 600); do
    [ "${left:-0}" -le 0 ] && break
    sleep 0.1; left=$(queue_depth)
  done
  local t1; t1=$(date +%s.%N)
  awk -v l="$1" -v s="$start" -v left="${left:-0}" -v t0="$t0" -v t1="$t1" 'BEGIN{
    d = t1 - t0; r = (d > 0) ? (s - left) / d : 0;
    printf "%s: drain after the load: %d queued -> %d in %.1f s (%.0f deliveries/s)\n", l, s, left, d, r }'
  curl -fs "http://127.0.0.1:$GW_PORT/metrics" | awk -v l="$1" '
    /^gateway_ingest_events_total\{.*outcome="queued"/ { queued += $NF }
    /^gateway_deliveries_total\{.*outcome="delivered"/ { delivered += $NF }
    END { printf "%s: since start: %d events queued, %d deliveries delivered\n", l, queued, delivered }'
}

run() { # $1 = label, $2 = store url
  local label=$1 url=$2
  config "$url" > "$WORK/gateway.toml"
  RUST_LOG=warn "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" > "$OUT/ingest-$label.log" 2>&1 &
  local gw=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$GW_PORT/healthz" >/dev/null && break; sleep 0.1; done
  local token; token=$("$GATEWAY_BIN" token --issuer legacy --ttl-s 3600 --config "$WORK/gateway.toml")
  for run_kind in ${RUNS:-1 100 paced}; do
    # paced: batches of 100 offered on a fixed schedule at PACED_EVENTS events/s by
    # PACED_CONNS connections, to see whether delivery keeps up with acceptance at that rate
    # rather than at the most ingest can take.
    local batch=$run_kind conns=$CONNS rate=0
    if [ "$run_kind" = paced ]; then
      # two wrk threads, each offering half of PACED_EVENTS as batches of 100
      batch=100 conns=$PACED_CONNS
      rate=$(awk -v e="$PACED_EVENTS" 'BEGIN{printf "%.3f", e / 100 / 2}')
    fi
    local depth_log="$WORK/depth-$label-$run_kind"
    ( while sleep 1; do curl -fs "http://127.0.0.1:$GW_PORT/metrics" | awk '/^gateway_delivery_queue_depth /{print $2}'; done ) > "$depth_log" &
    local sampler=$!
    local perf=""
    if [ -n "${PROFILE:-}" ]; then
      perf record -q -F 499 -g -p "$gw" -o "$OUT/ingest-$label-$run_kind.perf" -- sleep "$DURATION" 2>/dev/null &
      perf=$!
    fi
    local line
    line=$(RUN="$label-$run_kind-$$" BATCH=$batch RATE=$rate TOKEN=$token wrk -t2 -c"$conns" -d"${DURATION}s" -s "$WORK/events.lua" "http://127.0.0.1:$GW_PORT" | tee "$OUT/ingest-$label-$run_kind.wrk" | grep '^BENCH')
    kill "$sampler" 2>/dev/null || true
    [ -z "$perf" ] || wait "$perf" || true
    local requests non2xx
    requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
    non2xx=$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$line")
    local ok=$((requests - non2xx))
    local rps events depth
    rps=$(awk -v n="$ok" -v d="$DURATION" 'BEGIN{printf "%.0f", n/d}')
    events=$(awk -v n="$ok" -v b="$batch" -v d="$DURATION" 'BEGIN{printf "%.0f", n*b/d}')
    depth=$(sort -n "$depth_log" | tail -1); depth=${depth:-n/a}
    local shape="batch=$batch"
    [ "$run_kind" != paced ] || shape="batch=100 paced (offered ≈ $PACED_EVENTS events/s)"
    local depths; depths=$(tr '\n' ' ' < "$depth_log")
    echo "$label $shape: accepted requests/s=$rps events/s=$events non-2xx=$non2xx max queue depth=$depth (${conns} connections, ${DURATION}s)"
    echo "$label $shape: queue depth each second: $depths"
    drain "$label $shape"
  done
  kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
}

echo "gateway: $GATEWAY_BIN, $(nproc) cores, duration ${DURATION}s per run"
run sqlite "sqlite://$WORK/gateway.db"
if [ -n "${GATEWAY_BENCH_DATABASE_URL:-}" ]; then
  run postgres "$GATEWAY_BENCH_DATABASE_URL"
else
  echo "postgres: skipped (set GATEWAY_BENCH_DATABASE_URL)"
fi
