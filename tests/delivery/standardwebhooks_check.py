"""Black-box check of the gateway's webhook signatures with the `standardwebhooks` library.

Runs against a gateway in sandbox mode whose declarative target `order-events` points at the
in-process simulator's receiver (`http://genesys-simulator/__sim/receivers/order-events`):

1. waits until `order-events` is VERIFIED (its verification event was delivered, signed);
2. probes it (`POST /admin/v1/targets/{id}/health`: one more signed delivery);
3. verifies every delivery the receiver recorded with `standardwebhooks.Webhook(secret)`, and
   checks that a tampered body, a wrong secret and a stale timestamp are refused;
4. creates an API target on another receiver, rotates its secret and checks that a delivery
   after the rotation verifies with the new secret and with the old one (both sign);
5. subscribes a webhook to `callback.reservation.*` on a simulator receiver, makes a
   reservation (its `callback.reservation.created` verifies with the subscription's secret),
   rotates the subscription's secret, makes another reservation (its webhook verifies with
   either secret).

Usage: standardwebhooks_check.py --gateway URL --sim URL --admin-token T --secret whsec_...
       --portal-key K --queue QUEUE_ID
Exit status 0 when every check passed.
"""

import argparse
import datetime
import json
import sys
import time
import urllib.request

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def call(method, url, token=None, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
        return response.status, (json.loads(text) if text else None)


def eventually(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"FAIL: timed out waiting for {what}")


def target_named(args, name):
    _, page = call("GET", f"{args.gateway}/admin/v1/targets", args.admin_token)
    return next((t for t in page["entities"] if t["name"] == name), None)


def received(args, receiver):
    _, deliveries = call("GET", f"{args.sim}/__sim/receivers/{receiver}")
    return deliveries


def verify(secret, delivery):
    headers = {k: v for k, v in delivery["headers"].items() if k.startswith("webhook-")}
    return Webhook(secret).verify(delivery["body"], headers)


def refused(secret, body, headers):
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return True
    return False


def reserve(args, hour):
    """Reserves a 30-minute slot two days ahead at `hour`:00 UTC; the reservation's id."""
    day = datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=2)
    start = datetime.datetime(day.year, day.month, day.day, hour, tzinfo=datetime.timezone.utc)
    end = start + datetime.timedelta(minutes=30)
    status, reservation = call(
        "POST",
        f"{args.gateway}/v1/callbacks",
        body={
            "callbackNumber": "+14155550199",
            "callbackUserName": "Jane",
            "queueId": args.queue,
            "timeSlots": [{"start": start.isoformat(), "end": end.isoformat()}],
        },
        headers={"X-Api-Key": args.portal_key},
    )
    assert status == 201, reservation
    return reservation["id"]


def reservation_webhook(args, reservation_id):
    """The `callback.reservation.created` delivery of `reservation_id` at the receiver."""

    def find():
        for delivery in received(args, "reservations"):
            body = json.loads(delivery["body"])
            if body["type"] == "callback.reservation.created" and body["data"]["id"] == reservation_id:
                return delivery
        return None

    return eventually(f"the webhook of reservation {reservation_id}", find)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--sim", required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--portal-key", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    checks = 0

    # 1-2: the declarative target's verification and a probe, both signed.
    target = eventually(
        "order-events to be VERIFIED",
        lambda: (t := target_named(args, "order-events")) and t["status"] == "VERIFIED" and t,
    )
    status, probe = call(
        "POST", f"{args.gateway}/admin/v1/targets/{target['id']}/health", args.admin_token
    )
    assert status == 200 and probe["status"] == "UP", probe
    deliveries = eventually(
        "two deliveries at the receiver", lambda: (d := received(args, "order-events")) and len(d) >= 2 and d
    )

    # 3: every recorded delivery verifies with the library; forgeries do not.
    for delivery in deliveries:
        payload = verify(args.secret, delivery)
        assert payload["type"] in ("gateway.target.verification", "gateway.target.health"), payload
        assert payload["data"]["targetId"] == target["id"], payload
        checks += 1
    sample = deliveries[0]
    headers = {k: v for k, v in sample["headers"].items() if k.startswith("webhook-")}
    assert refused(args.secret, sample["body"] + " ", headers), "a tampered body must fail"
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    assert refused(other, sample["body"], headers), "another secret must fail"
    stale = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)})
    assert refused(args.secret, sample["body"], stale), "a stale timestamp must fail"
    checks += 3

    # 4: an API target, its secret rotated: both secrets verify a later delivery.
    status, created = call(
        "POST",
        f"{args.gateway}/admin/v1/targets",
        args.admin_token,
        {
            "name": "python-check",
            "endpointUrl": f"{args.sim}/__sim/receivers/python-check",
            "eventTypes": ["custom.python.*"],
        },
    )
    assert status == 201, created
    old_secret = created["secret"]
    eventually(
        "python-check to be VERIFIED",
        lambda: (t := target_named(args, "python-check")) and t["status"] == "VERIFIED",
    )
    status, rotated = call(
        "POST", f"{args.gateway}/admin/v1/targets/{created['id']}/rotate-secret", args.admin_token
    )
    assert status == 200, rotated
    new_secret = rotated["secret"]
    assert new_secret != old_secret
    status, probe = call(
        "POST", f"{args.gateway}/admin/v1/targets/{created['id']}/health", args.admin_token
    )
    assert status == 200 and probe["status"] == "UP", probe
    after = eventually(
        "the probe after the rotation",
        lambda: (d := received(args, "python-check")) and len(d) >= 2 and d,
    )[-1]
    assert len(after["headers"]["webhook-signature"].split(" ")) == 2, after["headers"]
    verify(new_secret, after)
    verify(old_secret, after)
    checks += 2

    # 5: a webhook subscription on a receiver; reservations before and during a rotation.
    status, subscription = call(
        "POST",
        f"{args.gateway}/admin/v1/webhooks",
        args.admin_token,
        {
            "url": f"{args.sim}/__sim/receivers/reservations",
            "eventTypes": ["callback.reservation.*"],
            "description": "standardwebhooks check",
        },
    )
    assert status == 201, subscription
    first = subscription["secret"]
    one = reservation_webhook(args, reserve(args, 10))
    payload = verify(first, one)
    assert payload["type"] == "callback.reservation.created", payload
    assert payload["data"]["status"] == "scheduled", payload
    assert len(one["headers"]["webhook-signature"].split(" ")) == 1, one["headers"]
    checks += 1
    status, rotated = call(
        "POST",
        f"{args.gateway}/admin/v1/webhooks/{subscription['id']}/rotate-secret",
        args.admin_token,
    )
    assert status == 200, rotated
    second = rotated["secret"]
    assert second != first
    two = reservation_webhook(args, reserve(args, 11))
    assert len(two["headers"]["webhook-signature"].split(" ")) == 2, two["headers"]
    assert verify(second, two)["type"] == "callback.reservation.created"
    assert verify(first, two)["type"] == "callback.reservation.created"
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    assert refused(other, two["body"], {k: v for k, v in two["headers"].items() if k.startswith("webhook-")})
    checks += 3

    print(f"standardwebhooks: {checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
