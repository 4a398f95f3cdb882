#!/usr/bin/env python3
"""Runs the README's walk-through against a real gateway binary and checks every output.

The README marks what is executed with `<!-- walkthrough -->` ... `<!-- /walkthrough -->`.
Inside such a region:

- a ```sh block is run (all blocks in one bash session, in order, so variables carry over);
- a ```json block right after it is the expected output of that block: objects match when every
  key shown is there with a matching value (keys not shown are not checked), arrays when they
  have the same length and match element by element; `"…"` matches any value, and a string with
  `…` in it matches any text in its place (`"custom_-_…"`);
- a ```text block right after it lists lines that must appear in the output, in any order
  (`…` matches any text);
- a block with no expected output must only succeed.

The blocks are written for a reader's machine: the gateway on `localhost:8080`, the in-process
simulator on `127.0.0.1:9100`, the config file `config/gateway.toml`, the binary run as
`cargo run --release --`. Here they run in a scratch folder holding a copy of `config/`, against
`--bin` (a release or debug build) started with free loopback ports, which replace those in the
commands. Nothing in the repository is changed.

Usage: walkthrough.py --bin target/debug/genesys-gateway [--readme README.md]
Exits 0 and prints "N passed, 0 failed" when every step passed.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FENCE = re.compile(r"^```(\w*)\s*$")
ELLIPSIS = "…"


def blocks(readme):
    """The (kind, text) fenced blocks inside the walk-through regions, in order."""
    out, inside, fence, lines = [], False, None, []
    for line in readme.splitlines():
        if fence is None:
            if line.strip() == "<!-- walkthrough -->":
                inside = True
            elif line.strip() == "<!-- /walkthrough -->":
                inside = False
            elif inside and FENCE.match(line):
                fence, lines = FENCE.match(line).group(1) or "text", []
        elif line.startswith("```"):
            out.append((fence, "\n".join(lines) + "\n"))
            fence = None
        else:
            lines.append(line)
    return out


def steps(readme):
    """(commands, expected kind or None, expected text or None) for every sh block."""
    found, pending = [], None
    for kind, text in blocks(readme):
        if kind in ("sh", "bash", "console"):
            if pending:
                found.append(pending)
            pending = [text, None, None]
        elif kind in ("json", "text") and pending and pending[1] is None:
            pending[1], pending[2] = kind, text
            found.append(pending)
            pending = None
    if pending:
        found.append(pending)
    return found


def glob(pattern, text):
    """Whether `text` is `pattern`, each `…` in it standing for any text."""
    regex = ".*".join(re.escape(part) for part in pattern.split(ELLIPSIS))
    return re.fullmatch(regex, text, re.DOTALL) is not None


def matches(expected, actual, at="$"):
    """None when `actual` matches `expected` (see the module docs), else why not."""
    if expected == ELLIPSIS:
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{at}: expected an object, got {json.dumps(actual)}"
        for key, value in expected.items():
            if key not in actual:
                return f"{at}: no key {key!r} in {json.dumps(actual)}"
            why = matches(value, actual[key], f"{at}.{key}")
            if why:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{at}: expected {len(expected)} items, got {json.dumps(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            why = matches(e, a, f"{at}[{i}]")
            if why:
                return why
        return None
    if isinstance(expected, str) and ELLIPSIS in expected and isinstance(actual, str):
        return None if glob(expected, actual) else f"{at}: {actual!r} is not {expected!r}"
    if expected != actual:
        return f"{at}: expected {json.dumps(expected)}, got {json.dumps(actual)}"
    return None


def check(kind, expected, actual):
    """None when the output of a step is as expected, else why not."""
    if kind == "json":
        try:
            got = json.loads(actual)
        except ValueError as err:
            return f"the output is not JSON ({err})"
        return matches(json.loads(expected), got)
    lines = actual.splitlines()
    for want in (l.strip() for l in expected.splitlines()):
        if want and not any(glob(want, l.strip()) for l in lines):
            return f"no line of the output is {want!r}"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def localize(commands, port, sim_port, binary):
    return (
        commands.replace("cargo run --release --", f'"{binary}"')
        .replace("localhost:8080", f"127.0.0.1:{port}")
        .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        .replace("127.0.0.1:9100", f"127.0.0.1:{sim_port}")
    )


def wait_ready(port, gateway, log):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            sys.exit(f"the gateway exited with {gateway.returncode}:\n{open(log).read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"the gateway did not answer /healthz within 60 s:\n{open(log).read()}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    args = parser.parse_args()
    binary = os.path.abspath(args.bin)
    with open(args.readme, encoding="utf-8") as f:
        plan = steps(f.read())
    if not plan:
        sys.exit("the README has no walk-through steps")

    work = tempfile.mkdtemp(prefix="gateway-walkthrough-")
    shutil.copytree(os.path.join(ROOT, "config"), os.path.join(work, "config"))
    shutil.rmtree(os.path.join(work, "config", "data"), ignore_errors=True)
    port, sim_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        GATEWAY_SERVER__LISTEN=f"127.0.0.1:{port}",
        GATEWAY_GENESYS__SIMULATOR_LISTEN=f"127.0.0.1:{sim_port}",
        RUST_LOG=env.get("RUST_LOG", "info"),
    )
    for name in ("GATEWAY_CONFIG", "ADMIN_TOKEN", "DATA_ACTION_PASSWORD"):
        env.pop(name, None)
    log = os.path.join(work, "gateway.log")
    gateway = subprocess.Popen(
        [binary, "serve", "--config", "config/gateway.toml"],
        cwd=work,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    passed = failed = 0
    try:
        wait_ready(port, gateway, log)
        shell = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            cwd=work,
            env=env,
            stdin=subprocess.PIPE,
            text=True,
        )
        script = ["set -uo pipefail"]
        for i, (commands, kind, expected) in enumerate(plan):
            out = os.path.join(work, f"step-{i}.out")
            script.append(
                f"{{\n{localize(commands, port, sim_port, binary)}\n}} >'{out}' 2>'{out}.err'"
                f"; echo $? >'{out}.status'"
            )
        shell.communicate("\n".join(script) + "\n", timeout=600)
        for i, (commands, kind, expected) in enumerate(plan):
            out = os.path.join(work, f"step-{i}.out")
            first = commands.strip().splitlines()[0]
            status = open(f"{out}.status").read().strip() if os.path.exists(f"{out}.status") else "?"
            actual = open(out).read() if os.path.exists(out) else ""
            why = None if status == "0" else f"exit status {status}: {open(out + '.err').read()}"
            if why is None and kind:
                why = check(kind, localize(expected, port, sim_port, binary), actual)
            if why:
                failed += 1
                print(f"FAILED step {i + 1}: {first}\n  {why}\n  output: {actual.strip()}")
            else:
                passed += 1
                print(f"ok step {i + 1}: {first}")
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gateway.kill()
        if failed:
            print(f"gateway log ({log}):\n{open(log).read()[-4000:]}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"walkthrough: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
