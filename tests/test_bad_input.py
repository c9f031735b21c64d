"""Hostile input (issue 12, item 4): every shape below answered 500 or left an organization stuck.

Each one must be a 4xx in the contract's error shape naming the field, at the edge (the gateway's
schemas) and again in the service (which must not trust its caller), and nothing may be left
half-done: after a refused storage report the organization's storage endpoints work as before.
All through the real gateway, broker, database and SMTP sink.
"""
import base64
import json
import uuid

import pytest

from common import events
from tests.support import Mailbox, assert_error, join, unique_email, wait_until


def b64(raw):
    """A cursor as the services make them: urlsafe base64 without padding."""
    if not isinstance(raw, bytes):
        raw = json.dumps(raw).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


TAMPERED_CURSORS = [
    b64([1, "x"]), b64([None, "x"]), b64(["2024-01-01T00:00:00+00:00"]), b64(["2024-01-01T00:00:00+00:00", "x", 3]),
    b64(["2024-01-01T00:00:00+00:00", None]), b64(["2024-01-01T00:00:00+00:00", ["x"]]),
    b64({"joined_at": 1}), b64("x"), b64(7), b64(b"not json at all"), b64(b"\xff\xfe\x00"),
    b64(["0001-01-01T00:00:00+14:00", "x"]), b64(["9999-12-31T23:59:59-12:00", "x"]), b64(["yesterday", "x"]),
    b64(b"[" * 300), "!!!!", "a", "ab=c",
]


def assert_cursor_refused(response):
    error = assert_error(response, 422, "validation_failed")
    assert "cursor" in error["details"], error


@pytest.mark.parametrize("cursor", TAMPERED_CURSORS)
def listing(gateway, token, path, cursor):
    return gateway.http.get(gateway.api + path, params={"cursor": cursor}, headers={"Authorization": "Bearer " + token},
                            timeout=15)


@pytest.mark.parametrize("cursor", TAMPERED_CURSORS)
def test_tampered_member_and_delivery_cursors_are_422(gateway, owner, cursor):
    for path in ("members", "notifications/deliveries"):
        assert_cursor_refused(listing(gateway, owner.token, f"/organizations/{owner.org_id}/{path}", cursor))


@pytest.mark.parametrize("cursor", ["99999999999999999999", "9223372036854775808", "9" * 40, "-1",
                                    "-99999999999999999999",
                                    "0", "+5", " 5", "5 ", "1_000", "\u0665", "0x10", "1e3", "", "x"])
def test_tampered_credit_cursors_are_422(gateway, owner, cursor):
    assert_cursor_refused(listing(gateway, owner.token, f"/organizations/{owner.org_id}/credits", cursor))


def test_a_real_credit_cursor_still_pages(gateway, owner, su):
    for _ in range(3):
        granted = gateway.post(f"/organizations/{owner.org_id}/credits/grants",
                               {"amount": 1000, "idempotency_key": uuid.uuid4().hex}, su)
        assert granted.status_code == 201, granted.text
    first = gateway.get(f"/organizations/{owner.org_id}/credits?limit=2", owner.token)
    assert first.status_code == 200, first.text
    cursor = first.json()["next_cursor"]
    assert cursor
    second = gateway.get(f"/organizations/{owner.org_id}/credits?limit=2&cursor={cursor}", owner.token)
    assert second.status_code == 200, second.text
    assert [e["sequence"] for e in second.json()["items"]] == [1]


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_deeply_nested_bodies_are_400(gateway, owner, opening):
    body = opening * 50_000
    for path, token in (("/auth/signup", None), (f"/organizations/{owner.org_id}/invites", owner.token)):
        response = gateway.request("POST", path, token, data=body, headers={"Content-Type": "application/json"})
        assert_error(response, 400, "malformed_request")
    # a nesting deep enough to hurt but short of the parser's limit is an ordinary 422
    response = gateway.request("POST", "/auth/signup", data=b'{"name": ' + b"[" * 500 + b"]" * 500 + b"}",
                               headers={"Content-Type": "application/json"})
    assert_error(response, 422, "validation_failed")


LONE = "\ud800"


def test_lone_surrogates_are_422_in_every_string_field(gateway, owner, su, tap):
    """JSON may spell a lone surrogate (``"\\ud800"``); it is no Unicode text and cannot be stored."""
    org = f"/organizations/{owner.org_id}"
    member = join(gateway, tap, owner, "member")
    cases = [
        ("POST", "/auth/signup", None, {"email": unique_email(), "password": "correct horse battery",
                                        "name": "Ada" + LONE}, "name"),
        ("POST", "/auth/signup", None, {"email": unique_email(), "password": "correct horse battery" + LONE,
                                        "name": "Ada"}, "password"),
        ("POST", "/auth/signup", None, {"email": unique_email(), "password": "correct horse battery",
                                        "name": "Ada", "organization_name": LONE + " Lab"}, "organization_name"),
        ("POST", "/auth/login", None, {"email": owner.email + LONE, "password": owner.password}, "email"),
        ("POST", "/auth/refresh", None, {"refresh_token": "x" + LONE}, "refresh_token"),
        ("POST", "/organizations", owner.token, {"name": "Lab \udfff"}, "name"),
        ("PATCH", org, owner.token, {"name": "Lab " + LONE}, "name"),
        ("POST", org + "/invites", owner.token, {"emails": [f"a{LONE}@example.test"], "role": "member"}, "emails"),
        ("POST", org + "/ownership", owner.token, {"user_id": member.user_id + LONE}, "user_id"),
        ("PUT", org + "/notifications", owner.token, {"plan_email": f"p{LONE}@example.test",
                                                      "new_user_email": None, "ai_job_recipients": "admins"},
         "plan_email"),
        ("POST", org + "/credits/grants", su, {"amount": 5, "idempotency_key": uuid.uuid4().hex,
                                               "comment": "gift " + LONE}, "comment"),
        ("POST", org + "/credits/reservations", owner.token, {"amount": 5, "job_id": "job" + LONE, "job_type": "seg",
                                                              "idempotency_key": uuid.uuid4().hex}, "job_id"),
        ("POST", org + "/credits/reservations", owner.token, {"amount": 5, "job_id": "job", "job_type": "seg",
                                                              "idempotency_key": LONE}, "idempotency_key"),
        ("POST", org + "/storage-reports", su, {"datasets": [{"dataset_id": "d" + LONE, "bytes": 1}],
                                                "complete": False}, "datasets"),
        ("DELETE", org, owner.token, {"confirm_name": LONE}, "confirm_name"),
    ]
    for method, path, token, body, field in cases:
        error = assert_error(gateway.request(method, path, token, json=body), 422, "validation_failed")
        assert field in error["details"], (path, field, error)
    # an unknown field whose *name* is a lone surrogate: refused too, and the answer is valid JSON text
    response = gateway.request("PATCH", org, owner.token, json={"name": "Fine", LONE: 1})
    assert_error(response, 422, "validation_failed")
    response.content.decode("utf-8")
    # nothing of it was applied
    assert gateway.get(org, owner.token).json()["name"] == owner.data["organization"]["name"]


def _plan(paid_until):
    return {"name": "team", "included_users": 5, "included_storage_bytes": 100, "paid_until": paid_until}


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00+00:00",
                                    "9999-12-31T23:59:59-12:00", "9999-12-31T23:59:59+00:00",
                                    "1969-12-31T23:59:59+00:00", "9000-01-01T00:00:01+00:00",
                                    "8999-12-31T23:00:00-02:00"])
def test_dates_out_of_range_are_422_naming_the_field(gateway, owner, su, moment):
    org = f"/organizations/{owner.org_id}"
    error = assert_error(gateway.request("PUT", org + "/plan", su, json=_plan(moment)), 422, "validation_failed")
    assert "paid_until" in error["details"], error
    error = assert_error(gateway.post(org + "/credits/grants", {"amount": 5, "idempotency_key": uuid.uuid4().hex,
                                                                 "expires_at": moment}, su),
                         422, "validation_failed")
    assert "expires_at" in error["details"], error
    assert gateway.get(org, owner.token).json()["plan"]["name"] == "custom"


def test_dates_at_the_edges_of_the_range_are_accepted_and_mailed(gateway, test_stack, owner, su):
    org = f"/organizations/{owner.org_id}"
    mailbox = Mailbox(test_stack.mail_dir)
    for moment, shown in (("1970-01-01T00:00:00+00:00", "1970-01-01T00:00:00.000Z"),
                          ("8999-12-31T23:59:59-00:00", "8999-12-31T23:59:59.000Z"),
                          ("9000-01-01T13:59:59+14:00", "8999-12-31T23:59:59.000Z")):
        answer = gateway.request("PUT", org + "/plan", su, json=_plan(moment))
        assert answer.status_code == 200, answer.text
        assert answer.json()["plan"]["paid_until"] == shown
    # each plan change was mailed, the extreme ones included (the reminder schedule did not break it)
    mailbox.wait(owner.email, contains="plan changed", count=3, timeout=60)
    grant = gateway.post(org + "/credits/grants", {"amount": 5, "idempotency_key": uuid.uuid4().hex,
                                                   "expires_at": "8999-12-31T23:59:59+00:00"}, su)
    assert grant.status_code == 201, grant.text


def test_a_plan_mail_with_an_unschedulable_paid_until_is_still_sent(gateway, test_stack, owner, tap):
    """Defence in depth: a plan_changed event the gateway would never let through (year 1, as an
    older publisher could have sent it) still gets its mail out instead of failing into the parking
    queue: a reminder six weeks before year 1 cannot be computed, so the plan counts as expired."""
    from kombu import Connection

    from common.events import make_event
    from common.topology import event_exchange

    mailbox = Mailbox(test_stack.mail_dir)
    plan = {"name": "power", "included_users": None, "included_storage_bytes": None,
            "paid_until": "0001-01-01T00:00:00.000Z"}
    wait_until(lambda: gateway.get(f"/organizations/{owner.org_id}/notifications", owner.token).status_code == 200,
               timeout=15, what="notifications to know the organization")
    tap.wait_for("organization_created", organization_id=owner.org_id, timeout=15)
    source, event_type, body = make_event(events.PLAN_CHANGED, owner.org_id, plan=plan,
                                          old_plan={"name": "custom", "included_users": None,
                                                    "included_storage_bytes": None, "paid_until": None})
    tap.allow_bare(body["event_id"])  # an older publisher: no envelope either
    with Connection(test_stack.amqp_uri) as connection:
        connection.Producer(serializer="json").publish(body, exchange=event_exchange(source), routing_key=event_type,
                                                       declare=[event_exchange(source)], retry=True)
    [mail] = mailbox.wait(owner.email, contains="plan changed to power", timeout=30)
    assert "0001-01-01" in mail.text


def test_storage_totals_cannot_overflow_and_a_refused_report_leaves_nothing_stuck(gateway, owner, su):
    org = f"/organizations/{owner.org_id}"
    huge = 2 ** 49

    def report(prefix, count=10_000, size=huge, complete=False):
        """Sent again, as a client would, while the answer is 503 (10,000 datasets can take the
        service longer than the test stack's 3 s RPC timeout on a busy machine) or 409 (that
        attempt is still being applied): a report is idempotent, so the final answer is the one."""
        datasets = [{"dataset_id": f"{prefix}-{i:05d}", "bytes": size} for i in range(count)]
        answers = []

        def answered():
            answers.append(gateway.post(org + "/storage-reports", {"datasets": datasets, "complete": complete}, su,
                                        timeout=60))
            return answers[-1].status_code not in (409, 503)
        wait_until(answered, timeout=120, interval=1, what="an answer other than 409/503")
        return answers[-1]

    first = report("a")
    assert first.status_code == 201, first.text
    assert first.json()["used_bytes"] == 10_000 * huge
    second = report("b")
    error = assert_error(second, 422, "validation_failed")
    assert "datasets" in error["details"], error
    # nothing was applied, nothing is stuck: reads and the next report work at once
    usage = gateway.get(org + "/usage", owner.token)
    assert usage.status_code == 200, usage.text
    assert usage.json()["storage"]["used_bytes"] == 10_000 * huge
    assert usage.json()["storage"]["datasets"] == 10_000
    small = gateway.post(org + "/storage-reports", {"datasets": [{"dataset_id": "a-00000", "bytes": 1}],
                                                   "complete": False}, su)
    assert small.status_code == 201, small.text
    assert small.json()["used_bytes"] == 9_999 * huge + 1
    assert small.json()["sequence"] == first.json()["sequence"] + 1
    # a complete report replaces everything, so it may state the maximum again
    again = report("c", complete=True)
    assert again.status_code == 201, again.text
    assert again.json()["datasets"] == 10_000
    overview = wait_until(lambda: (lambda o: o if o["storage"]["used_bytes"] == 10_000 * huge else None)(
        gateway.get(org, owner.token).json()), timeout=15, what="the overview to show the total")
    assert overview["storage"]["used_bytes"] == 10_000 * huge


def test_services_refuse_the_same_shapes_without_the_gateway(test_stack, owner, su):
    """Services do not trust their caller: the same hostile values sent straight over RPC are
    ``validation_failed`` naming the argument, never an unexpected error."""
    from nameko.standalone.rpc import ClusterRpcProxy

    from common.errors import DomainError

    plan = {"name": "team", "included_users": 1, "included_storage_bytes": 1}
    calls = [
        ("membership", "signup", (unique_email(), "correct horse battery", "Ada" + LONE, None), "name"),
        ("org", "rename", (owner.org_id, "Lab " + LONE), "name"),
        ("membership", "list_members", (owner.org_id, 10, b64([1, "x"]), None), "cursor"),
        ("membership", "list_members", (owner.org_id, 10, b64(["0001-01-01T00:00:00+14:00", "x"]), None), "cursor"),
        ("notifications", "list_deliveries", (owner.org_id, 10, b64([None, "x"])), "cursor"),
        ("usage", "get_ledger", (owner.org_id, 10, "99999999999999999999"), "cursor"),
        ("usage", "get_ledger", (owner.org_id, 10, "-1"), "cursor"),
        ("org", "set_plan", (owner.org_id, dict(plan, paid_until="0001-01-01T00:00:00+14:00"), "su"), "paid_until"),
        ("org", "set_plan", (owner.org_id, dict(plan, paid_until="0001-01-01T00:00:00+00:00"), "su"), "paid_until"),
        ("usage", "grant_credits", (owner.org_id, "su", 5, uuid.uuid4().hex, None, "9999-12-31T23:59:59-12:00"),
         "expires_at"),
        ("usage", "report_storage", (owner.org_id, [{"dataset_id": "d" + LONE, "bytes": 1}], False), "datasets"),
    ]
    with ClusterRpcProxy({"AMQP_URI": test_stack.amqp_uri}, timeout=20) as cluster:
        for service, method, args, field in calls:
            with pytest.raises(DomainError) as raised:
                getattr(getattr(cluster, service), method)(*args)
            assert raised.value.code == "validation_failed", (service, method, raised.value)
            assert field in raised.value.details, (service, method, raised.value.details)
