"""Usage service end to end: storage reports, the usage summary, the credit ledger, its roles,
idempotency, concurrency across two service instances, crash recovery and grant expiry."""
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pymongo
import pytest

from stack import stack
from tests.support import assert_error, new_team, wait_until


def known(gateway, org_id, token):
    """The usage service learns organizations from organization_created: wait until it has."""
    return wait_until(lambda: gateway.get(f"/organizations/{org_id}/usage", token).status_code == 200,
                      timeout=15, what=f"usage service to know {org_id}")


@pytest.fixture
def team(gateway, tap, su):
    """The shared team, once the usage service knows both organizations and counts the four members."""
    members = new_team(gateway, tap, f"Usage Lab {uuid.uuid4().hex[:6]}")
    owner = members["owner"]
    known(gateway, owner.org_id, su)
    known(gateway, members["outsider"].org_id, su)
    # the seat count follows member_joined events: let the usage service see all four joins first
    wait_until(lambda: gateway.get(path(members, "/usage"), su).json()["members"]["count"] == 4, timeout=15,
               what="usage to count the team's 4 members")
    return members


def path(team, suffix=""):
    return f'/organizations/{team["owner"].org_id}{suffix}'


def key():
    return uuid.uuid4().hex


def grant(gateway, team, su, amount, **extra):
    response = gateway.post(path(team, "/credits/grants"), dict({"amount": amount, "idempotency_key": key()}, **extra),
                            su)
    assert response.status_code == 201, response.text
    return response.json()


def reserve(gateway, team, token, amount, idempotency_key=None, job_id=None):
    return gateway.post(path(team, "/credits/reservations"),
                        {"amount": amount, "job_id": job_id or "job-" + key()[:8], "job_type": "segmentation",
                         "idempotency_key": idempotency_key or key()}, token)


def full_ledger(gateway, team, token, limit=200):
    items, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = gateway.get(path(team, "/credits" + query), token)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return page["balance"], items


def usage_db(test_stack):
    client = pymongo.MongoClient(test_stack.mongo_url, tz_aware=True)
    return client, client[test_stack.db_prefix + "usage"]


def token_of(team, who):
    return None if who == "anonymous" else team[who].token


# -- roles ------------------------------------------------------------------------------------------

def test_who_may_do_what(gateway, team, su):
    entry = grant(gateway, team, su, 10_000)["entry"]
    reservation_body = lambda: {"amount": 10, "job_id": "j", "job_type": "t", "idempotency_key": key()}  # noqa
    expected = {
        # (method, path, body factory): {who: status}
        ("GET", "/usage", None): {"member": 200, "dataset_manager": 200, "admin": 200, "owner": 200,
                                  "outsider": 403, "anonymous": 401},
        ("GET", "/credits", None): {"admin": 200, "owner": 200, "dataset_manager": 403, "member": 403,
                                    "outsider": 403, "anonymous": 401},
        ("POST", "/credits/grants", lambda: {"amount": 5, "idempotency_key": key()}): {
            "admin": 403, "owner": 403, "member": 403, "outsider": 403, "anonymous": 401},
        ("POST", "/storage-reports", lambda: {"datasets": [], "complete": False}): {
            "admin": 403, "owner": 403, "member": 403, "outsider": 403, "anonymous": 401},
        ("POST", "/credits/reservations", reservation_body): {
            "dataset_manager": 201, "admin": 201, "owner": 201, "member": 403, "outsider": 403, "anonymous": 401},
        ("POST", f'/credits/reservations/{entry["id"]}/settle', lambda: {"outcome": "failed"}): {
            "admin": 403, "owner": 403, "dataset_manager": 403, "outsider": 403, "anonymous": 401},
        ("PUT", "/plan", lambda: {"name": "team", "included_users": 10, "included_storage_bytes": 100,
                                  "paid_until": None}): {"admin": 403, "owner": 403, "anonymous": 401},
    }
    for (method, suffix, body), statuses in expected.items():
        for who, status in statuses.items():
            response = gateway.request(method, path(team, suffix), token_of(team, who),
                                       json=body() if body else None)
            assert response.status_code == status, (method, suffix, who, response.text)
            if status >= 400:
                assert_error(response, status)
    outsider = gateway.get(path(team, "/usage"), team["outsider"].token)
    assert_error(outsider, 403, "wrong_organization")
    # and the superuser may do all of it
    assert gateway.post(path(team, "/storage-reports"), {"datasets": [], "complete": False}, su).status_code == 201
    assert gateway.get(path(team, "/credits"), su).status_code == 200
    assert gateway.get(path(team, "/usage"), su).status_code == 200


def test_unknown_organization_is_404(gateway, su):
    missing = f"/organizations/{uuid.uuid4()}"
    assert_error(gateway.get(missing + "/usage", su), 404, "not_found")
    assert_error(gateway.post(missing + "/credits/grants", {"amount": 5, "idempotency_key": key()}, su), 404)
    assert_error(gateway.post(missing + "/storage-reports", {"datasets": [], "complete": True}, su), 404)


def test_an_organization_whose_creation_event_is_still_on_its_way_is_known_at_once(gateway, su, test_stack):
    """usage learns organizations from organization_created, which may come after the first call
    about one (a grant right after sign-up): it then asks the org service instead of answering 404."""
    owner = gateway.signup(organization_name=f"Fresh Lab {uuid.uuid4().hex[:6]}")
    client, db = usage_db(test_stack)
    with client:
        wait_until(lambda: db.organizations.find_one({"_id": owner.org_id}), what="organization_created in usage")
        db.organizations.delete_one({"_id": owner.org_id})  # as if the event had not arrived yet
        response = gateway.post(f"/organizations/{owner.org_id}/credits/grants",
                                {"amount": 5, "idempotency_key": key()}, su)
        assert response.status_code == 201, response.text
        assert db.organizations.find_one({"_id": owner.org_id})["status"] == "active"
        assert gateway.get(f"/organizations/{owner.org_id}/usage", owner.token).json()["credits"]["balance"] == 5


# -- storage ----------------------------------------------------------------------------------------

def test_storage_reports_upsert_replace_and_exceed_the_plan(gateway, team, su, tap):
    org = team["owner"].org_id
    usage = gateway.get(path(team, "/usage"), team["member"].token).json()
    assert usage == {"storage": {"used_bytes": 0, "included_bytes": None, "datasets": 0, "last_report_at": None,
                                 "exceeded": False},
                     "members": {"count": 4, "included": None}, "credits": {"balance": 0}}

    first = gateway.post(path(team, "/storage-reports"), {"datasets": [
        {"dataset_id": "a", "bytes": 100}, {"dataset_id": "b.2", "bytes": 200}, {"dataset_id": "$c", "bytes": 0}],
        "complete": False}, su)
    assert first.status_code == 201, first.text
    assert first.json()["used_bytes"] == 300 and first.json()["datasets"] == 3
    # upsert: a changes, d is new, the others stay
    second = gateway.post(path(team, "/storage-reports"), {"datasets": [
        {"dataset_id": "a", "bytes": 50}, {"dataset_id": "d", "bytes": 1000}], "complete": False}, su).json()
    assert (second["used_bytes"], second["datasets"]) == (1250, 4)
    event = tap.wait_for("storage_updated", organization_id=org, used_bytes=1250)
    assert event["datasets"] == 4

    plan = {"name": "team", "included_users": 10, "included_storage_bytes": 1000, "paid_until": None}
    assert gateway.request("PUT", path(team, "/plan"), su, json=plan).status_code == 200
    usage = wait_until(lambda: (lambda u: u if u["storage"]["included_bytes"] == 1000 else None)(
        gateway.get(path(team, "/usage"), team["member"].token).json()), what="plan_changed at usage")
    assert usage["storage"]["exceeded"] is True and usage["storage"]["used_bytes"] == 1250
    assert usage["members"] == {"count": 4, "included": 10}
    assert usage["storage"]["last_report_at"] == second["last_report_at"]

    # complete: the report replaces everything; a and d are gone
    third = gateway.post(path(team, "/storage-reports"), {"datasets": [
        {"dataset_id": "b.2", "bytes": 400}, {"dataset_id": "e", "bytes": 1}], "complete": True}, su).json()
    assert (third["used_bytes"], third["datasets"]) == (401, 2)
    usage = gateway.get(path(team, "/usage"), team["member"].token).json()
    assert usage["storage"]["exceeded"] is False and usage["storage"]["datasets"] == 2
    # and an upsert after it builds on the replaced totals
    fourth = gateway.post(path(team, "/storage-reports"), {"datasets": [{"dataset_id": "a", "bytes": 9}],
                                                          "complete": False}, su).json()
    assert (fourth["used_bytes"], fourth["datasets"]) == (410, 3)
    # the overview follows from storage_updated
    wait_until(lambda: gateway.get(path(team), team["member"].token).json()["storage"] == {
        "used_bytes": 410, "included_bytes": 1000, "exceeded": False}, what="overview storage")

    # member count follows member_left
    removed = gateway.delete(path(team, f'/members/{team["member"].user_id}'), token=team["admin"].token)
    assert removed.status_code == 200, removed.text
    wait_until(lambda: gateway.get(path(team, "/usage"), su).json()["members"]["count"] == 3, what="member_left")


def test_storage_report_validation(gateway, team, su):
    url = path(team, "/storage-reports")
    bad = [
        {"datasets": [{"dataset_id": "a", "bytes": -1}], "complete": False},
        {"datasets": [{"dataset_id": "a", "bytes": 1.5}], "complete": False},
        {"datasets": [{"dataset_id": "a", "bytes": "1"}], "complete": False},
        {"datasets": [{"dataset_id": "a", "bytes": 1}, {"dataset_id": "a", "bytes": 2}], "complete": False},
        {"datasets": [{"dataset_id": "", "bytes": 1}], "complete": False},
        {"datasets": [{"dataset_id": f"x{i}", "bytes": 1} for i in range(10_001)], "complete": True},
        {"datasets": []},
    ]
    for body in bad:
        error = assert_error(gateway.post(url, body, su), 422, "validation_failed")
        assert error["details"], body
    assert gateway.get(path(team, "/usage"), su).json()["storage"]["datasets"] == 0


def test_a_report_of_ten_thousand_datasets(gateway, team, su):
    datasets = [{"dataset_id": f"ds-{i:05d}", "bytes": i} for i in range(10_000)]
    response = gateway.post(path(team, "/storage-reports"), {"datasets": datasets, "complete": True}, su, timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["used_bytes"] == sum(range(10_000)) and response.json()["datasets"] == 10_000
    update = gateway.post(path(team, "/storage-reports"), {"datasets": datasets[:5000], "complete": True}, su,
                          timeout=30).json()
    assert (update["used_bytes"], update["datasets"]) == (sum(range(5000)), 5000)


def test_concurrent_storage_reports_add_up(gateway, owner, su):
    """Two reporters at once (disjoint datasets): the totals are the sum of both, nothing lost."""
    known(gateway, owner.org_id, su)
    url = f"/organizations/{owner.org_id}/storage-reports"
    answers = {"a": [], "b": []}

    def reporter(label):
        for n in range(8):
            body = {"datasets": [{"dataset_id": f"{label}-{n}-{i}", "bytes": 1000 * n + i} for i in range(3)],
                    "complete": False}
            # 409 is the documented answer while another report is being applied: try again
            answers[label].append(wait_until(lambda body=body: (lambda r: r if r.status_code != 409 else None)(
                gateway.post(url, body, su)), timeout=30, what=f"report {label}-{n} accepted"))
    threads = [threading.Thread(target=reporter, args=(label,)) for label in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    responses = answers["a"] + answers["b"]
    assert [r.status_code for r in responses] == [201] * 16, [r.text for r in responses]
    # each report took its own position in the organization's chain of reports
    assert sorted(r.json()["sequence"] for r in responses) == list(range(1, 17))
    expected = 2 * sum(1000 * n + i for n in range(8) for i in range(3))
    storage = gateway.get(f"/organizations/{owner.org_id}/usage", owner.token).json()["storage"]
    assert (storage["used_bytes"], storage["datasets"]) == (expected, 48)
    last = max(responses, key=lambda r: r.json()["sequence"]).json()
    assert (last["used_bytes"], last["datasets"]) == (expected, 48)


# -- plans (org service) ------------------------------------------------------------------------------

def user_id_of(gateway, token):
    return gateway.get("/me", token).json()["user"]["id"]


def test_plan_changes_announce_old_and_new_plan_and_are_kept_with_who_and_when(gateway, owner, su, tap):
    org = owner.org_id
    operator = user_id_of(gateway, su)
    custom = {"name": "custom", "included_users": None, "included_storage_bytes": None, "paid_until": None}
    team_plan = {"name": "team", "included_users": 10, "included_storage_bytes": 10 ** 12,
                 "paid_until": "2031-05-01T00:00:00.000Z"}
    power = {"name": "power", "included_users": None, "included_storage_bytes": 5 * 10 ** 12, "paid_until": None}
    before = datetime.now(UTC)
    for plan in (team_plan, power):
        response = gateway.request("PUT", f"/organizations/{org}/plan", su, json=plan)
        assert response.status_code == 200, response.text
        assert response.json()["plan"] == plan
    after = datetime.now(UTC)

    first = tap.wait_for("plan_changed", organization_id=org, plan=team_plan)
    assert first["old_plan"] == custom  # every organization starts on the unlimited custom plan
    second = tap.wait_for("plan_changed", organization_id=org, plan=power)
    assert second["old_plan"] == team_plan

    # every service learns the organization from organization_created before it can export its part
    export = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
        gateway.get(f"/organizations/{org}/export", owner.token)), timeout=15, what="the export")
    history = export.json()["org"]["plan_history"]
    assert [(h["plan"], h["previous"], h["by"]) for h in history] == [
        (team_plan, custom, operator), (power, team_plan, operator)]
    moments = [datetime.fromisoformat(h["at"].replace("Z", "+00:00")) for h in history]
    assert before - timedelta(seconds=1) <= moments[0] <= moments[1] <= after + timedelta(seconds=1)


def test_plan_validation(gateway, owner, su):
    url = f"/organizations/{owner.org_id}/plan"
    valid = {"name": "team", "included_users": 5, "included_storage_bytes": 100, "paid_until": None}
    for field, value in (("name", "enterprise"), ("name", "Team"), ("included_users", -1),
                         ("included_storage_bytes", -1), ("included_users", 2.5), ("paid_until", "next year")):
        error = assert_error(gateway.request("PUT", url, su, json=dict(valid, **{field: value})), 422,
                             "validation_failed")
        assert field in error["details"], (field, value, error)
    error = assert_error(gateway.request("PUT", url, su, json={"name": "team"}), 422, "validation_failed")
    assert {"included_users", "included_storage_bytes", "paid_until"} <= set(error["details"])
    # nothing of it was applied
    assert gateway.get(f"/organizations/{owner.org_id}", owner.token).json()["plan"]["name"] == "custom"


# -- credits ----------------------------------------------------------------------------------------

def test_grants_reservations_settlements_and_idempotency(gateway, team, su, tap):
    org = team["owner"].org_id
    manager = team["dataset_manager"]
    granted = gateway.post(path(team, "/credits/grants"), {"amount": 5000, "comment": "welcome",
                                                           "idempotency_key": "grant-1"}, su)
    assert granted.status_code == 201 and "Idempotent-Replayed" not in granted.headers
    again = gateway.post(path(team, "/credits/grants"), {"amount": 5000, "comment": "welcome",
                                                         "idempotency_key": "grant-1"}, su)
    assert again.status_code == 201 and again.json() == granted.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert_error(gateway.post(path(team, "/credits/grants"), {"amount": 6000, "idempotency_key": "grant-1"}, su),
                 409, "conflict")
    entry = granted.json()["entry"]
    assert (entry["kind"], entry["amount"], entry["balance_after"], entry["actor"], entry["comment"]) == (
        "grant", 5000, 5000, granted.json()["entry"]["actor"], "welcome")

    first = reserve(gateway, team, manager.token, 3000, "res-1", job_id="job-1")
    assert first.status_code == 201, first.text
    reservation = first.json()["entry"]
    assert (reservation["kind"], reservation["amount"], reservation["balance_after"], reservation["actor"],
            reservation["reference"]) == ("reservation", -3000, 2000, manager.user_id, "job-1")
    assert reserve(gateway, team, manager.token, 3000, "res-1", job_id="job-1").json() == first.json()
    assert_error(reserve(gateway, team, manager.token, 2999, "res-1", job_id="job-1"), 409, "conflict")
    # the key space is shared by every kind of write of the organization
    assert_error(gateway.post(path(team, "/credits/grants"), {"amount": 1, "idempotency_key": "res-1"}, su), 409)

    refused = reserve(gateway, team, manager.token, 2001)
    assert_error(refused, 402, "insufficient_credits")
    second = reserve(gateway, team, team["admin"].token, 2000, job_id="job-2")
    assert second.status_code == 201 and second.json()["balance"] == 0

    settle = lambda rid, outcome: gateway.post(path(team, f"/credits/reservations/{rid}/settle"),  # noqa
                                               {"outcome": outcome}, su)
    ok = settle(reservation["id"], "succeeded")
    assert ok.status_code == 200, ok.text
    assert (ok.json()["entry"]["kind"], ok.json()["entry"]["amount"], ok.json()["balance"]) == ("settlement", 0, 0)
    assert settle(reservation["id"], "succeeded").json() == ok.json()
    assert_error(settle(reservation["id"], "failed"), 409, "conflict")
    completed = tap.wait_for("ai_job_completed", organization_id=org, job_id="job-1")
    assert completed == dict(completed, job_type="segmentation", initiator_user_id=manager.user_id,
                             outcome="succeeded", credits=3000)

    failed = settle(second.json()["entry"]["id"], "failed")
    assert (failed.json()["entry"]["kind"], failed.json()["entry"]["amount"], failed.json()["balance"]) == (
        "refund", 2000, 2000)
    tap.wait_for("ai_job_completed", organization_id=org, job_id="job-2", outcome="failed", credits=2000,
                 initiator_user_id=team["admin"].user_id)
    assert_error(settle("no-such-reservation", "failed"), 404, "not_found")
    assert_error(settle(entry["id"], "failed"), 404, "not_found")  # a grant is not a reservation
    assert_error(gateway.post(path(team, f'/credits/reservations/{reservation["id"]}/settle'),
                              {"outcome": "maybe"}, su), 422)

    balance, items = full_ledger(gateway, team, team["admin"].token)
    assert balance == 2000 == sum(item["amount"] for item in items)
    assert [item["kind"] for item in items] == ["refund", "settlement", "reservation", "reservation", "grant"]
    assert [item["sequence"] for item in items] == [5, 4, 3, 2, 1]
    assert all(item["balance_after"] >= 0 for item in items)
    tap.wait_for("credits_changed", organization_id=org, balance=2000)
    wait_until(lambda: gateway.get(path(team), team["member"].token).json()["credits"] == {"balance": 2000},
               what="overview credits")
    assert gateway.get(path(team, "/usage"), team["member"].token).json()["credits"] == {"balance": 2000}


def test_credit_validation_and_pagination(gateway, team, su):
    grants = path(team, "/credits/grants")
    for body in ({"amount": 0, "idempotency_key": key()}, {"amount": -5, "idempotency_key": key()},
                 {"amount": 1.5, "idempotency_key": key()}, {"amount": 5},
                 {"amount": 5, "idempotency_key": key(), "expires_at": "2001-01-01T00:00:00Z"},
                 {"amount": 5, "idempotency_key": key(), "expires_at": "tomorrow"}):
        assert_error(gateway.post(grants, body, su), 422, "validation_failed")
    assert_error(gateway.post(path(team, "/credits/reservations"), {"amount": 5, "job_id": "j",
                                                                    "idempotency_key": key()},
                              team["admin"].token), 422)
    for index in range(5):
        grant(gateway, team, su, 100 + index)
    first = gateway.get(path(team, "/credits?limit=2"), team["admin"].token).json()
    assert [item["amount"] for item in first["items"]] == [104, 103] and first["balance"] == 510
    second = gateway.get(path(team, f'/credits?limit=2&cursor={first["next_cursor"]}'), team["admin"].token).json()
    assert [item["amount"] for item in second["items"]] == [102, 101]
    third = gateway.get(path(team, f'/credits?limit=2&cursor={second["next_cursor"]}'), team["admin"].token).json()
    assert [item["amount"] for item in third["items"]] == [100] and third["next_cursor"] is None
    assert_error(gateway.get(path(team, "/credits?limit=0"), team["admin"].token), 422)


# -- concurrency, crash, expiry -----------------------------------------------------------------------

def rpc_channels(inst, service):
    """The AMQP channel of each process consuming ``service``'s RPC queue (management API). A busy
    broker may answer without the details yet, or know a consumer before its channel
    (``channel_details`` still an empty list): those are left out, the caller waits for both."""
    queue = stack._management(inst, "GET", f'/api/queues/{quote(inst.vhost, safe="")}/rpc-{service}') or {}
    return [consumer["channel_details"]["name"] for consumer in queue.get("consumer_details") or []
            if isinstance(consumer.get("channel_details"), dict) and consumer["channel_details"].get("name")]


def delivered(inst, channel):
    """Messages the broker delivered on ``channel`` so far (its statistics lag a few seconds)."""
    stats = stack._management(inst, "GET", f'/api/channels/{quote(channel, safe="")}').get("message_stats") or {}
    return stats.get("deliver_get", 0)


def test_fifty_concurrent_reservations_on_two_instances(gateway, team, su, test_stack):
    pid_file = stack.start_replica(test_stack, "usage", "usage-2")
    try:
        grant(gateway, team, su, 17 * 1000)
        # the queue's consumer details come from the broker's statistics, a few seconds behind
        channels = wait_until(lambda: (lambda c: c if len(c) == 2 else None)(rpc_channels(test_stack, "usage")),
                              timeout=20, interval=0.5, what="both usage instances in the queue's consumer details")
        served_before = {channel: delivered(test_stack, channel) for channel in channels}
        keys = [key() for _ in range(50)]
        token = team["dataset_manager"].token

        def run_all():
            results = {}

            def one(idempotency_key):
                results[idempotency_key] = reserve(gateway, team, token, 1000, idempotency_key,
                                                   job_id="job-" + idempotency_key[:8])
            threads = [threading.Thread(target=one, args=(k,)) for k in keys]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return results

        first = run_all()
        statuses = sorted(response.status_code for response in first.values())
        assert statuses.count(201) == 17 and statuses.count(402) == 33, [r.text for r in first.values()
                                                                         if r.status_code not in (201, 402)]
        balance, items = full_ledger(gateway, team, team["admin"].token)
        assert balance == 0 == sum(item["amount"] for item in items)
        assert len([item for item in items if item["kind"] == "reservation"]) == 17
        assert sorted(item["sequence"] for item in items) == list(range(1, 19))  # one unbroken chain
        assert all(item["balance_after"] >= 0 for item in items)

        second = run_all()  # the same keys again: the same answers, nothing written
        for idempotency_key in keys:
            assert second[idempotency_key].status_code == first[idempotency_key].status_code
            if first[idempotency_key].status_code == 201:
                assert second[idempotency_key].json() == first[idempotency_key].json()
        assert full_ledger(gateway, team, team["admin"].token) == (balance, items)

        # both instances served: the broker handed each of them a good share of the 100 calls
        def served():
            counts = {channel: delivered(test_stack, channel) - served_before[channel] for channel in channels}
            return counts if sum(counts.values()) >= 100 else None
        counts = wait_until(served, timeout=30, interval=0.5, what="the broker's delivery statistics")
        assert all(count >= 10 for count in counts.values()), counts
    finally:
        stack.stop_pid_file(pid_file)
    wait_until(lambda: gateway.get(path(team), team["member"].token).json()["credits"]["balance"] == 0,
               what="overview balance 0")


def test_crash_after_the_ledger_write_is_repaired(gateway, team, su, test_stack):
    inst = test_stack
    grant(gateway, team, su, 5000)
    wait_until(lambda: gateway.get(path(team), su).json()["credits"]["balance"] == 5000, what="overview 5000")
    crash_pid = os.path.join(inst.run_dir, "usage-crash.pid")
    stack.stop_pid_file(os.path.join(inst.run_dir, "usage.pid"))
    env = dict(inst.service_env("usage"), USAGE_FAULT_CRASH_AFTER_LEDGER="1", USAGE_REPAIR_SECONDS="3600")
    stack.spawn("usage-crash", stack.service_argv("usage"), inst.run_dir, inst.log_dir, env)
    client, db = usage_db(inst)
    try:
        wait_until(lambda: gateway.get(path(team, "/usage"), su).status_code == 200, timeout=30,
                   what="the crashing instance to serve")
        crashed = reserve(gateway, team, team["dataset_manager"].token, 1500, "crash-key", job_id="job-crash")
        assert_error(crashed, 503, "service_unavailable")
        crashed_pid = stack.read_pid(crash_pid)
        # _group_alive also reaps the exited child (a zombie still answers kill(pid, 0))
        wait_until(lambda: crashed_pid is None or not stack._group_alive(crashed_pid), what="the instance to die")
        entry = db.ledger.find_one({"org_id": team["owner"].org_id, "idempotency_key": "crash-key"})
        assert entry is not None and entry["balance_after"] == 3500
        assert entry["_outbox_n"] == 1, "it died before publishing credits_changed"
        assert gateway.get(path(team), su).json()["credits"]["balance"] == 5000

        stack.up(inst, quiet=True)  # the normal instance again: its sweep publishes what the dead one left
        wait_until(lambda: db.ledger.find_one({"_id": entry["_id"]})["_outbox_n"] == 0, timeout=20,
                   what="the sweep to publish")
        wait_until(lambda: gateway.get(path(team), su).json()["credits"]["balance"] == 3500, timeout=20,
                   what="overview to agree with the ledger")
        balance, items = full_ledger(gateway, team, team["admin"].token)
        assert balance == 3500 == sum(item["amount"] for item in items)
        retried = reserve(gateway, team, team["dataset_manager"].token, 1500, "crash-key", job_id="job-crash")
        assert retried.status_code == 201 and retried.json()["entry"]["id"] == entry["_id"]
        assert retried.json()["balance"] == 3500
        assert full_ledger(gateway, team, team["admin"].token)[0] == 3500
    finally:
        client.close()
        stack.stop_pid_file(crash_pid)
        stack.up(inst, quiet=True)


def test_an_expiring_grant_revokes_exactly_its_unspent_part(gateway, team, su, tap):
    expires = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    expiring = grant(gateway, team, su, 10_000, expires_at=expires, comment="trial")["entry"]
    assert expiring["expires_at"]
    grant(gateway, team, su, 5000)  # never expires
    spent = reserve(gateway, team, team["dataset_manager"].token, 3000, job_id="job-exp")
    assert spent.status_code == 201 and spent.json()["balance"] == 12_000

    def expiry_entry():
        return next((item for item in full_ledger(gateway, team, team["admin"].token)[1]
                     if item["kind"] == "expiry"), None)
    entry = wait_until(expiry_entry, timeout=20, what="the expiry entry")
    # the reservation was taken from the expiring grant first: 7000 of it were left
    assert (entry["amount"], entry["reference"], entry["actor"], entry["balance_after"]) == (
        -7000, expiring["id"], None, 5000)
    # a refund after the grant expired goes to the general balance, not back to the dead grant
    refund = gateway.post(path(team, f'/credits/reservations/{spent.json()["entry"]["id"]}/settle'),
                          {"outcome": "failed"}, su)
    assert refund.json()["balance"] == 8000
    balance, items = full_ledger(gateway, team, team["admin"].token)
    assert balance == 8000 == sum(item["amount"] for item in items)
    assert len([item for item in items if item["kind"] == "expiry"]) == 1
    tap.wait_for("credits_changed", organization_id=team["owner"].org_id, balance=5000)


def test_eight_writers_across_ledger_pages_lose_nothing_and_never_overdraw(gateway, team, su):
    """8 writers append to one organization's ledger at once, past several page keys (32 entries
    each, common/pages.py): the chain stays unbroken, no reservation overdraws, and reading it page
    by page (a small limit, so every page boundary is crossed by a cursor) sees every entry once."""
    grant(gateway, team, su, 100 * 1000)
    token = team["dataset_manager"].token
    results = []

    def writer(index):
        for n in range(15):  # 120 attempts for 100 credits: the last 20 must be refused
            results.append(reserve(gateway, team, token, 1000, job_id=f"w{index}-{n}").status_code)
    threads = [threading.Thread(target=writer, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results).count(201) == 100 and results.count(402) == 20, sorted(results)
    for limit in (7, 32, 200):
        balance, items = full_ledger(gateway, team, team["admin"].token, limit=limit)
        assert balance == 0 == sum(item["amount"] for item in items)
        assert [item["sequence"] for item in items] == list(range(101, 0, -1))  # newest first, no gap
        assert all(item["balance_after"] >= 0 for item in items)
