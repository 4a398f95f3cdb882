#!/usr/bin/env bash
# Memory with idle keep-alive connections (the target: ≤ 64 MiB RSS with 1,000 of them): the
# gateway (benchmark action, release build) serves one data action on each of CONNECTIONS
# keep-alive connections, which then stay open and idle; the gateway's VmRSS / VmHWM are read
# from /proc before, while they are open, and after they closed.
# Usage: bench/idle-rss.sh [CONNECTIONS] (default 1000). GATEWAY_BIN=path for a prebuilt binary.
# Bounded, loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS="${1:-1000}"
UP_PORT=19281 NGX_PORT=19282 GW_PORT=19283
WORK=$(mktemp -d)
GW_PID=""
trap bench_cleanup EXIT
# shellcheck source=bench/lib.sh
. bench/lib.sh
ulimit -n $((CONNECTIONS * 2 + 1024))
if ! command -v nginx >/dev/null 2>&1; then
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
fi
if [ -z "${GATEWAY_BIN:-}" ]; then
  GATEWAY_BIN="${CARGO_TARGET_DIR:-target}/release/genesys-gateway"
  [ -x "$GATEWAY_BIN" ] || cargo build --release --quiet
fi
bench_nginx_conf "$UP_PORT" "$NGX_PORT"
nginx -p "$WORK" -c nginx.conf
bench_gateway_toml "$GW_PORT" "$UP_PORT"
RUST_LOG="${GW_RUST_LOG:-info}" "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" > "$WORK/gateway.log" 2>&1 &
GW_PID=$!
bench_wait_healthy "$GW_PORT"

python3 - "$GW_PID" "$GW_PORT" "$CONNECTIONS" "$BENCH_AUTH" "$BENCH_BODY" <<'PY'
import socket, sys, time
pid, port, count, auth, body = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

def status(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return float("nan")

request = (f"POST /v1/actions/benchUser HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"Authorization: {auth}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

def answered(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before the answer")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(4096)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())

before = status("VmRSS")
socks = []
started = time.monotonic()
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    answered(s)
    socks.append(s)
time.sleep(1.0)  # let the gateway settle (the audit writer flushes)
held = status("VmRSS")
hwm = status("VmHWM")
# Still open and usable: one more request on the first and the last connection.
for s in (socks[0], socks[-1]):
    s.sendall(request)
    answered(s)
for s in socks:
    s.close()
time.sleep(1.0)
after = status("VmRSS")
print(f"gateway RSS: {before:.1f} MiB before, {held:.1f} MiB with {count} idle keep-alive "
      f"connections (peak {hwm:.1f} MiB), {after:.1f} MiB after they closed "
      f"(opened and served in {time.monotonic() - started:.1f} s)")
verdict = "PASS" if held <= 64 else "MISS"
print(f"verdict: {verdict}: {held:.1f} MiB with {count} idle keep-alive connections (<= 64 MiB)")
PY
