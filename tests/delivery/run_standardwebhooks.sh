#!/usr/bin/env bash
# Verifies the gateway's webhook signatures with the Python `standardwebhooks` library:
# builds `genesys-gateway` (debug), prepares a venv under <target>/delivery-venv with
# tests/delivery/requirements.txt, starts the gateway in sandbox mode (its own SQLite file, the
# in-process simulator on a free port, a declarative target on the simulator's receiver, a
# callback queue for the webhook subscription part), runs
# tests/delivery/standardwebhooks_check.py, stops the gateway and exits with the check's status.
# <target> is cargo's target directory, wherever CARGO_TARGET_DIR or the cargo config puts it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

cargo build --bin genesys-gateway
target="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target/debug/genesys-gateway"

venv="$target/delivery-venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum tests/delivery/requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/delivery/requirements.txt
    echo "$want" > "$stamp"
fi

free_port() {
    "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
port="$(free_port)"
sim_port="$(free_port)"
work="$(mktemp -d)"
token="standardwebhooks-check-token"
secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="
portal_key="standardwebhooks-portal-key"
queue="a3b1f7c2-0000-4000-8000-000000000001"
cat > "$work/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$port"

[store]
url = "sqlite://data/gateway.db"

[genesys]
simulate = true
simulator_listen = "127.0.0.1:$sim_port"

[admin.auth]
type = "bearer"
tokens = ["$token"]

[delivery]
allow_cidrs = ["127.0.0.0/8"]

[[targets]]
name = "order-events"
endpoint_url = "http://genesys-simulator/__sim/receivers/order-events"
event_types = ["custom.legacy.orders.*"]
secret = "$secret"

[callbacks]
auth = { type = "header", name = "X-Api-Key", value = "$portal_key" }

[[callbacks.queues]]
id = "$queue"
name = "Support"
timezone = "UTC"
open_hours = ["mon-sun 00:00-24:00"]
slot_capacity = 10
max_slot_minutes = 60
booking_horizon_days = 30
TOML

log="$target/delivery-standardwebhooks.log"
"$bin" serve --config "$work/gateway.toml" >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ready=""
for _ in $(seq 1 200); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "the gateway exited early:" >&2
        cat "$log" >&2
        exit 1
    fi
    if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "the gateway did not become ready on 127.0.0.1:$port" >&2
    cat "$log" >&2
    exit 1
fi

status=0
"$venv/bin/python" tests/delivery/standardwebhooks_check.py \
    --gateway "http://127.0.0.1:$port" --sim "http://127.0.0.1:$sim_port" \
    --admin-token "$token" --secret "$secret" \
    --portal-key "$portal_key" --queue "$queue" || status=$?
if [[ "$status" -ne 0 ]]; then
    echo "gateway log:" >&2
    tail -50 "$log" >&2
fi
exit "$status"
