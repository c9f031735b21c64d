"""Organization and membership events as an outside subscriber sees them on the bus, each triggered
through the gateway and checked against the contract (CONTRACT.md §3) and common/events.py."""
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt

from common import events
from tests.support import join, run_together

#: the contract's payload fields for each event, besides the common ones
CONTRACT_FIELDS = {
    events.ORGANIZATION_CREATED: {"name", "owner_user_id"},
    events.ORGANIZATION_RENAMED: {"name"},
    events.MEMBER_JOINED: {"user_id", "email", "name", "role", "via_invite"},
    events.MEMBER_LEFT: {"user_id", "reason"},
    events.MEMBER_ROLE_CHANGED: {"user_id", "role"},
    events.OWNERSHIP_TRANSFERRED: {"from_user_id", "to_user_id"},
    events.ACCESS_REVOKED: {"not_before"},  # user_id and session_id: either may be absent or null
}
COMMON_FIELDS = {"event_id", "occurred_at", "organization_id"}


def received(tap, event, org_id, since, **match):
    """The first ``event`` of ``org_id`` whose fields equal ``match``, after checking its shape: every
    field the contract names, nothing the schema (contract + documented extensions) does not declare,
    a uuid ``event_id`` and an ISO 8601 UTC ``occurred_at`` at the time it happened."""
    body = tap.wait_for(event[1], organization_id=org_id, **match)
    schema = events.SCHEMAS[event]()
    assert schema.validate(body) == {}, (event, body)
    assert COMMON_FIELDS | CONTRACT_FIELDS[event] <= set(body), (event, body)
    assert set(body) <= set(schema.fields), (event, sorted(set(body) - set(schema.fields)))
    assert uuid.UUID(body["event_id"]).version == 4
    assert body["occurred_at"].endswith("Z"), body["occurred_at"]
    occurred = datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00"))
    assert since - timedelta(seconds=2) <= occurred <= datetime.now(UTC) + timedelta(seconds=2), body
    return body


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def assert_not_before(body, before, after):
    """``not_before`` is the moment of the revocation (unix seconds, millisecond precision)."""
    assert before - 0.01 <= body["not_before"] <= after + 0.01, (before, body, after)


def test_organization_created_and_renamed(gateway, tap):
    since = datetime.now(UTC)
    owner = gateway.signup(organization_name="Events Lab", name="Eve Owner")
    created = received(tap, events.ORGANIZATION_CREATED, owner.org_id, since, owner_user_id=owner.user_id)
    assert created["name"] == "Events Lab"
    assert (created["owner_email"], created["owner_name"]) == (owner.email, "Eve Owner")
    founder = received(tap, events.MEMBER_JOINED, owner.org_id, since, user_id=owner.user_id)
    assert {key: founder[key] for key in ("email", "name", "role", "via_invite", "is_owner", "member_count")} == {
        "email": owner.email, "name": "Eve Owner", "role": "admin", "via_invite": False, "is_owner": True,
        "member_count": 1}
    # an organization created by a signed-in account announces itself the same way
    second = gateway.post("/organizations", {"name": "Second Events Lab"}, owner.token)
    assert second.status_code == 201, second.text
    assert received(tap, events.ORGANIZATION_CREATED, second.json()["id"], since,
                    owner_user_id=owner.user_id)["name"] == "Second Events Lab"
    renamed = gateway.patch(f"/organizations/{owner.org_id}", {"name": "Renamed Events Lab"}, owner.token)
    assert renamed.status_code == 200, renamed.text
    assert received(tap, events.ORGANIZATION_RENAMED, owner.org_id, since)["name"] == "Renamed Events Lab"


def test_member_joined_role_changed_left_and_removed(gateway, tap, owner):
    since = datetime.now(UTC)
    org = owner.org_id
    joiner = join(gateway, tap, owner, "dataset_manager", name="Dana Joiner")
    joined = received(tap, events.MEMBER_JOINED, org, since, user_id=joiner.user_id)
    assert {key: joined[key] for key in ("email", "name", "role", "via_invite", "member_count")} == {
        "email": joiner.email, "name": "Dana Joiner", "role": "dataset_manager", "via_invite": True,
        "member_count": 2}

    before = time.time()
    changed = gateway.patch(f"/organizations/{org}/members/{joiner.user_id}", {"role": "admin"}, owner.token)
    after = time.time()
    assert changed.status_code == 200, changed.text
    assert received(tap, events.MEMBER_ROLE_CHANGED, org, since, user_id=joiner.user_id)["role"] == "admin"
    revoked = received(tap, events.ACCESS_REVOKED, org, since, user_id=joiner.user_id)
    assert revoked["session_id"] is None  # every token of the account in this organization
    assert_not_before(revoked, before, after)

    for reason, name in (("left", "Leo Leaver"), ("removed", "Rita Removed")):
        departing = join(gateway, tap, owner, "member", name=name)
        token = departing.token if reason == "left" else owner.token  # leaving oneself, or removed by the owner
        before = time.time()
        gone = gateway.delete(f"/organizations/{org}/members/{departing.user_id}", token=token)
        after = time.time()
        assert gone.status_code == 200, gone.text
        departure = received(tap, events.MEMBER_LEFT, org, since, user_id=departing.user_id)
        assert (departure["reason"], departure["member_count"]) == (reason, 2)
        revoked = received(tap, events.ACCESS_REVOKED, org, since, user_id=departing.user_id)
        assert revoked["session_id"] is None
        assert_not_before(revoked, before, after)


def test_ownership_transferred(gateway, tap, owner):
    since = datetime.now(UTC)
    heir = join(gateway, tap, owner, "admin", name="Hank Heir")
    before = time.time()
    moved = gateway.post(f"/organizations/{owner.org_id}/ownership", {"user_id": heir.user_id}, owner.token)
    after = time.time()
    assert moved.status_code == 200, moved.text
    transferred = received(tap, events.OWNERSHIP_TRANSFERRED, owner.org_id, since, from_user_id=owner.user_id)
    assert (transferred["to_user_id"], transferred["to_user_email"], transferred["to_user_name"]) == (
        heir.user_id, heir.email, "Hank Heir")
    # both accounts' tokens carry the old owner flag: both are revoked in this organization
    for user_id in (owner.user_id, heir.user_id):
        revoked = received(tap, events.ACCESS_REVOKED, owner.org_id, since, user_id=user_id)
        assert revoked["session_id"] is None
        assert_not_before(revoked, before, after)


def test_access_revoked_by_logout_switch_and_password_change(gateway, tap, owner):
    since = datetime.now(UTC)
    # logout and switch: that one session (the account's other sessions stay valid)
    before = time.time()
    assert gateway.post("/auth/logout", token=owner.token).status_code == 200
    after = time.time()
    session = claims(owner.token)["sid"]
    revoked = received(tap, events.ACCESS_REVOKED, owner.org_id, since, session_id=session)
    assert revoked["user_id"] == owner.user_id
    assert_not_before(revoked, before, after)
    assert revoked["not_before"] >= claims(owner.token)["iat"]

    login = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    second = gateway.post("/organizations", {"name": "Elsewhere"}, login["access_token"]).json()
    before = time.time()
    switched = gateway.post("/auth/switch", {"organization_id": second["id"]}, login["access_token"])
    after = time.time()
    assert switched.status_code == 200, switched.text
    revoked = received(tap, events.ACCESS_REVOKED, owner.org_id, since, session_id=claims(login["access_token"])["sid"])
    assert revoked["user_id"] == owner.user_id
    assert_not_before(revoked, before, after)

    # a password change: every token of the account, in every organization (no organization_id)
    before = time.time()
    changed = gateway.post("/auth/password", {"current_password": owner.password,
                                              "new_password": "another long password"},
                           switched.json()["access_token"])
    after = time.time()
    assert changed.status_code == 200, changed.text
    revoked = received(tap, events.ACCESS_REVOKED, None, since, user_id=owner.user_id, session_id=None)
    assert_not_before(revoked, before, after)


def test_concurrent_writes_of_one_document_publish_each_event_once(gateway, tap):
    """A write publishes the events it queued, and only those. When every write published everything
    pending in its document, concurrent renames of one organization published each other's events
    too: n writers, up to n² publishes, and subscriber work that cut rename throughput as
    concurrency rose (17 renames/s at 16 connections, 4/s at 64)."""
    owner = gateway.signup(organization_name="Busy Rename Lab")
    names = [f"Busy Rename Lab {index}" for index in range(12)]
    answers = []

    def rename(name):
        answers.append(gateway.patch(f"/organizations/{owner.org_id}", {"name": name}, owner.token).status_code)
    run_together(rename, [(name,) for name in names], timeout=120)
    assert answers == [200] * len(names), answers
    # one more, after every answer: its event is queued behind everything the racers published
    assert gateway.patch(f"/organizations/{owner.org_id}", {"name": "Quiet Rename Lab"}, owner.token).status_code == 200
    tap.wait_for("organization_renamed", organization_id=owner.org_id, name="Quiet Rename Lab", timeout=30)
    renamed = tap.all("organization_renamed", organization_id=owner.org_id)
    ids = [body["event_id"] for body in renamed]
    assert sorted(body["name"] for body in renamed) == sorted(names + ["Quiet Rename Lab"])
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} renames published more than once"
