#!/usr/bin/env bash
# Memory of the edge under connection abuse: the gateway's RSS
#   (a) idle, just started;
#   (b) with 1,000 connections each holding a partial request head just under
#       server.max_header_bytes (the header never ends: what a slow-header attacker pins);
#   (c) with 10,000 idle keep-alive connections (each served one request, then left open).
# Loopback only, bounded (a fixed number of connections, held a few seconds). The per-client
# limit is lifted (max_connections_per_client = 0) so that one load generator can open them all.
# Usage: bench/edge-memory.sh   (GATEWAY_BIN=path measures a prebuilt binary instead of building
# target/release; needs `ulimit -n` ≥ 21000 or so for (c): both ends of every connection are here).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${GW_PORT:-19093}"
HEAD_CONNS="${HEAD_CONNS:-1000}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
CAP=32768
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --quiet
  GATEWAY_BIN=./target/release/genesys-gateway
fi
ulimit -n "$(ulimit -Hn)"

cat > "$WORK/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
max_connections = 20000
max_connections_per_client = 0
max_header_bytes = $CAP
header_read_timeout_ms = 120000
[store]
url = "sqlite://data/gateway.db"
[genesys]
simulate = true
TOML
RUST_LOG=warn "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/^VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$GW/status"; }
echo "binary: $GATEWAY_BIN"
echo "idle: $(rss)"

python3 - "$PORT" "$HEAD_CONNS" "$IDLE_CONNS" "$CAP" "$GW" <<'PY'
import socket, sys, time
port, heads, idles, cap, pid = (int(a) for a in sys.argv[1:6])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return f"{int(line.split()[1]) / 1024:.1f} MiB"
def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

# (b) partial heads just under the cap, never ended.
line = b"x-pad: " + b"v" * 1000 + b"\r\n"
head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + line * ((cap - 200) // len(line))
held = []
for _ in range(heads):
    s = connect()
    s.sendall(head)
    held.append(s)
time.sleep(3)
print(f"{heads} connections holding {len(head)}-byte partial heads (cap {cap}): {rss()}")
for s in held:
    s.close()
held.clear()
time.sleep(3)
print(f"after closing them: {rss()}")

# (c) idle keep-alive connections, each after one request.
request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
for i in range(idles):
    s = connect()
    s.sendall(request)
    held.append(s)
    if len(held) % 500 == 0:
        for t in held[-500:]:
            t.recv(4096)
for t in held[len(held) - len(held) % 500:]:
    t.recv(4096)
time.sleep(3)
print(f"{idles} idle keep-alive connections: {rss()}")
for s in held:
    s.close()
PY
kill "$GW"; wait "$GW" 2>/dev/null || true
