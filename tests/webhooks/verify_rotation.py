#!/usr/bin/env python3
"""Verifies recorded webhook deliveries with the `standardwebhooks` library.

Input: a JSON file of deliveries, each `{"headers": {...}, "body": "<exact body text>"}` — a
JSON array, or an object holding the array under `deliveries` or `entities` (what
`GET /__sim/receivers/{name}` answers fits as is). Header names are matched case-insensitively;
a header value given as a list uses its first element.

Checks:
- every delivery verifies with at least one of the `--secret`s given (the subscription's
  secret, or during a rotation the old and the new one);
- with `--each`, every delivery verifies with *every* secret given (both sign during the 24 h
  after a rotation);
- with `--recorded`, deliveries are checked after the fact: the library's 5-minute timestamp
  tolerance is not applied (the signature is recomputed with the library's `Webhook.sign` for
  the delivery's own `webhook-timestamp`, and compared in constant time);
- `--min-count N`: at least N deliveries;
- every body is the webhook payload `{"type", "timestamp", "data"}`.

Exit status: 0 when every check passed, 1 when one failed (each failure is printed), 2 when
the input cannot be read. `--self-test` checks the verifier itself on deliveries it signs.

    pip install standardwebhooks
    python3 tests/webhooks/verify_rotation.py deliveries.json --secret "$OLD" --secret "$NEW" --each
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PAYLOAD_KEYS = {"type", "timestamp", "data"}


def load_deliveries(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    if isinstance(document, dict):
        for key in ("deliveries", "entities"):
            if isinstance(document.get(key), list):
                document = document[key]
                break
    if not isinstance(document, list):
        raise ValueError("expected a JSON array of deliveries (or {deliveries|entities: [...]})")
    for i, delivery in enumerate(document):
        if not isinstance(delivery, dict) or "headers" not in delivery or "body" not in delivery:
            raise ValueError(f"delivery {i} has no `headers` and `body`")
    return document


def headers_of(delivery: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in delivery["headers"].items():
        if isinstance(value, list):
            value = value[0] if value else ""
        out[name.lower()] = str(value)
    return out


def verifies(secret: str, delivery: dict[str, Any], recorded: bool) -> tuple[bool, str]:
    """Whether `secret` signed `delivery`, and why not."""
    webhook = Webhook(secret)
    headers = headers_of(delivery)
    body = delivery["body"]
    if not recorded:
        try:
            webhook.verify(body, headers, json_parse=False)
            return True, ""
        except WebhookVerificationError as err:
            return False, str(err)
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        return False, "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        at = datetime.fromtimestamp(int(stamp), tz=timezone.utc)
    except ValueError:
        return False, f"webhook-timestamp is not whole seconds: {stamp!r}"
    expected = base64.b64decode(webhook.sign(msg_id, at, body).split(",", 1)[1])
    for entry in signatures.split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(signature, validate=True)
        except ValueError:
            continue
        if hmac.compare_digest(expected, given):
            return True, ""
    return False, "no v1 signature matches"


def check(
    deliveries: list[dict[str, Any]],
    secrets: list[str],
    each: bool,
    recorded: bool,
    min_count: int,
) -> list[str]:
    """Every failure, as a line of text (empty: all passed)."""
    failures = []
    if len(deliveries) < min_count:
        failures.append(f"{len(deliveries)} deliveries, expected at least {min_count}")
    for i, delivery in enumerate(deliveries):
        label = f"delivery {i} ({headers_of(delivery).get('webhook-id', 'no id')})"
        results = [verifies(secret, delivery, recorded) for secret in secrets]
        passed = [ok for ok, _ in results]
        if each and not all(passed):
            missing = [f"secret #{n + 1}: {why}" for n, (ok, why) in enumerate(results) if not ok]
            failures.append(f"{label}: not signed by every secret ({'; '.join(missing)})")
        elif not any(passed):
            failures.append(f"{label}: no secret verifies it ({results[0][1]})")
        try:
            payload = json.loads(delivery["body"])
        except ValueError:
            failures.append(f"{label}: the body is not JSON")
            continue
        if not isinstance(payload, dict) or set(payload) != PAYLOAD_KEYS:
            failures.append(f"{label}: the body is not {{type, timestamp, data}}")
    return failures


def self_test() -> int:
    """Signs deliveries the way the gateway does and checks that the verifier judges them."""
    old = "whsec_" + base64.b64encode(b"o" * 32).decode()
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    now = datetime.fromtimestamp(int(time.time()), tz=timezone.utc)
    body = json.dumps({"type": "callback.reservation.created", "timestamp": "2027-01-01T00:00:00.000Z", "data": {}})

    def delivery(signers: list[str], at: datetime = now) -> dict[str, Any]:
        sigs = " ".join(Webhook(s).sign("msg_1", at, body) for s in signers)
        return {
            "headers": {"Webhook-Id": "msg_1", "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": sigs},
            "body": body,
        }

    old_stamp = datetime.fromtimestamp(int(time.time()) - 3600, tz=timezone.utc)
    cases = [
        ("both sign, either secret", [delivery([new, old])], [old], False, False, True),
        ("both sign, each secret", [delivery([new, old])], [old, new], True, False, True),
        ("only the new signs, each", [delivery([new])], [old, new], True, False, False),
        ("only the new signs, either", [delivery([new])], [old, new], False, False, True),
        ("a stranger's secret", [delivery([new])], [other], False, False, False),
        ("an altered body", [{**delivery([new]), "body": body + " "}], [new], False, False, False),
        ("an hour old, live", [delivery([new], old_stamp)], [new], False, False, False),
        ("an hour old, recorded", [delivery([new], old_stamp)], [new], False, True, True),
        ("recorded, wrong secret", [delivery([new], old_stamp)], [other], False, True, False),
    ]
    wrong = 0
    for name, deliveries, secrets, each, recorded, expected in cases:
        passed = not check(deliveries, secrets, each, recorded, 1)
        if passed != expected:
            wrong += 1
            print(f"self-test FAILED: {name}: passed={passed}, expected {expected}")
    print(f"self-test: {len(cases) - wrong}/{len(cases)} cases as expected")
    return 1 if wrong else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("deliveries", nargs="?", help="JSON file of recorded deliveries")
    parser.add_argument("--secret", action="append", default=[], help="a whsec_ secret (repeat for old and new)")
    parser.add_argument("--each", action="store_true", help="every delivery must verify with every secret")
    parser.add_argument("--recorded", action="store_true", help="skip the 5-minute timestamp tolerance")
    parser.add_argument("--min-count", type=int, default=1, help="at least this many deliveries (default 1)")
    parser.add_argument("--self-test", action="store_true", help="check the verifier itself")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not args.deliveries or not args.secret:
        parser.error("give the deliveries file and at least one --secret")
    try:
        deliveries = load_deliveries(args.deliveries)
    except (OSError, ValueError) as err:
        print(f"cannot read {args.deliveries}: {err}", file=sys.stderr)
        return 2
    failures = check(deliveries, args.secret, args.each, args.recorded, args.min_count)
    for line in failures:
        print(line)
    print(f"{len(deliveries)} deliveries, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
