#!/usr/bin/env bash
# Runs the README's walk-through (the blocks between `<!-- walkthrough -->` markers) against a
# gateway binary on free loopback ports and checks each command's output; see walkthrough.py.
# The binary is $GATEWAY_BIN, else the debug build in cargo's target directory (built here).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

bin="${GATEWAY_BIN:-}"
if [[ -z "$bin" ]]; then
    cargo build --bin genesys-gateway
    target="$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    bin="$target/debug/genesys-gateway"
fi
exec python3 tests/readme/walkthrough.py --bin "$bin" --readme README.md
