#!/usr/bin/env python3
"""The official Genesys Cloud Python SDK (PureCloudPlatformClientV2) against the simulator.

Runs with SDK calls only (plus one urllib call to arm a fault through /__sim/faults):
    python tests/sdk/test_sim_sdk.py --sim http://127.0.0.1:PORT
or with SIM_URL set. Exits non-zero when a check fails; the last line is "N passed, M failed".

Every SDK call is bounded: the SDK gets a urllib3 pool without retries (the default one retries
429 itself) and with timeouts, through ApiClient.set_http_client().
"""

import argparse
import base64
import datetime
import http.server
import json
import os
import sys
import threading
import traceback
import urllib.request

import urllib3
import websocket

import PureCloudPlatformClientV2 as gc
from PureCloudPlatformClientV2.default_http_client import DefaultHttpClient
from PureCloudPlatformClientV2.rest import ApiException

CLIENT_ID = "sim-client"
CLIENT_SECRET = "sim-secret"
SUPPORT = "a3b1f7c2-0000-4000-8000-000000000001"
TIMEOUT_S = 10


def make_client(base):
    """An SDK client for the simulator: no retries, every call bounded."""
    http_client = DefaultHttpClient()
    http_client.rest_client.pool_manager = urllib3.PoolManager(
        retries=False, timeout=urllib3.Timeout(connect=5, read=TIMEOUT_S)
    )
    client = gc.ApiClient(host=base)
    client.set_http_client(http_client)
    return client


class Remote:
    """A small local HTTP server playing the data action's remote endpoint."""

    def __init__(self):
        self.seen = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                user_id = self.path.rsplit("/", 1)[-1]
                body = json.dumps({"id": user_id, "profile": {"name": "Jane Doe"}, "tags": ["vip"]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def next_event(ws, topic, conversation_id):
    """The next event of `topic` about `conversation_id` (heartbeats skipped)."""
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=TIMEOUT_S)
    while datetime.datetime.now() < deadline:
        message = json.loads(ws.recv())
        if message.get("topicName") == topic and message["eventBody"].get("id") == conversation_id:
            return message
    raise AssertionError("no event for %s on %s" % (conversation_id, topic))


def customer_of(event):
    return next(p for p in event["eventBody"]["participants"] if p["purpose"] == "customer")


class Suite:
    def __init__(self, base):
        self.base = base.rstrip("/")
        self.client = make_client(self.base)
        self.remote = Remote()

    def login(self):
        token_client = self.client.get_client_credentials_token(CLIENT_ID, CLIENT_SECRET)
        expect(token_client.access_token, "no access token")
        bad = make_client(self.base)
        try:
            bad.get_client_credentials_token(CLIENT_ID, "wrong")
            raise AssertionError("a wrong secret was accepted")
        except ApiException as err:
            expect(err.status == 401, "wrong secret: status %s" % err.status)
            expect(json.loads(err.body)["error"] == "invalid_client", err.body)

    def users(self):
        users = gc.UsersApi(self.client)
        user = users.get_user("u-1")
        expect(user.id == "u-1" and user.name and user.email, "user: %s" % user)
        expect(user.state == "active" and user.version >= 1, "user state/version: %s" % user)
        expect(user.division is not None and user.division.id, "user division")
        listing = users.get_users(page_size=2, page_number=1)
        expect(listing.total == 3 and listing.page_count == 2 and len(listing.entities) == 2, listing)
        try:
            users.get_user("u-404")
            raise AssertionError("unknown user found")
        except ApiException as err:
            expect(err.status == 404 and json.loads(err.body)["code"] == "not.found", err.body)

    def queues(self):
        routing = gc.RoutingApi(self.client)
        queue = routing.get_routing_queue(SUPPORT)
        expect(queue.name == "Support" and queue.self_uri.endswith(SUPPORT), queue)
        listing = routing.get_routing_queues(page_size=25)
        expect(listing.total >= 2, listing)
        expect(any(q.id == SUPPORT for q in listing.entities), "Support not listed")

    def notifications_and_callbacks(self):
        notifications = gc.NotificationsApi(self.client)
        conversations = gc.ConversationsApi(self.client)
        channel = notifications.post_notifications_channels()
        expect(channel.connect_uri.startswith("ws://") and channel.id, channel)
        expect(channel.expires is not None, "channel expiry")
        notifications.head_notifications_channel(channel.id)
        topic = "v2.routing.queues.%s.conversations.callbacks" % SUPPORT
        subscribed = notifications.put_notifications_channel_subscriptions(
            channel.id, [self.topic(topic)]
        )
        expect([t.id for t in subscribed.entities] == [topic], subscribed)
        read = notifications.get_notifications_channel_subscriptions(channel.id)
        expect([t.id for t in read.entities] == [topic], read)
        listed = notifications.get_notifications_channels()
        expect(any(c.id == channel.id for c in listed.entities), "channel not listed")

        ws = websocket.create_connection(channel.connect_uri, timeout=TIMEOUT_S)
        try:
            ws.send(json.dumps({"message": "ping"}))
            pong = json.loads(ws.recv())
            expect(pong == {"topicName": "channel.metadata", "eventBody": {"message": "pong"}}, pong)

            command = gc.CreateCallbackCommand()
            routing_data = gc.RoutingData()
            routing_data.queue_id = SUPPORT
            command.routing_data = routing_data
            command.callback_numbers = ["+14155550199"]
            command.callback_user_name = "Jane Doe"
            command.callback_scheduled_time = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
            command.data = {"gatewayReservationId": "r-42"}
            created = conversations.post_conversations_callbacks(command)
            conversation_id = created.conversation.id
            expect(conversation_id, created)
            expect(any(i.type == "EXTERNAL" and i.id for i in created.callback_identifiers), created)

            event = next_event(ws, topic, conversation_id)
            expect(event["version"] == "2" and "CorrelationId" in event["metadata"], event)
            customer = customer_of(event)
            expect(customer["state"] == "scheduled", customer)
            expect(customer["queue"]["id"] == SUPPORT, customer)
            expect(customer["callbackNumbers"] == ["+14155550199"], customer)

            callback = conversations.get_conversations_callback(conversation_id)
            media = next(p for p in callback.participants if p.purpose == "customer")
            # (the SDK's CallbackMediaParticipant.state enum has no "scheduled": not checked here)
            expect(media.queue.id == SUPPORT and media.callback_numbers == ["+14155550199"], media)

            conversation = conversations.get_conversation(conversation_id)
            participant = next(p for p in conversation.participants if p.purpose == "customer")
            expect(participant.queue_id == SUPPORT, participant)
            expect(participant.callbacks[0].state == "scheduled", participant.callbacks[0])
            expect(participant.callbacks[0].callback_numbers == ["+14155550199"], participant.callbacks[0])

            identifier = gc.CallbackDisconnectIdentifier()
            identifier.conversation_id = conversation_id
            identifier.callback_id = created.callback_identifiers[0].id
            request = gc.BulkCallbackDisconnectRequest()
            request.callback_disconnect_identifiers = [identifier]
            conversations.post_conversations_callbacks_bulk_disconnect(request)
            event = next_event(ws, topic, conversation_id)
            expect(customer_of(event)["state"] == "disconnected", event)
        finally:
            ws.close()

    @staticmethod
    def topic(name):
        topic = gc.ChannelTopic()
        topic.id = name
        return topic

    def integrations_and_actions(self):
        integrations = gc.IntegrationsApi(self.client)
        types = integrations.get_integrations_types(page_size=100)
        expect(any(t.id == "custom-rest-actions" for t in types.entities), "no custom-rest-actions type")

        request = gc.CreateIntegrationRequest()
        kind = gc.IntegrationType()
        kind.id = "custom-rest-actions"
        request.integration_type = kind
        request.name = "SDK actions"
        integration = integrations.post_integrations(body=request)
        expect(integration.id and integration.integration_type.id == "custom-rest-actions", integration)

        credential = gc.Credential()
        credential.name = "sdk basic"
        credential_type = gc.CredentialType()
        credential_type.name = "basicAuth"
        credential.type = credential_type
        credential.credential_fields = {"userName": "genesys", "password": "pa55"}
        info = integrations.post_integrations_credentials(body=credential)
        expect(info.id and info.type.name == "basicAuth", info)

        current = integrations.get_integration_config_current(integration.id)
        config = gc.IntegrationConfiguration()
        config.name = current.name
        config.version = current.version
        config.properties = {}
        config.advanced = {}
        config.notes = ""
        reference = gc.CredentialInfo()
        reference.id = info.id
        config.credentials = {"basicAuth": reference}
        updated = integrations.put_integration_config_current(integration.id, body=config)
        expect(updated.version == current.version + 1, updated)
        expect(updated.credentials["basicAuth"].id == info.id, updated)

        enable = gc.Integration()
        enable.intended_state = "ENABLED"
        enabled = integrations.patch_integration(integration.id, body=enable)
        expect(enabled.intended_state == "ENABLED", enabled)

        action_input = gc.PostActionInput()
        action_input.name = "sdkFetchProfile"
        action_input.category = "genesys-gateway"
        action_input.integration_id = integration.id
        action_input.secure = False
        request_config = gc.RequestConfig()
        request_config.request_url_template = "http://127.0.0.1:%d/users/${input.userId}" % self.remote.port
        request_config.request_type = "GET"
        request_config.headers = {"Accept": "application/json"}
        request_config.request_template = "${input.rawRequest}"
        response_config = gc.ResponseConfig()
        response_config.translation_map = {"name": "$.profile.name", "missing": "$.nope"}
        response_config.translation_map_defaults = {"missing": "\"n/a\""}
        response_config.success_template = "{\"name\": ${name}, \"missing\": ${missing}, \"raw\": ${rawResult}}"
        action_config = gc.ActionConfig()
        action_config.timeout_seconds = 5
        action_config.request = request_config
        action_config.response = response_config
        action_input.config = action_config
        input_schema = gc.JsonSchemaDocument()
        input_schema.type = "object"
        input_schema.required = ["userId"]
        input_schema.properties = {"userId": {"type": "string"}}
        output_schema = gc.JsonSchemaDocument()
        output_schema.type = "object"
        contract_in = gc.PostInputContract()
        contract_in.input_schema = input_schema
        contract_out = gc.PostOutputContract()
        contract_out.success_schema = output_schema
        contract = gc.ActionContractInput()
        contract.input = contract_in
        contract.output = contract_out
        action_input.contract = contract
        action = integrations.post_integrations_actions(body=action_input)
        expect(action.id and action.version == 1 and action.integration_id == integration.id, action)
        expect(action.config.request.request_type == "GET", action.config)

        listing = integrations.get_integrations_actions(category="genesys-gateway", include_config=True)
        expect([a.id for a in listing.entities] == [action.id], listing)
        expect(listing.entities[0].config.response.success_template == response_config.success_template, listing)

        output = integrations.post_integrations_action_execute(action.id, {"userId": "u-9"})
        expect(output == {"name": "Jane Doe", "missing": "n/a", "raw": {"id": "u-9", "profile": {"name": "Jane Doe"}, "tags": ["vip"]}}, output)
        expected_auth = "Basic " + base64.b64encode(b"genesys:pa55").decode()
        expect(self.remote.seen[-1] == {"path": "/users/u-9", "authorization": expected_auth}, self.remote.seen)

        result = integrations.post_integrations_action_test(action.id, {"userId": "u-10"})
        expect(result.success is True, result)
        expect(result.final_result["name"] == "Jane Doe", result.final_result)
        expect(len(result.operations) >= 5 and all(o.success for o in result.operations), result.operations)

        update = gc.UpdateActionInput()
        update.name = "sdkFetchProfile2"
        update.version = action.version
        patched = integrations.patch_integrations_action(action.id, body=update)
        expect(patched.version == 2 and patched.name == "sdkFetchProfile2", patched)

        # A published action's contract changes through its draft; the id stays.
        draft = integrations.post_integrations_action_draft(action.id)
        expect(draft.id == action.id and draft.version == 1, draft)
        stricter = gc.JsonSchemaDocument()
        stricter.type = "object"
        stricter.required = ["name"]
        new_out = gc.PostOutputContract()
        new_out.success_schema = stricter
        new_contract = gc.ActionContractInput()
        new_contract.input = contract_in
        new_contract.output = new_out
        change = gc.UpdateDraftInput()
        change.contract = new_contract
        change.version = draft.version
        changed = integrations.patch_integrations_action_draft(action.id, body=change)
        expect(changed.version == 2, changed)
        read = integrations.get_integrations_action_draft(action.id, expand="contract", include_config=True)
        expect(read.contract.output.success_schema.required == ["name"], read.contract)
        publish = gc.PublishDraftInput()
        publish.version = changed.version
        republished = integrations.post_integrations_action_draft_publish(action.id, body=publish)
        expect(republished.id == action.id and republished.version == 3, republished)
        expect(republished.contract.output.success_schema.required == ["name"], republished.contract)
        try:
            integrations.get_integrations_action_draft(action.id)
            raise AssertionError("a published draft is still there")
        except ApiException as err:
            expect(err.status == 404, err)
        integrations.delete_integrations_action(action.id)
        try:
            integrations.get_integrations_action(action.id)
            raise AssertionError("deleted action still found")
        except ApiException as err:
            expect(err.status == 404, err)

    def rate_limited_call_raises_429(self):
        fault = json.dumps({"method": "GET", "path": "/api/v2/users/*", "status": 429, "retryAfter": 3, "count": 1}).encode()
        request = urllib.request.Request(
            self.base + "/__sim/faults", data=fault, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            expect(response.status == 201, response.status)
        users = gc.UsersApi(self.client)
        try:
            users.get_user("u-1")
            raise AssertionError("the injected 429 did not surface")
        except ApiException as err:
            expect(err.status == 429, "status %s" % err.status)
            expect(err.headers.get("Retry-After") == "3", err.headers)
            expect(json.loads(err.body)["code"] == "too.many.requests", err.body)
        expect(users.get_user("u-1").id == "u-1", "the fault served once")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sim", default=os.environ.get("SIM_URL"), help="simulator base URL (or SIM_URL)")
    args = parser.parse_args()
    if not args.sim:
        parser.error("--sim or SIM_URL is required")
    suite = Suite(args.sim)
    checks = [
        suite.login,
        suite.users,
        suite.queues,
        suite.notifications_and_callbacks,
        suite.integrations_and_actions,
        suite.rate_limited_call_raises_429,
    ]
    passed = failed = 0
    try:
        for check in checks:
            try:
                check()
            except Exception:  # noqa: BLE001 (report every failure, go on)
                failed += 1
                print("FAIL %s" % check.__name__)
                traceback.print_exc()
            else:
                passed += 1
                print("ok   %s" % check.__name__)
    finally:
        suite.remote.close()
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
