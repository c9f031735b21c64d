"""Issue 15: the event envelope, one request id end to end, structured logs.

The plain consumer below uses kombu alone (no nameko, nothing of this project): what an outside
subscriber knows from the README's Events section.
"""
import json
import os
import socket
import uuid
from datetime import UTC, datetime

import pytest
from kombu import Connection, Exchange, Queue

from tests.support import invite, unique_email, wait_until

SERVICES = ("org", "membership", "notifications", "usage")


class PlainConsumer:
    """An exclusive queue bound to every routing key of the given ``<source>.events`` exchanges."""

    def __init__(self, amqp_uri, sources):
        self.connection = Connection(amqp_uri)
        channel = self.connection.channel()
        self.queue = Queue(f"plain-{uuid.uuid4().hex}", exclusive=True, auto_delete=True, channel=channel)
        self.queue.declare()
        for source in sources:
            self.queue.bind_to(exchange=Exchange(f"{source}.events", type="topic", passive=True),
                               routing_key="#")
        self.messages = []
        self.consumer = self.connection.Consumer(self.queue, channel=channel, callbacks=[self._keep],
                                                 accept=["json"])
        self.consumer.consume()

    def _keep(self, body, message):
        self.messages.append(message)
        message.ack()

    def first(self, predicate, timeout=15.0):
        def found():
            try:
                self.connection.drain_events(timeout=0.2)
            except TimeoutError:
                pass
            return next((m for m in self.messages if predicate(m)), None)
        return wait_until(found, timeout=timeout, what="a matching event")

    def close(self):
        self.connection.release()


def test_a_plain_amqp_consumer_reads_type_id_and_time_from_the_envelope(gateway, test_stack):
    consumer = PlainConsumer(test_stack.amqp_uri, ("org", "membership"))
    request_id = f"signup-{uuid.uuid4()}"
    email = unique_email("envelope")
    try:
        before = int(datetime.now(UTC).timestamp())
        answer = gateway.post("/auth/signup", {"email": email, "password": "correct horse battery",
                                               "name": "Env Lope", "organization_name": "Envelope Lab"},
                              headers={"X-Request-ID": request_id})
        assert answer.status_code == 201, answer.text
        assert answer.headers["X-Request-ID"] == request_id
        org_id = answer.json()["organization"]["id"]
        seen = {}
        for event_type, source in (("organization_created", "org"), ("member_joined", "membership")):
            # chosen by the envelope alone; the body is read only to compare afterwards
            message = consumer.first(lambda m, t=event_type: m.properties.get("type") == t
                                     and m.properties.get("correlation_id") == request_id)
            properties, headers = message.properties, message.headers
            event_id = properties["message_id"]
            assert str(uuid.UUID(event_id)) == event_id  # a hyphenated uuid
            assert properties["app_id"] == source
            assert properties["content_type"] == "application/json"
            assert before - 1 <= properties["timestamp"] <= int(datetime.now(UTC).timestamp()) + 1
            assert headers["cloudEvents:specversion"] == "1.0"
            assert headers["cloudEvents:id"] == event_id
            assert headers["cloudEvents:type"] == event_type
            assert headers["cloudEvents:source"] == "/orgplatform/" + source
            occurred = datetime.fromisoformat(headers["cloudEvents:time"].replace("Z", "+00:00"))
            assert int(occurred.timestamp()) == properties["timestamp"]
            body = message.decode()
            assert (body["event_id"], body["occurred_at"], body["organization_id"]) == (
                event_id, headers["cloudEvents:time"], org_id)  # bodies keep today's fields
            assert message.delivery_info["routing_key"] == event_type
            seen[event_type] = event_id
        assert seen["organization_created"] != seen["member_joined"]
    finally:
        consumer.close()


def test_every_answer_carries_a_request_id(gateway, owner):
    mine = f"client-{uuid.uuid4()}"
    cases = [
        ("GET", "/me", {"token": owner.token}, 200),
        ("GET", "/me", {}, 401),
        ("GET", "/no/such/route", {}, 404),
        ("POST", "/auth/login", {"data": "x", "headers": {"content-type": "text/plain"}}, 415),
        ("POST", "/auth/login", {"json": {"email": "x"}}, 422),
        ("PUT", "/me", {"token": owner.token}, 405),
    ]
    for method, path, options, status in cases:
        headers = options.get("headers", {})
        others = {k: v for k, v in options.items() if k != "headers"}
        kept = gateway.request(method, path, headers=dict(headers, **{"X-Request-ID": mine}), **others)
        assert kept.status_code == status, (method, path, kept.status_code, kept.text)
        assert kept.headers["X-Request-ID"] == mine, (method, path)
        made = gateway.request(method, path, headers=headers, **others)
        assert str(uuid.UUID(made.headers["X-Request-ID"])) == made.headers["X-Request-ID"], (method, path)
    for malformed in ("has space", "x" * 129, "-starts-with-dash", "quote\"d", "ünï"):
        answer = gateway.request("GET", gateway.base_url + "/healthz",
                                 headers={"X-Request-ID": malformed.encode("utf-8")})
        assert answer.headers["X-Request-ID"] != malformed
        uuid.UUID(answer.headers["X-Request-ID"])
    assert len({gateway.get(gateway.base_url + "/healthz").headers["X-Request-ID"] for _ in range(5)}) == 5


def test_the_proxys_own_answers_carry_a_request_id_too(gateway):
    """nginx answers a body over MAX_REQUEST_BYTES itself (413, the gateway never sees it)."""
    from common.config import load_config
    from stack import stack

    limit = int(load_config(stack.GATEWAY_CONFIG)["MAX_REQUEST_BYTES"])
    body = b"{" + b" " * limit + b"}"
    mine = f"proxy-{uuid.uuid4()}"
    kept = gateway.request("POST", "/auth/login", data=body, headers={"content-type": "application/json",
                                                                     "X-Request-ID": mine})
    assert kept.status_code == 413 and kept.json()["error"]["code"] == "payload_too_large", kept.text
    assert kept.headers["X-Request-ID"] == mine
    made = gateway.request("POST", "/auth/login", data=body, headers={"content-type": "application/json",
                                                                     "X-Request-ID": "not well formed"})
    assert made.status_code == 413
    assert made.headers["X-Request-ID"] != "not well formed" and len(made.headers["X-Request-ID"]) == 32


def log_lines(test_stack, name):
    path = os.path.join(test_stack.log_dir, name + ".log")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line for line in handle.read().split("\n") if line.strip()]  # records end in \n only


def json_lines(test_stack, name):
    return [json.loads(line) for line in log_lines(test_stack, name)]


def test_one_signups_request_id_through_logs_events_and_the_mail_it_caused(gateway, tap, test_stack, owner):
    """Grace signs up with an invitation: her request id is in the gateway's access log, in the
    membership service's log of the sign-up call, on the member_joined event, in the org and
    notifications services' logs of handling it, and on the delivery record of the mail telling
    the owner she joined."""
    request_id = f"trace-{uuid.uuid4()}"
    email = unique_email("traced")
    token, _ = invite(gateway, tap, owner, email)
    answer = gateway.post("/auth/signup", {"email": email, "password": "correct horse battery", "name": "Traced Grace",
                                           "invite_token": token}, headers={"X-Request-ID": request_id})
    assert answer.status_code == 201, answer.text
    assert answer.headers["X-Request-ID"] == request_id

    joined = tap.wait_for("member_joined", organization_id=owner.org_id, email=email)
    [(_, _, properties, _)] = [m for m in tap.messages if m[1] is joined]
    assert properties["correlation_id"] == request_id

    def traced(name, **match):
        return [line for line in json_lines(test_stack, name) if line.get("request_id") == request_id
                and all(line.get(k) == v for k, v in match.items())]

    wait_until(lambda: traced("gateway", path="/api/v1/auth/signup", status=201), timeout=10,
               what="the sign-up in the gateway's access log")
    wait_until(lambda: traced("membership", entrypoint="membership.signup_with_invite", outcome="ok"), timeout=10,
               what="the sign-up call in the membership log")
    for service in ("org", "notifications"):
        wait_until(lambda service=service: [line for line in traced(service, kind="event", outcome="ok")
                            if line.get("event_id") == joined["event_id"]], timeout=20,
                   what=f"member_joined handled in the {service} log")

    def delivery():
        items = gateway.get(f"/organizations/{owner.org_id}/notifications/deliveries", owner.token).json()["items"]
        return next((d for d in items if d["kind"] == "member_joined" and d["request_id"] == request_id), None)
    record = wait_until(delivery, timeout=30, what="the member_joined mail's delivery record")
    assert record["event_id"] == joined["event_id"]
    assert record["to"] == owner.email


@pytest.mark.parametrize("name", ("gateway", "smtp") + SERVICES)
def test_every_log_line_of_every_process_is_one_json_object(test_stack, gateway, name):
    gateway.get(gateway.base_url + "/healthz")
    if name == "gateway":  # a raw path holding UTF-8 line and paragraph separators (the fuzzer sent such)
        port = int(test_stack.upstream_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET /api/v1/no\xe2\x80\xa8such\xc2\x85path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while raw.recv(65536):
                pass
    lines = log_lines(test_stack, name)
    assert lines, f"{name} wrote nothing"
    bad = []
    for line in lines:
        if not line.isascii():  # non-ASCII is escaped: no reader can mistake U+2028 for a line break
            bad.append(line)
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if not (isinstance(record, dict) and {"timestamp", "level", "service", "message"} <= set(record)
                and record["service"] == name):
            bad.append(line)
    assert not bad, f"{len(bad)} of {len(lines)} lines of {name}.log are not log records, e.g. {bad[:3]}"


# -- metrics -----------------------------------------------------------------------------------------

def scrape(url):
    """``{(sample name, frozenset(labels)): value}`` of a /metrics answer, parsed by prometheus-client."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def total(samples, name, **labels):
    """Sum of ``name`` over the series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and wanted <= sample_labels)


def names(samples):
    return {name for name, _ in samples}


def test_every_metrics_endpoint_moves_after_a_short_journey(gateway, tap, test_stack):
    from tests.support import Mailbox, superuser_token

    endpoints = dict({"gateway": test_stack.upstream_url + "/metrics"},
                     **{service: f"http://127.0.0.1:{port}/metrics"
                        for service, port in test_stack.metrics_ports.items()})
    before = {name: scrape(url) for name, url in endpoints.items()}

    owner = gateway.signup(organization_name="Metrics Lab")
    assert gateway.get(f"/organizations/{owner.org_id}", owner.token).status_code == 200
    email = unique_email("metrics")
    mailbox = Mailbox(test_stack.mail_dir)  # before the invite: mail already there when it is made counts as old
    invite(gateway, tap, owner, email)
    mailbox.wait(email)
    grant = gateway.post(f"/organizations/{owner.org_id}/credits/grants",
                         {"amount": 1000, "idempotency_key": uuid.uuid4().hex}, superuser_token(gateway))
    assert grant.status_code == 201, grant.text
    assert gateway.get(f"/organizations/{owner.org_id}/members/not-a-member", owner.token).status_code in (404, 405)

    def moved():
        after = {name: scrape(url) for name, url in endpoints.items()}
        grown = lambda component, name, **labels: (total(after[component], name, **labels)  # noqa: E731
                                                   > total(before[component], name, **labels))
        checks = {
            "gateway requests": grown("gateway", "gateway_http_requests_total", route="/api/v1/auth/signup",
                                      method="POST", status="201"),
            "gateway latency": grown("gateway", "gateway_http_request_seconds_count",
                                     route="/api/v1/organizations/<org_id>"),
            "gateway rpc": grown("gateway", "gateway_rpc_calls_total", service="membership", outcome="ok"),
            "gateway rpc latency": grown("gateway", "gateway_rpc_seconds_count", service="org", method="get_overview"),
            "org rpc": grown("org", "orgplatform_rpc_calls_total", method="create_organization", outcome="ok"),
            "membership rpc": grown("membership", "orgplatform_rpc_calls_total", method="create_invites", outcome="ok")
            or grown("membership", "orgplatform_rpc_calls_total", outcome="ok"),
            "usage ledger": grown("usage", "orgplatform_ledger_writes_total", kind="grant"),
            "notifications events": grown("notifications", "orgplatform_events_total", outcome="handled"),
            "org events": grown("org", "orgplatform_events_total", outcome="handled"),
            "mail sent": grown("notifications", "orgplatform_mail_attempts_total", outcome="sent"),
        }
        return after if all(checks.values()) else print(checks)
    after = wait_until(moved, timeout=30, what="the counters to move")

    assert total(after["gateway"], "gateway_revocation_listener_connected") >= 1
    assert "gateway_revocation_list_entries" in names(after["gateway"])
    # rate-limit refusals: wrong passwords for one email until the per-email limit answers 429
    limited = wait_until(lambda: gateway.post("/auth/login", {"email": owner.email, "password": "wrong password!"})
                         .status_code == 429, timeout=60, interval=0, what="a 429")
    assert limited
    assert total(scrape(endpoints["gateway"]), "gateway_rate_limited_total", route="/api/v1/auth/login") >= 1
    for service in SERVICES:
        assert "orgplatform_outbox_backlog" in names(after[service]), service
        assert "orgplatform_outbox_oldest_seconds" in names(after[service]), service
    assert "orgplatform_mail_queue_depth" in names(after["notifications"])
    assert "orgplatform_mail_retry_backlog" in names(after["notifications"])
    # behind nginx, /metrics is not public
    assert gateway.get(gateway.base_url + "/metrics").status_code == 404
