#!/usr/bin/env bash
# Runs the official Genesys Cloud Python SDK against the simulator binary:
# builds `genesys-gateway` (debug), prepares a venv under <target>/sdk-venv with
# tests/sdk/requirements.txt, starts `genesys-gateway sim` on a free loopback port, runs
# tests/sdk/test_sim_sdk.py, stops the simulator and exits with the test's status.
# <target> is cargo's target directory, wherever CARGO_TARGET_DIR or the cargo config puts it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

cargo build --bin genesys-gateway
target="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target/debug/genesys-gateway"

venv="$target/sdk-venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum tests/sdk/requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
    echo "$want" > "$stamp"
fi

port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
log="$target/sdk-sim.log"
"$bin" sim --listen "127.0.0.1:$port" >"$log" 2>&1 &
sim_pid=$!
cleanup() {
    kill "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
}
trap cleanup EXIT

ready=""
for _ in $(seq 1 100); do
    if ! kill -0 "$sim_pid" 2>/dev/null; then
        echo "the simulator exited early:" >&2
        cat "$log" >&2
        exit 1
    fi
    if "$venv/bin/python" -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$port/__sim/faults', timeout=1)" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "the simulator did not answer on 127.0.0.1:$port" >&2
    cat "$log" >&2
    exit 1
fi

status=0
"$venv/bin/python" tests/sdk/test_sim_sdk.py --sim "http://127.0.0.1:$port" || status=$?
exit "$status"
