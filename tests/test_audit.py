"""The audit log (issue 19): a fifth service built from the public events alone.

A journey through the gateway yields exactly the expected entries, with the right actors, in
order, for that organization only; duplicated and redelivered events add nothing; with the service
down the journey loses nothing; one edited entry makes verification fail at that entry; retention
removes old entries and the chain still verifies; the deletion purges the log (its count is in the
audit service's ``organization_purged``).
"""
import json
import uuid
from datetime import timedelta
from urllib.parse import quote

import pymongo
import pytest
from kombu import Connection, Producer

from common import events
from common.envelope import envelope
from common.events import isoformat, utcnow
from common.topology import event_exchange
from services.audit.store import BULK as AUDIT_BULK
from services.audit.store import AuditStore
from stack import stack
from tests.support import EventTap, assert_error, invite, superuser_token, unique_email, wait_until

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def su(gateway):
    token = superuser_token(gateway)
    return {"token": token, "id": gateway.get("/me", token).json()["user"]["id"]}


@pytest.fixture(scope="module")
def audit_db(test_stack):
    client = pymongo.MongoClient(test_stack.mongo_url, tz_aware=True)
    yield client[test_stack.db_prefix + "audit"]
    client.close()


def entries(gateway, org_id, token, missing_ok=False, **query):
    """The whole log, newest first, page by page (``limit`` 200); ``missing_ok``: None while the
    service has no event of the organization yet (404)."""
    found, cursor = [], None
    while True:
        params = dict(query, limit=200, **({"cursor": cursor} if cursor else {}))
        query_string = "&".join(f"{name}={value}" for name, value in params.items())
        response = gateway.get(f"/organizations/{org_id}/audit-log?{query_string}", token)
        if missing_ok and response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def wait_entries(gateway, org_id, token, count, timeout=30):
    return wait_until(lambda: (lambda items: items if items is not None and len(items) >= count else None)(
        entries(gateway, org_id, token, missing_ok=True)), timeout=timeout, interval=0.2, what=f"{count} audit entries "
                                                                                               f"of {org_id}")


def person(user_id, superuser=False):
    return {"user_id": user_id, "is_superuser": superuser}


def publish(test_stack, event, body):
    """Publish ``body`` as its source would (with its envelope), as the instance's administrator."""
    source, event_type = event
    with Connection(test_stack.amqp_uri) as connection:
        Producer(connection.channel()).publish(body, exchange=event_exchange(source), routing_key=event_type,
                                               serializer="json", **envelope(source, event_type, body))


def shape(entry):
    return (entry["action"], entry["actor"], entry["target"]["id"])


def test_a_journey_through_the_gateway_is_logged_exactly_in_order(gateway, tap, test_stack, su):
    """Each step's entries appear before the next step starts; the log is exactly the steps' entries,
    step after step (within one step, entries of different exchanges may come in either order)."""
    audit_tap = EventTap(test_stack.amqp_uri, sources=("audit",))
    bystander = gateway.signup(organization_name=f"Bystander {uuid.uuid4().hex[:6]}")
    bystander_log = wait_entries(gateway, bystander.org_id, bystander.token, 2)

    steps = []  # (label, [(action, actor, target id, details subset)])
    recorded = []

    def step(label, expected):
        steps.append((label, expected))
        total = sum(len(e) for _, e in steps)
        items = wait_entries(gateway, org, su["token"], total)  # the operator reads any organization's log
        assert len(items) == total, (label, [shape(e) for e in items])
        new = list(reversed(items[:len(expected)]))  # this step's entries, oldest first
        want = sorted((a, json.dumps(actor, sort_keys=True), t) for a, actor, t, _ in expected)
        got = sorted((e["action"], json.dumps(e["actor"], sort_keys=True), e["target"]["id"]) for e in new)
        assert got == want, (label, got, want)
        for action, _, target, details in expected:
            entry = next(e for e in new if e["action"] == action and e["target"]["id"] == target)
            assert details.items() <= entry["details"].items(), (label, entry)
        recorded.extend(new)

    # sign-up: the new owner created the organization and joined it (no token existed yet)
    name = f"Audited Lab {uuid.uuid4().hex[:6]}"
    founder = gateway.signup(organization_name=name, name="Fran Founder")
    org, me = founder.org_id, person(founder.user_id)
    step("sign-up", [("organization.created", me, org, {"name": name, "owner_user_id": founder.user_id}),
                     ("member.joined", me, founder.user_id, {"role": "admin", "is_owner": True, "via_invite": False})])

    renamed = name + " renamed"
    response = gateway.patch(f"/organizations/{org}", {"name": renamed}, founder.token,
                             headers={"X-Request-ID": "audit-rename-1"})
    assert response.status_code == 200, response.text
    step("rename", [("organization.renamed", me, org, {"name": renamed, "previous_name": name})])
    assert recorded[-1]["request_id"] == "audit-rename-1"

    admin_email, doomed_email = unique_email("future-admin"), unique_email("never")
    token, invite_id = invite(gateway, tap, founder, admin_email, "member")
    _, doomed_id = invite(gateway, tap, founder, doomed_email, "dataset_manager")
    step("invites", [("invite.created", me, invite_id, {"email": admin_email, "role": "member"}),
                     ("invite.created", me, doomed_id, {"email": doomed_email, "role": "dataset_manager"})])

    assert gateway.delete(f"/organizations/{org}/invites/{doomed_id}", None, founder.token).status_code == 200
    step("revoke", [("invite.revoked", me, doomed_id, {"email": doomed_email})])

    response = gateway.post("/auth/signup", {"email": admin_email, "password": PASSWORD, "name": "Ada Admin",
                                             "invite_token": token})
    assert response.status_code == 201, response.text
    ada = response.json()
    ada_id = ada["user"]["id"]
    step("accept", [("invite.accepted", person(ada_id), invite_id, {"user_id": ada_id, "role": "member"}),
                    ("member.joined", person(ada_id), ada_id, {"via_invite": True, "role": "member"})])

    member_path = f"/organizations/{org}/members/{ada_id}"
    assert gateway.patch(member_path, {"role": "admin"}, founder.token).status_code == 200
    step("role change", [("member.role_changed", me, ada_id, {"role": "admin", "previous_role": "member"})])
    assert gateway.patch(member_path, {"can_delete_organization": True}, founder.token).status_code == 200
    step("deletion right", [("deletion_right.granted", me, ada_id, {})])

    settings = {"plan_email": f"billing-{uuid.uuid4().hex[:6]}@example.test", "new_user_email": None,
                "ai_job_recipients": "initiator_and_admins"}
    assert gateway.request("PUT", f"/organizations/{org}/notifications", founder.token,
                           json=settings).status_code == 200
    step("settings", [("notification_settings.changed", me, org, settings)])

    wait_until(lambda: gateway.get(f"/organizations/{org}/usage", su["token"]).status_code == 200,
               what="the usage service to know the organization")
    grant = gateway.post(f"/organizations/{org}/credits/grants", {"amount": 50_000, "comment": "welcome"},
                         su["token"], headers={"Idempotency-Key": uuid.uuid4().hex})
    assert grant.status_code == 201, grant.text
    step("grant", [("credits.granted", person(su["id"], True), grant.json()["entry"]["id"],
                    {"amount": 50_000, "balance": 50_000, "comment": "welcome"})])

    reservation = gateway.post(f"/organizations/{org}/credits/reservations", {
        "amount": 2_000, "job_id": "job-audit", "job_type": "segmentation"}, founder.token,
        headers={"Idempotency-Key": uuid.uuid4().hex})
    assert reservation.status_code == 201, reservation.text
    reservation_id = reservation.json()["entry"]["id"]
    step("reservation", [("credits.reserved", me, reservation_id,
                          {"amount": -2_000, "job_id": "job-audit", "balance": 48_000})])
    assert gateway.post(f"/organizations/{org}/credits/reservations/{reservation_id}/settle",
                        {"outcome": "succeeded"}, su["token"]).status_code == 200
    step("settlement", [("credits.settled", person(su["id"], True), reservation_id,
                         {"outcome": "succeeded", "credits": 2_000, "job_id": "job-audit"})])

    assert gateway.post(f"/organizations/{org}/ownership", {"user_id": ada_id}, founder.token).status_code == 200
    step("transfer", [("ownership.transferred", me, ada_id, {"from_user_id": founder.user_id, "to_user_id": ada_id})])

    # the log as a whole: exactly the steps, in order, verified; nothing secret in it
    ada_token = gateway.post("/auth/login", {"email": admin_email, "password": PASSWORD,
                                             "organization_id": org}).json()["access_token"]
    whole = list(reversed(entries(gateway, org, ada_token)))
    assert [e["id"] for e in whole] == [e["id"] for e in recorded]
    assert [e["sequence"] for e in whole] == list(range(1, len(whole) + 1))
    assert all(e["organization_id"] == org for e in whole)
    text = json.dumps(whole)
    for secret in (token, "accept_url", PASSWORD, "token_hash", "password"):
        assert secret not in text, secret
    verification = gateway.get(f"/organizations/{org}/audit-log/verify", ada_token).json()
    assert verification["ok"] is True and verification["entries"] == len(whole), verification
    assert verification["head_hash"] == whole[-1]["hash"]

    # filters: an action, a kind, an actor, a moment
    assert [e["id"] for e in entries(gateway, org, ada_token, action="invite.created")] == [
        e["id"] for e in reversed(whole) if e["action"] == "invite.created"]
    assert {e["action"] for e in entries(gateway, org, ada_token, action="credits")} == {
        "credits.granted", "credits.reserved", "credits.settled"}
    assert [e["action"] for e in entries(gateway, org, ada_token, actor=su["id"])] == ["credits.settled",
                                                                                      "credits.granted"]
    since = whole[-3]["at"]
    assert {e["id"] for e in entries(gateway, org, ada_token, since=since)} == {
        e["id"] for e in whole if e["at"] >= since}
    two = gateway.get(f"/organizations/{org}/audit-log?limit=2", ada_token).json()
    assert [e["id"] for e in two["items"]] == [e["id"] for e in reversed(whole)][:2] and two["next_cursor"]
    assert_error(gateway.get(f"/organizations/{org}/audit-log?action=nonsense", ada_token), 422, "validation_failed")
    assert_error(gateway.get(f"/organizations/{org}/audit-log?cursor=-1", ada_token), 422, "validation_failed")

    # that organization only: the bystander's log is untouched and the journey's is not theirs to read
    assert entries(gateway, bystander.org_id, bystander.token) == bystander_log
    assert_error(gateway.get(f"/organizations/{org}/audit-log", bystander.token), 403, "wrong_organization")
    assert_error(gateway.get(f"/organizations/{org}/audit-log/verify", bystander.token), 403,
                 "wrong_organization")

    # the deletion request: recorded with its requester, then purged with the log (the count says so)
    accepted = gateway.delete(f"/organizations/{org}", {"confirm_name": renamed}, ada_token)
    assert accepted.status_code == 202, accepted.text
    purged = audit_tap.wait_for("organization_purged", timeout=60, organization_id=org)
    audit_tap.close()
    assert purged["service"] == "audit" and purged["removed"]["entries"] == len(whole) + 1, purged
    assert purged["actor"] == "system"
    requested = tap.wait_for("organization_deletion_requested", organization_id=org)
    assert requested["actor"] == person(ada_id)
    assert_error(gateway.get(f"/organizations/{org}/audit-log", su["token"]), 410, "organization_gone")


def test_duplicated_and_redelivered_events_add_no_entries(gateway, tap, test_stack, owner):
    wait_entries(gateway, owner.org_id, owner.token, 2)
    assert gateway.patch(f"/organizations/{owner.org_id}", {"name": "Twice Lab"}, owner.token).status_code == 200
    event = tap.wait_for("organization_renamed", organization_id=owner.org_id, name="Twice Lab")
    wait_entries(gateway, owner.org_id, owner.token, 3)
    for _ in range(3):  # the same event again: what a redelivery or a publisher's double publish looks like
        publish(test_stack, events.ORGANIZATION_RENAMED, event)
    # and one event more behind them: once it is in, the duplicates before it were handled
    _, _, marker = events.make_event(events.ORGANIZATION_RENAMED, owner.org_id, name="Marker Lab", actor="system")
    publish(test_stack, events.ORGANIZATION_RENAMED, marker)
    wait_entries(gateway, owner.org_id, owner.token, 4)
    queue = "evt-org-organization_renamed--audit.on_organization_renamed"
    path = f'/api/queues/{quote(test_stack.vhost, safe="")}/{queue}'
    wait_until(lambda: (lambda q: q.get("messages") == 0 and q.get("messages_unacknowledged") == 0)(
        stack._management(test_stack, "GET", path) or {}), timeout=30, interval=0.2, what="the audit queue to drain")
    items = entries(gateway, owner.org_id, owner.token)
    assert len(items) == 4, [shape(e) for e in items]
    assert items[0]["details"]["name"] == "Marker Lab" and items[0]["actor"] == "system"
    assert sorted(e["action"] for e in items) == ["member.joined", "organization.created", "organization.renamed",
                                                  "organization.renamed"]
    assert gateway.get(f"/organizations/{owner.org_id}/audit-log/verify", owner.token).json()["ok"] is True


def test_the_service_down_during_a_journey_loses_nothing(gateway, tap, test_stack, su):
    stack.stop_pid_file(stack._pid_file(test_stack, "audit"))
    try:
        owner = gateway.signup(organization_name="Unwatched Lab", name="Una")
        org = owner.org_id
        assert gateway.patch(f"/organizations/{org}", {"name": "Still Unwatched"}, owner.token).status_code == 200
        _, invite_id = invite(gateway, tap, owner, unique_email("late"), "admin")
        assert gateway.request("PUT", f"/organizations/{org}/notifications", owner.token, json={
            "plan_email": None, "new_user_email": None, "ai_job_recipients": "admins"}).status_code == 200
        wait_until(lambda: gateway.get(f"/organizations/{org}/usage", su["token"]).status_code == 200,
                   what="the usage service to know the organization")
        assert gateway.post(f"/organizations/{org}/credits/grants", {"amount": 1000}, su["token"],
                            headers={"Idempotency-Key": uuid.uuid4().hex}).status_code == 201
        assert gateway.get(f"/organizations/{org}/audit-log", owner.token).status_code == 503
    finally:
        stack.start_service(test_stack, "audit")
        stack.wait_services(test_stack, ("audit",))
    items = wait_entries(gateway, org, owner.token, 6, timeout=60)
    me = json.dumps(person(owner.user_id), sort_keys=True)
    assert sorted((e["action"], json.dumps(e["actor"], sort_keys=True)) for e in items) == sorted([
        ("organization.created", me), ("member.joined", me), ("organization.renamed", me), ("invite.created", me),
        ("notification_settings.changed", me),
        ("credits.granted", json.dumps(person(su["id"], True), sort_keys=True))])
    assert next(e for e in items if e["action"] == "invite.created")["target"]["id"] == invite_id
    verification = gateway.get(f"/organizations/{org}/audit-log/verify", owner.token).json()
    assert verification["ok"] is True and verification["entries"] == 6


def test_one_edited_entry_fails_verification_at_that_entry(gateway, owner, audit_db):
    org = owner.org_id
    for index in range(3):
        assert gateway.patch(f"/organizations/{org}", {"name": f"Edited Lab {index}"},
                             owner.token).status_code == 200
    items = wait_entries(gateway, org, owner.token, 5)
    assert gateway.get(f"/organizations/{org}/audit-log/verify", owner.token).json()["ok"] is True
    victim = next(e for e in items if e["details"].get("name") == "Edited Lab 1")
    audit_db.entries.update_one({"_id": victim["id"]}, {"$set": {"details.name": "Innocent Lab"}})
    verification = gateway.get(f"/organizations/{org}/audit-log/verify", owner.token).json()
    assert verification["ok"] is False, verification
    assert verification["broken_at"] == {"sequence": victim["sequence"], "id": victim["id"], "reason": "hash_mismatch"}

    # recomputing the edited entry's own hash does not help: the next entry no longer links to it
    from services.audit import chain
    doc = audit_db.entries.find_one({"_id": victim["id"]})
    audit_db.entries.update_one({"_id": victim["id"]}, {"$set": {"hash": chain.digest(doc)}})
    verification = gateway.get(f"/organizations/{org}/audit-log/verify", owner.token).json()
    assert verification["broken_at"]["sequence"] == victim["sequence"] + 1, verification
    assert verification["broken_at"]["reason"] == "link_mismatch"

    # a removed entry is named as missing
    audit_db.entries.delete_one({"_id": victim["id"]})
    verification = gateway.get(f"/organizations/{org}/audit-log/verify", owner.token).json()
    assert verification["broken_at"] == {"sequence": victim["sequence"], "id": None, "reason": "missing"}


def test_retention_removes_old_entries_and_the_chain_still_verifies(gateway, test_stack, su):
    """Entries older than AUDIT_RETENTION_DAYS (400) go on the next run (every second in tests); the
    chain verifies from the anchor they left."""
    org = str(uuid.uuid4())  # an organization known only from its events: the log needs nothing else
    now = utcnow()
    moments = [now - timedelta(days=500), now - timedelta(days=450), now - timedelta(days=10), now]
    for index, moment in enumerate(moments):
        _, _, body = events.make_event(events.ORGANIZATION_RENAMED, org, name=f"Old Lab {index}", actor="system")
        body["occurred_at"] = isoformat(moment)
        publish(test_stack, events.ORGANIZATION_RENAMED, body)
        # recorded before the next is published (a queue's events may be handled side by side);
        # the head's position counts, as retention may already have removed the entry itself
        wait_until(lambda index=index: gateway.get(f"/organizations/{org}/audit-log/verify", su["token"]).json().get(
            "last_sequence") == index + 1, timeout=30, interval=0.2, what=f"entry {index + 1} recorded")
    items = wait_until(lambda: (lambda found: found if [e["details"]["name"] for e in found] == [
        "Old Lab 3", "Old Lab 2"] else None)(entries(gateway, org, su["token"])), timeout=30, interval=0.2,
        what="the recent entries, and retention to remove the two old ones")
    assert [e["details"]["name"] for e in items] == ["Old Lab 3", "Old Lab 2"]
    verification = gateway.get(f"/organizations/{org}/audit-log/verify", su["token"]).json()
    assert verification["ok"] is True and verification["first_sequence"] == 3 and verification["entries"] == 2


def test_a_retention_run_is_claimed_by_one_replica(test_stack, audit_db):
    """Every replica's timer fires; the insert of the run's claim lets exactly one of them work."""
    store = AuditStore(audit_db)
    run_id = f"retention:test-{uuid.uuid4().hex}"
    assert [store.claim_run(run_id) for _ in range(3)] == [True, False, False]


def test_the_console_shows_the_activity_tab(people):
    """Admins see who did what in the console's Activity tab (axe-checked like every page)."""
    ada = people("activity")
    ada.goto("/")
    ada.signup("Ada Activity", unique_email("activity"), "Active Lab")
    ada.fill("Organization name", "Very Active Lab")
    ada.submit("Save name")
    assert ada.flash() == "The organization is renamed."
    ada.page.get_by_role("link", name="Activity").click()
    rows = ada.page.locator("tr.activity")
    wait_until(lambda: (rows.count() == 3) or ada.page.reload() and False, timeout=30, interval=0.5,
               what="three activity rows")
    text = ada.page.locator("table").inner_text()
    assert "renamed the organization" in text and "created the organization" in text and "joined" in text
    assert "Ada Activity" in text and "Very Active Lab" in text
    # read as a person reads: flags in words, no internal ids, no Python spellings
    assert "is owner: yes" in text and "True" not in text and "False" not in text and "user id" not in text
    ada.check("activity")


def test_a_big_log_is_verified_over_several_calls_that_check_it_all(gateway, owner, audit_db):
    """Each call stops within the service's budget (0 s in tests: one bulk read, ``BULK`` entries) and
    names where to go on; together the calls check every entry, and a change past the first call is
    found by the call that reaches it."""
    from bench import shapes

    org = owner.org_id
    path = f"/organizations/{org}/audit-log/verify"
    head = wait_until(lambda: (lambda v: v if v.get("last_sequence") == 2 else None)(
        gateway.get(path, owner.token).json()), what="the sign-up's entries")
    shapes.insert(audit_db.entries, shapes.audit_log(org, 2_500, first_seq=3, previous=head["head_hash"]))
    shapes.move_audit_top(audit_db, org, 2_502)

    def verify_all():
        calls, cursor = [], None
        while True:
            answer = gateway.get(path + (f"?cursor={cursor}" if cursor else ""), owner.token).json()
            calls.append(answer)
            cursor = answer["next_cursor"]
            if cursor is None or not answer["ok"]:
                return calls
    calls = verify_all()
    assert all(c["ok"] for c in calls), calls
    bulk = AUDIT_BULK
    assert [(c["checked_from"], c["checked_to"]) for c in calls] == [
        (start, min(start + bulk - 1, 2_502)) for start in range(1, 2_503, bulk)]
    assert sum(c["entries"] for c in calls) == 2_502

    victim = audit_db.entries.find_one({"org_id": org, "seq": 2_000})
    audit_db.entries.update_one({"_id": victim["_id"]}, {"$set": {"details.name": "Rewritten"}})
    calls = verify_all()
    assert len(calls) == (2_000 - 1) // bulk + 1 and all(c["ok"] for c in calls[:-1]), calls
    assert calls[-1]["broken_at"] == {"sequence": 2_000, "id": victim["_id"], "reason": "hash_mismatch"}


def test_a_deleted_account_is_forgotten_by_the_log_which_still_verifies(gateway, tap, owner, audit_db):
    """Entries name people by token (services/audit/people.py): after ``DELETE /me`` the audit
    database holds neither the person's id nor their address, the entries show null for them, and
    the chain still verifies (no entry changed)."""
    email = unique_email("leaver")
    token, _ = invite(gateway, tap, owner, email, "member")
    joined = gateway.post("/auth/signup", {"email": email, "password": PASSWORD, "name": "Lee Leaver",
                                           "invite_token": token})
    assert joined.status_code == 201, joined.text
    leaver = joined.json()
    user_id = leaver["user"]["id"]
    items = wait_entries(gateway, owner.org_id, owner.token, 5)  # created, joined, invited, accepted, joined
    assert person(user_id) in [e["actor"] for e in items]
    assert [e["actor"] for e in entries(gateway, owner.org_id, owner.token, actor=user_id)] == [person(user_id)] * 2
    stored = repr(list(audit_db.entries.find({"org_id": owner.org_id})))
    assert user_id not in stored and email not in stored  # entries hold tokens only

    assert gateway.delete("/me", {"password": PASSWORD}, leaver["access_token"]).status_code == 200
    tap.wait_for("account_deleted", user_id=user_id)  # the session's tap has it before later tests look
    wait_until(lambda: not any(user_id in repr(doc) or email in repr(doc)
                               for name in audit_db.list_collection_names() for doc in audit_db[name].find()),
               timeout=30, interval=0.2, what="the audit service to forget the person")
    items = wait_entries(gateway, owner.org_id, owner.token, 6)  # ... and member.left
    assert items[0]["action"] == "member.left" and items[0]["actor"] == {"user_id": None, "is_superuser": False}
    joined_entry = next(e for e in items if e["action"] == "member.joined" and e["details"].get("via_invite"))
    assert joined_entry["target"]["id"] is None and joined_entry["details"]["email"] is None
    assert joined_entry["details"]["name"] is None
    assert gateway.get(f"/organizations/{owner.org_id}/audit-log/verify", owner.token).json()["ok"] is True
    assert entries(gateway, owner.org_id, owner.token, actor=user_id) == []
