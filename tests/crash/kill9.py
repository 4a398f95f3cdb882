#!/usr/bin/env python3
"""Kill -9 the gateway while it accepts events; prove that no accepted event is lost.

Two scenarios, both against the real binary and a local receiver played by this script:

* ``sqlite``: one gateway on a SQLite file. Events are posted from several threads; the
  gateway is SIGKILLed mid-stream, restarted on the same file, and every event that got a
  202 must reach the receiver. An event may arrive more than once only with the same
  ``webhook-id`` (at-least-once, one identity per event x target).
* ``postgres``: two gateways on one PostgreSQL database (``--database-url``), events posted
  to both, one SIGKILLed and not restarted: the survivor takes over the dead one's leases and
  every accepted event is delivered; the receiver checks that two attempts of one
  ``webhook-id`` are never in flight at the same time.

Bounded in time and count; loopback only. Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """Records every delivery; answers 200 after a short hold (so attempts can overlap)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, set[str]] = {}  # eventId -> webhook-ids
        self.deliveries = 0
        self.in_flight: set[str] = set()
        self.overlaps: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                webhook_id = self.headers.get("webhook-id", "")
                with receiver.lock:
                    if webhook_id in receiver.in_flight:
                        receiver.overlaps.append(webhook_id)
                    receiver.in_flight.add(webhook_id)
                time.sleep(0.005)
                try:
                    event_id = json.loads(body).get("eventId")
                except ValueError:
                    event_id = None
                with receiver.lock:
                    receiver.in_flight.discard(webhook_id)
                    receiver.deliveries += 1
                    if event_id:
                        receiver.seen.setdefault(event_id, set()).add(webhook_id)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Gateway:
    def __init__(self, binary: str, config: str, store_url: str, name: str, workdir: str):
        self.binary, self.config, self.store_url, self.name = binary, config, store_url, name
        self.port = free_port()
        self.log = open(os.path.join(workdir, f"{name}.log"), "ab")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            GATEWAY_SERVER__LISTEN=f"127.0.0.1:{self.port}",
            GATEWAY_STORE__URL=self.store_url,
            RUST_LOG=env.get("RUST_LOG", "warn"),
        )
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config], env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode} (see {self.log.name})")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not become ready")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def prepare_config(workdir: str, receiver_port: int) -> str:
    config_dir = os.path.join(workdir, "config")
    shutil.copytree(os.path.join(ROOT, "config"), config_dir)
    path = os.path.join(config_dir, "gateway.toml")
    with open(path) as f:
        text = f.read()
    text, n = re.subn(
        r'(?m)^endpoint_url = "[^"]*"',
        f'endpoint_url = "http://127.0.0.1:{receiver_port}/events"',
        text,
        count=1,
    )
    if n != 1:
        raise SystemExit("the shipped config has no target endpoint_url line to point at the receiver")
    # Retries quick enough for a bounded test.
    text = re.sub(r"initial_delay_s = \d+", "initial_delay_s = 1", text)
    with open(path, "w") as f:
        f.write(text)
    return path


def mint(binary: str, config: str) -> str:
    out = subprocess.run(
        [binary, "token", "--config", config, "--issuer", "legacy"],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


class Poster:
    """Posts single events from several threads; remembers those answered 202."""

    def __init__(self, token: str, urls: list[str], threads: int, limit: int):
        self.token, self.urls, self.limit = token, urls, limit
        self.lock = threading.Lock()
        self.accepted: dict[str, str] = {}  # eventId -> transaction_id
        self.sent = 0
        self.failed = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            with self.lock:
                if self.sent >= self.limit:
                    return
                self.sent += 1
                seq = self.sent
            n += 1
            url = self.urls[seq % len(self.urls)]
            txn = f"kill9-{worker}-{n}-{seq}"
            body = json.dumps(
                {"transaction_id": txn, "event_type": "OrderCreated", "timestamp": int(time.time()),
                 "amount": 12.5, "currency": "EUR"}
            ).encode()
            req = urllib.request.Request(
                url + "/v1/events", data=body, method="POST",
                headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    answer = json.loads(r.read())
                    if r.status == 202:
                        event_id = answer["results"][0]["eventId"]
                        with self.lock:
                            self.accepted[event_id] = txn
            except (urllib.error.URLError, OSError, ValueError):
                with self.lock:
                    self.failed += 1
                time.sleep(0.05)


def wait_delivered(receiver: Receiver, accepted: dict[str, str], timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        with receiver.lock:
            missing = [e for e in accepted if e not in receiver.seen]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.25)


def check(receiver: Receiver, accepted: dict[str, str], missing: list[str]) -> bool:
    ok = True
    if missing:
        print(f"FAIL: {len(missing)} accepted events never reached the target, e.g. {missing[:3]}")
        ok = False
    with receiver.lock:
        split = {e: ids for e, ids in receiver.seen.items() if len(ids) > 1}
        overlaps = list(receiver.overlaps)
        deliveries = receiver.deliveries
    if split:
        print(f"FAIL: {len(split)} events arrived under more than one webhook-id, e.g. {list(split.items())[:2]}")
        ok = False
    if overlaps:
        print(f"FAIL: {len(overlaps)} times two attempts of one webhook-id were in flight at once")
        ok = False
    print(f"accepted {len(accepted)}, distinct delivered {len(receiver.seen)}, requests at the target {deliveries}")
    return ok


def scenario_sqlite(binary: str, workdir: str) -> bool:
    receiver = Receiver()
    config = prepare_config(workdir, receiver.port)
    store = f"sqlite://{os.path.join(workdir, 'gateway.db')}"
    gw = Gateway(binary, config, store, "sqlite", workdir)
    gw.start()
    poster = Poster(mint(binary, config), [gw.url], threads=8, limit=3000)
    poster.start()
    time.sleep(2.0)
    accepted_before = len(poster.accepted)
    gw.kill9()
    print(f"SIGKILL after {accepted_before} accepted events")
    time.sleep(0.5)
    gw.start()
    time.sleep(1.0)
    poster.join()
    missing = wait_delivered(receiver, poster.accepted, 90)
    ok = check(receiver, poster.accepted, missing)
    gw.stop()
    return ok and accepted_before > 0


def scenario_postgres(binary: str, workdir: str, database_url: str) -> bool:
    receiver = Receiver()
    config = prepare_config(workdir, receiver.port)
    a = Gateway(binary, config, database_url, "pg-a", workdir)
    b = Gateway(binary, config, database_url, "pg-b", workdir)
    starters = [threading.Thread(target=g.start) for g in (a, b)]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    poster = Poster(mint(binary, config), [a.url, b.url], threads=8, limit=2000)
    poster.start()
    time.sleep(2.0)
    accepted_before = len(poster.accepted)
    a.kill9()
    print(f"SIGKILL of one replica after {accepted_before} accepted events")
    time.sleep(2.0)  # the survivor keeps accepting
    poster.join()
    # The dead replica's leases (30 s) must expire before the survivor takes them over.
    missing = wait_delivered(receiver, poster.accepted, 120)
    ok = check(receiver, poster.accepted, missing)
    b.stop()
    return ok and accepted_before > 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["sqlite", "postgres"])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "debug", "genesys-gateway"))
    parser.add_argument("--database-url", default=os.environ.get("KILL9_DATABASE_URL"))
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix=f"kill9-{args.scenario}-")
    try:
        if args.scenario == "sqlite":
            ok = scenario_sqlite(args.binary, workdir)
        else:
            if not args.database_url:
                print("postgres scenario needs --database-url (a database of its own)")
                return 2
            ok = scenario_postgres(args.binary, workdir, args.database_url)
    except SystemExit as e:
        print(f"FAIL: {e}")
        ok = False
    if ok:
        print(f"PASS: {args.scenario}")
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    print(f"logs kept in {workdir}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
