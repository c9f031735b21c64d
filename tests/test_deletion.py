"""Deleting an organization: export first, then a purge across every service that leaves nothing.

The proof reads every database of the test stack directly: after deletion no document mentions the
organization's id except the org service's tombstone, and a twin organization is untouched.
"""
import json
import uuid

import pymongo
import pytest

from stack import stack
from tests.support import Mailbox, assert_error, invite, join, unique_email, wait_until


@pytest.fixture(scope="module")
def client(test_stack):
    connection = pymongo.MongoClient(test_stack.mongo_url, tz_aware=True)
    yield connection
    connection.close()


def documents_mentioning(client, test_stack, text):
    """Every document of every database of this stack whose content mentions ``text``."""
    found = []
    for name in client.list_database_names():
        if not name.startswith(test_stack.db_prefix):
            continue
        for collection in client[name].list_collection_names():
            for doc in client[name][collection].find():
                if text in repr(doc):
                    found.append((name, collection, doc))
    return found


def snapshot(client, test_stack, org_id):
    return sorted((db, coll, repr(sorted(doc.items()))) for db, coll, doc in
                  documents_mentioning(client, test_stack, org_id))


def populate(gateway, tap, su, name, shared_member=None):
    """An organization with data in every service: members (one also in another organization),
    pending invites, notification settings and deliveries, a storage report, a ledger with a
    settled and an open reservation."""
    owner = gateway.signup(organization_name=name, name=f"Owner of {name}")
    org = owner.org_id
    admin = join(gateway, tap, owner, "admin")
    manager = join(gateway, tap, owner, "dataset_manager")
    if shared_member is not None:
        token, _ = invite(gateway, tap, owner, shared_member.email)
        assert gateway.post(f"/invites/{token}/accept", token=shared_member.token).status_code == 200
    for _ in range(2):
        invite(gateway, tap, owner, unique_email("pending"))
    assert gateway.request("PUT", f"/organizations/{org}/notifications", owner.token, json={
        "plan_email": f"billing-{uuid.uuid4().hex[:6]}@example.test", "new_user_email": None,
        "ai_job_recipients": "initiator_and_admins"}).status_code == 200
    assert gateway.request("PUT", f"/organizations/{org}/plan", su, json={
        "name": "team", "included_users": 50, "included_storage_bytes": 10 ** 12,
        "paid_until": None}).status_code == 200
    wait_until(lambda: gateway.get(f"/organizations/{org}/usage", su).status_code == 200,
               what="usage service to know the organization")
    assert gateway.post(f"/organizations/{org}/storage-reports", {
        "datasets": [{"dataset_id": f"ds-{i}", "bytes": 1000 * i} for i in range(1, 6)], "complete": True},
        su).status_code in (200, 201)
    assert gateway.post(f"/organizations/{org}/credits/grants", {
        "amount": 100_000, "idempotency_key": uuid.uuid4().hex}, su).status_code == 201
    reservations = []
    for _ in range(2):
        response = gateway.post(f"/organizations/{org}/credits/reservations", {
            "amount": 1000, "job_id": f"job-{uuid.uuid4().hex[:6]}", "job_type": "segmentation",
            "idempotency_key": uuid.uuid4().hex}, manager.token)
        assert response.status_code == 201, response.text
        reservations.append(response.json()["entry"]["id"])
    settled = gateway.post(f"/organizations/{org}/credits/reservations/{reservations[0]}/settle",
                           {"outcome": "succeeded"}, su)
    assert settled.status_code in (200, 201), settled.text
    return {"owner": owner, "admin": admin, "manager": manager, "org": org}


def quiet(gateway, team):
    """Nothing of the organization still moving: every mail final, the overview caught up."""
    def settled():
        page = gateway.get(f'/organizations/{team["org"]}/notifications/deliveries?limit=200',
                           team["owner"].token).json()
        return page["items"] and all(item["status"] != "queued" for item in page["items"])
    wait_until(settled, timeout=30, what="deliveries to settle")
    wait_until(lambda: gateway.get(f'/organizations/{team["org"]}', team["owner"].token).json()
               ["credits"]["balance"] == 98_000, what="overview balance")


def deletion_status(gateway, org_id, token):
    response = gateway.get(f"/organizations/{org_id}/deletion", token)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_export_then_delete_leaves_only_a_tombstone(gateway, tap, su, client, test_stack):
    mailbox = Mailbox(test_stack.mail_dir)
    shared = gateway.signup(organization_name="Home of the shared member", name="Sharon Shared")
    doomed = populate(gateway, tap, su, "Doomed Lab", shared_member=shared)
    twin = populate(gateway, tap, su, "Twin Lab")
    org = doomed["org"]

    # export: everything every service holds, without secrets
    response = gateway.get(f"/organizations/{org}/export", doomed["admin"].token)
    assert response.status_code == 200, response.text
    export = response.json()
    assert export["organization_id"] == org and export["org"]["organization"]["name"] == "Doomed Lab"
    assert [h["plan"]["name"] for h in export["org"]["plan_history"]] == ["team"]
    assert len(export["membership"]["members"]) == 4
    assert shared.user_id in {m["user_id"] for m in export["membership"]["members"]}
    assert len([i for i in export["membership"]["invites"] if i["status"] == "pending"]) == 2
    assert export["notifications"]["settings"]["ai_job_recipients"] == "initiator_and_admins"
    assert export["notifications"]["deliveries"]
    assert len(export["usage"]["storage"]["datasets_report"]) == 5
    assert len(export["usage"]["credits"]["reservations"]) == 2
    assert {e["kind"] for e in export["usage"]["credits"]["ledger"]} >= {"grant", "reservation", "settlement"}
    # the activity log (issue 19), verified, with the journey's actions
    assert export["audit"]["head_hash"] == export["audit"]["entries"][-1]["hash"]
    assert {"organization.created", "member.joined", "invite.created", "plan.changed",
            "credits.granted"} <= {e["action"] for e in export["audit"]["entries"]}
    for secret in ("token_hash", "password_hash", "refresh_hash", "accept_url"):
        assert secret not in response.text
    assert_error(gateway.get(f"/organizations/{org}/export", doomed["manager"].token), 403, "forbidden")

    quiet(gateway, doomed)
    quiet(gateway, twin)
    twin_before = snapshot(client, test_stack, twin["org"])

    # who may delete, and the name check
    path = f"/organizations/{org}"
    assert_error(gateway.delete(path, {"confirm_name": "Doomed Lab"}, doomed["manager"].token), 403, "forbidden")
    assert_error(gateway.delete(path, {"confirm_name": "Doomed Lab"}, doomed["admin"].token), 403, "forbidden")
    assert_error(gateway.delete(path, {"confirm_name": "doomed lab"}, doomed["owner"].token), 422,
                 "validation_failed")
    accepted = gateway.delete(path, {"confirm_name": "Doomed Lab"}, doomed["owner"].token)
    assert accepted.status_code == 202, accepted.text
    # the status link works without a token (the requester's token dies with the request)
    assert accepted.headers["Location"] == accepted.json()["receipt_url"]
    assert accepted.json()["receipt_url"].startswith("/api/v1/deletions/")
    assert accepted.json()["status"] == "deleting"

    # every token of the organization dies at once; superusers see 410 while it runs
    for member in ("owner", "admin", "manager"):
        wait_until(lambda member=member: gateway.get("/me", doomed[member].token).status_code == 401, timeout=1.0,
                   what=f"{member} token revoked")
    status = wait_until(lambda: (lambda s: s if s["status"] == "deleted" else None)(
        deletion_status(gateway, org, su)), timeout=60, what="deletion to complete")
    assert status["services"] == {"org": "purged", "membership": "purged", "notifications": "purged",
                                  "usage": "purged", "audit": "purged"}
    assert status["completed_at"] >= status["requested_at"]
    assert_error(gateway.get(path, su), 410, "organization_gone")  # the tombstone answers

    # the owner was told at the request, before the notifications service forgot them, and again
    # at completion (that mail, addressed from the organization_deleted event, is the last trace)
    mail = mailbox.wait(doomed["owner"].email, contains="is being deleted")
    assert "Doomed Lab" in mail[0].subject
    mailbox.wait(doomed["owner"].email, contains="has been deleted")

    # nothing mentions the organization except the tombstone
    leftovers = wait_until(lambda: (lambda found: found if len(found) == 1 else None)(
        documents_mentioning(client, test_stack, org)), timeout=30, what="only the tombstone to remain")
    assert [(db, coll, doc["_id"]) for db, coll, doc in leftovers] == [
        (test_stack.db_prefix + "org", "organizations", org)], leftovers
    tombstone = leftovers[0][2]
    assert tombstone["status"] == "deleted" and "name" not in tombstone and "plan_history" not in tombstone
    assert "Doomed Lab" not in json.dumps(documents_mentioning(client, test_stack, "Doomed Lab"), default=str)

    # the twin organization is byte-for-byte untouched
    assert snapshot(client, test_stack, twin["org"]) == twin_before

    # accounts only in the deleted organization are gone; the shared member keeps theirs
    for member in ("owner", "admin", "manager"):
        assert_error(gateway.post("/auth/login", {"email": doomed[member].email, "password": doomed[member].password}),
                     401, "invalid_credentials")
    login = gateway.post("/auth/login", {"email": shared.email, "password": shared.password})
    assert login.status_code == 200
    me = gateway.get("/me", login.json()["access_token"]).json()
    assert [o["id"] for o in me["organizations"]] == [shared.org_id]



@pytest.mark.slow
def test_deletion_completes_after_a_stopped_service_returns(gateway, tap, su, client, test_stack):
    owner = gateway.signup(organization_name="Patient Lab")
    org = owner.org_id
    wait_until(lambda: gateway.get(f"/organizations/{org}/usage", su).status_code == 200,
               what="usage service to know the organization")
    stack.stop_pid_file(stack._pid_file(test_stack, "usage"), sig=9)
    accepted = gateway.delete(f"/organizations/{org}", {"confirm_name": "Patient Lab"}, owner.token)
    assert accepted.status_code == 202, accepted.text
    status = wait_until(lambda: (lambda s: s if s["services"]["membership"] == "purged"
                                 and s["services"]["notifications"] == "purged" else None)(
        deletion_status(gateway, org, su)), timeout=30, what="the running services to purge")
    assert status["status"] == "deleting" and status["services"]["usage"] == "pending"

    stack.up(test_stack, quiet=True)  # what `make up` does
    wait_until(lambda: deletion_status(gateway, org, su)["status"] == "deleted", timeout=60,
               what="deletion to complete after usage returned")
    assert [coll for _, coll, _ in documents_mentioning(client, test_stack, org)] == ["organizations"]


def test_deletion_status_is_only_for_requester_owner_and_superusers(gateway, owner, su):
    other = gateway.signup()
    assert_error(gateway.get(f"/organizations/{owner.org_id}/deletion", other.token), 404, "not_found")
    assert_error(gateway.get(f"/organizations/{owner.org_id}/deletion", su), 404, "not_found")  # none yet
    assert_error(gateway.delete(f"/organizations/{owner.org_id}", {"confirm_name": "x"}), 401)


@pytest.mark.slow
def test_an_organization_bigger_than_one_delete_is_purged_completely(gateway, client, test_stack, su):
    """70,000 ledger entries: more than FerretDB can remove in one delete (it binds every matched id
    as a parameter: SQLite refuses more than 32,766, PostgreSQL more than 65,535). On PostgreSQL the
    front deletes them in one SQL statement (``stack/ferretdb/purge.go``), elsewhere the purge works
    in batches. (With 40,000 the PostgreSQL handler's limit went untested and the bench's purge of
    100,000 entries failed.)"""
    owner = gateway.signup(organization_name="Big Lab")
    usage = client[test_stack.db_prefix + "usage"]
    wait_until(lambda: usage.organizations.find_one({"_id": owner.org_id}), what="usage to learn the organization")
    entries = [{"_id": uuid.uuid4().hex, "org_id": owner.org_id, "seq": seq, "kind": "grant", "amount": 1,
                "balance_after": seq, "idempotency_key": f"big-{seq}", "actor": owner.user_id}
               for seq in range(1, 70001)]
    for start in range(0, len(entries), 5000):
        usage.ledger.insert_many(entries[start:start + 5000], ordered=False)

    assert gateway.delete(f"/organizations/{owner.org_id}", {"confirm_name": "Big Lab"},
                          owner.token).status_code == 202
    status = wait_until(lambda: (lambda s: s if s["status"] == "deleted" else None)(
        deletion_status(gateway, owner.org_id, su)), timeout=120, what="the deletion to complete")
    assert status["services"]["usage"] == "purged"
    assert usage.ledger.count_documents({"org_id": owner.org_id}) == 0
