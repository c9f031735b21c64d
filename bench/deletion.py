"""Figure 4b: deleting a big organization through the API vs. bare ``delete_many`` on the same data.

Two organizations are signed up through the API and then seeded directly (``insert_many``, the
documents' real shapes, into each service's own database): 10,000 members (accounts +
memberships), 10,000 invites, 10,000 storage reports, 100,000 ledger entries and 10,000
deliveries each. One is deleted the real way (owner's ``DELETE`` with ``confirm_name``, then the
superuser polls ``GET .../deletion`` until ``deleted``); the other's data is removed with the
equivalent direct ``delete_many`` calls -- first, while the other organization's data is still there,
which a third organization of the same size then replaces, so both sides delete from collections of
the same size. The figure is the ratio of the two times.
"""
import os
import time
import uuid
from datetime import timedelta

import pymongo

from bench import shapes
from bench.harness import Figure
from common import pages
from common.events import utcnow
from common.mongo import DELETE_BATCH, delete_in_batches

SIZES = {"members": 10_000, "invites": 10_000, "storage_reports": 10_000, "ledger": 100_000, "deliveries": 10_000}
if os.environ.get("BENCH_SMALL"):
    SIZES = {key: value // 10 for key, value in SIZES.items()}


def seed(dbs, org_id, owner_id):
    """The organization's bulk data per database, in the services' shapes (``bench/shapes.py``),
    and the seeded account ids."""
    now = utcnow()
    tag = org_id[:8]
    accounts, memberships = shapes.members(dbs["membership"], org_id, SIZES["members"], tag)
    invites = [{"_id": uuid.uuid4().hex, "org_id": org_id, "email": f"i{index}-{tag}@example.test",
                "role": "member", "token_hash": uuid.uuid4().hex + uuid.uuid4().hex, "status": "pending",
                "invited_by": owner_id, "created_at": now, "expires_at": now + timedelta(days=14)}
               for index in range(SIZES["invites"])]
    reports = [{"_id": uuid.uuid4().hex, "org_id": org_id, "seq": seq, pages.FIELD: pages.key(org_id, seq),
                "status": "applied", "complete": False, "reported_datasets": 1, "created_at": now, "lease_until": now,
                "applied_at": now, "used_bytes": seq * 1000, "datasets": seq, "outcome": "applied"}
               for seq in range(1, SIZES["storage_reports"] + 1)]
    dbs["usage"].organizations.update_one({"_id": org_id}, {"$max": {
        "storage_page": pages.number(SIZES["storage_reports"])}})
    ledger = shapes.ledger(dbs["usage"], org_id, SIZES["ledger"], owner_id)
    shapes.move_ledger_top(dbs["usage"], org_id, SIZES["ledger"])
    deliveries, attempts = shapes.deliveries(dbs["notifications"], org_id, SIZES["deliveries"], tag)
    batches = {"membership": [("accounts", accounts), ("memberships", memberships), ("invites", invites)],
               "usage": [("storage_reports", reports), ("ledger", ledger)],
               "notifications": [("deliveries", deliveries), ("delivery_attempts", attempts)]}
    return batches, [account["_id"] for account in accounts]


def direct_delete(dbs, org_id, account_ids):
    """The floor: the same data removed with plain deletes per collection -- batched like the purges,
    because FerretDB refuses one delete of more than 32,766 documents (``common.mongo.DELETE_BATCH``)."""
    for db, collection in (("membership", "invites"), ("membership", "memberships"), ("usage", "storage_reports"),
                           ("usage", "ledger"), ("notifications", "deliveries"),
                           ("notifications", "delivery_attempts")):
        delete_in_batches(dbs[db][collection], {"org_id": org_id})
    for start in range(0, len(account_ids), DELETE_BATCH):
        dbs["membership"].accounts.delete_many({"_id": {"$in": account_ids[start:start + DELETE_BATCH]}})


def measure(inst, client):
    mongo = pymongo.MongoClient(inst.mongo_url, tz_aware=True)
    dbs = {name: mongo[inst.db_prefix + name] for name in ("membership", "usage", "notifications")}
    superuser = client.superuser_token()
    api_org, floor_org = client.signup("Deletion Bench A"), client.signup("Deletion Bench B")
    for signup in (api_org, floor_org):  # every service knows both organizations before seeding
        org_id = signup["organization"]["id"]
        client.wait(lambda org_id=org_id: dbs["usage"].organizations.find_one({"_id": org_id}), "usage to learn the "
                                                                                                "org")
        client.wait(lambda org_id=org_id: (dbs["notifications"].organizations.find_one({"_id": org_id}) or {})
                    .get("owner_email"),
                    "notifications to learn the org")
    started = time.perf_counter()
    api_batches, _ = seed(dbs, api_org["organization"]["id"], api_org["user"]["id"])
    floor_batches, floor_accounts = seed(dbs, floor_org["organization"]["id"], floor_org["user"]["id"])
    shapes.insert_all(dbs, [api_batches, floor_batches])
    sizes = ", ".join(f"{v} {k}" for k, v in SIZES.items())
    print(f"  seeded 2 x {sizes} in {time.perf_counter() - started:.1f}s", flush=True)

    # The floor first, while the other organization's data is there too: on FerretDB a delete costs
    # the size of the whole collection, so each side must delete from collections of the same size.
    started = time.perf_counter()
    direct_delete(dbs, floor_org["organization"]["id"], floor_accounts)
    floor_seconds = time.perf_counter() - started
    ballast = client.signup("Deletion Bench C")  # takes the floor organization's place
    ballast_batches, _ = seed(dbs, ballast["organization"]["id"], ballast["user"]["id"])
    shapes.insert_all(dbs, [ballast_batches])

    org_id = api_org["organization"]["id"]
    started = time.perf_counter()
    client.call("DELETE", f"/organizations/{org_id}", api_org["access_token"], expect=(202,),
                json={"confirm_name": "Deletion Bench A"})
    # polled twice a second: finer polling would only load the stack it measures
    client.wait(lambda: client.call("GET", f"/organizations/{org_id}/deletion", superuser)["status"] == "deleted",
                "the deletion to complete", timeout=300, interval=0.5)
    api_seconds = time.perf_counter() - started

    left = sum(dbs[db][coll].count_documents({"org_id": org_id}) for db, coll in (
        ("membership", "memberships"), ("membership", "invites"), ("usage", "ledger"),
        ("usage", "storage_reports"), ("notifications", "deliveries")))
    mongo.close()
    if left:
        raise RuntimeError(f"{left} documents of the deleted organization are left")
    return [Figure("delete_vs_delete_many", api_seconds / floor_seconds, "<= 2.0",
                   f"(DELETE -> deleted {api_seconds:.2f}s vs delete_many {floor_seconds:.2f}s)"),
            Figure("purge_seconds", api_seconds, "<= 10" if not os.environ.get("BENCH_SMALL") else None,
                   f"({', '.join(f'{v} {k}' for k, v in SIZES.items())}, DELETE to deleted)")]
