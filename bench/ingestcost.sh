#!/usr/bin/env bash
# Per-event cost of event ingest and delivery on SQLite, independent of how busy the machine is:
# the gateway runs under callgrind with one local target (nginx answering 200); after a warm-up,
# BATCHES batches of 100 events (ES256 token) are posted one after the other and delivered, and
# the instructions (Ir) of each thread over that window are divided by the events — the SQLite
# writer's thread (the `sqlx-sqlite-worker` with the most instructions) is the serial part of
# ingest + delivery. Per-thread callgrind files of the window go to bench/out/ingestcost-<stamp>/
# (read them with callgrind_annotate). Note: under valgrind SHA-256 runs in software (no SHA
# extensions), so the threads that sign and fingerprint cost more here than at full speed.
# PRE_SQL runs SQL against the freshly migrated database before the measured start (to try an
# index before writing a migration). Usage: bench/ingestcost.sh [BATCHES] (default 20).
# GATEWAY_BIN=path measures a prebuilt binary (default: target/release, built if missing).
# Bounded, loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out; mkdir -p "$OUT"
need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need valgrind || ! need callgrind_control; then
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light valgrind >/dev/null
fi
if [ -z "${GATEWAY_BIN:-}" ]; then
  GATEWAY_BIN="${CARGO_TARGET_DIR:-target}/release/genesys-gateway"
  [ -x "$GATEWAY_BIN" ] || cargo build --release --quiet
fi
GATEWAY_BIN=$(realpath "$GATEWAY_BIN")
BATCHES="${1:-20}"
GW_PORT=19283 RECV_PORT=19284
WORK=$(mktemp -d)
GW_PID=""
trap bench_cleanup EXIT
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_nginx_receiver "$RECV_PORT"
nginx -p "$WORK" -c nginx.conf
bench_ingest_toml "$GW_PORT" "$RECV_PORT" "sqlite://$WORK/gw.db" 8 > "$WORK/gateway.toml"
TOKEN=$("$GATEWAY_BIN" token --issuer legacy --ttl-s 3600 --config "$WORK/gateway.toml")
ROOT=$PWD
cd "$WORK"
if [ -n "${PRE_SQL:-}" ]; then
  RUST_LOG=warn "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" > "$WORK/gw0.log" 2>&1 &
  P0=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$GW_PORT/healthz" >/dev/null && break; sleep 0.1; done
  kill $P0; wait $P0 || true
  python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()" "$WORK/gw.db" "$PRE_SQL"
fi
RUST_LOG=warn valgrind --tool=callgrind --separate-threads=yes --dump-instr=no --callgrind-out-file="$WORK/cg.out" \
  "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" > "$WORK/gw.log" 2>&1 &
GW_PID=$!
for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$GW_PORT/healthz" >/dev/null && break; sleep 0.2; done
post() { python3 - "$1" "$2" "$GW_PORT" "$TOKEN" <<'PY'
import http.client, sys
tag, n, port, token = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port)
for b in range(n):
    body = "[" + ",".join('{"transaction_id":"%s-%d-%d","event_type":"Order Created","timestamp":1714559400,"amount":1234567890.12345678901,"currency":"EUR"}' % (tag, b, i) for i in range(100)) + "]"
    c.request("POST", "/v1/events", body, {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 202, r.status
PY
}
depth() { curl -fs "http://127.0.0.1:$GW_PORT/metrics" | awk '/^gateway_delivery_queue_depth /{printf "%d", $2}'; }
drain() { for _ in $(seq 1 600); do [ "$(depth)" = 0 ] && return; sleep 0.5; done; echo "not drained" >&2; }
post warm 5; drain; sleep 2
callgrind_control -z "$GW_PID" >/dev/null
post run "$BATCHES"; drain; sleep 1
callgrind_control -d "$GW_PID" >/dev/null
sleep 1
EVENTS=$((BATCHES * 100))
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$ROOT/$OUT/ingestcost-$STAMP"
cp "$WORK"/cg.out.1-* "$ROOT/$OUT/ingestcost-$STAMP/"
python3 - "$ROOT/$OUT/ingestcost-$STAMP" "$EVENTS" <<'PY'
import glob, os, re, sys
folder, events = sys.argv[1], int(sys.argv[2])
rows = []
for path in sorted(glob.glob(os.path.join(folder, "cg.out.1-*"))):
    text = open(path, errors="replace").read()
    total = re.search(r"^summary: (\d+)", text, re.M)
    if total is None:
        continue
    sqlite = "sqlite3VdbeExec" in text
    rows.append((int(total.group(1)), sqlite, os.path.basename(path)))
rows.sort(reverse=True)
writer = next((r for r in rows if r[1]), None)
for ir, sqlite, name in rows:
    if ir / events >= 1000:
        tag = " (SQLite writer)" if writer and name == writer[2] else ""
        print(f"{name}: {ir / events:9.0f} Ir/event{tag}")
print(f"all threads: {sum(r[0] for r in rows) / events:.0f} Ir/event over {events} events; "
      f"SQLite writer: {writer[0] / events if writer else 0:.0f} Ir/event")
print(f"callgrind files: {folder}")
PY
