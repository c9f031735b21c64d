"""``growth_10x``: does one organization's request get slower as data grows?

Measured for one organization's members page, credits page, deliveries page, overview and a
reservation (median of sequential requests through the gateway), twice over:

- ``other``: the target holds 1,000 members, 2,000 ledger entries and 1,000 deliveries; the rest of
  the database grows from 10,000 memberships, 20,000 ledger entries and 10,000 deliveries (over 10
  other organizations) to ten times that. Figure: latency after / before.
- ``same``: a second organization of the same size is measured with the rest at 10x, then grows to
  ten times its own history (10,000 members, 20,000 entries, 10,000 deliveries). Figure: after / before.

Goal <= 1.5 for each (issue 20): what a page costs must not follow the organization's history
or other organizations' data. Seeding writes the services' own shapes (``bench/shapes.py``).
"""
import os
import time
import uuid

import pymongo

from bench import cpu, shapes
from bench.harness import Figure

SMALL = bool(os.environ.get("BENCH_SMALL"))
TARGET = {"members": 1000, "ledger": 2000, "deliveries": 1000}
OTHERS = {"members": 10_000, "ledger": 20_000, "deliveries": 10_000}
OTHER_ORGS = 10
if SMALL:
    TARGET = {key: value // 10 for key, value in TARGET.items()}
    OTHERS = {key: value // 10 for key, value in OTHERS.items()}
REQUESTS = 25
OPERATIONS = ("members_page", "credits_page", "deliveries_page", "overview", "reservation")


def _seed(dbs, org_id, owner_id, sizes, with_accounts):
    """Add ``sizes`` of history to one organization (its counters moved as the services would)."""
    tag = uuid.uuid4().hex[:8]
    accounts, memberships = shapes.members(dbs["membership"], org_id, sizes["members"], tag, with_accounts)
    first_seq = shapes.ledger_head_seq(dbs["usage"], org_id) + 1  # after the reservations measured so far
    ledger = shapes.ledger(dbs["usage"], org_id, sizes["ledger"], owner_id, first_seq=first_seq)
    shapes.move_ledger_top(dbs["usage"], org_id, first_seq + sizes["ledger"] - 1)
    deliveries, attempts = shapes.deliveries(dbs["notifications"], org_id, sizes["deliveries"], tag)
    return {"membership": [("accounts", accounts), ("memberships", memberships)],
            "usage": [("ledger", ledger)],
            "notifications": [("deliveries", deliveries), ("delivery_attempts", attempts)]}


def _others(dbs, factor):
    """Ballast: organizations nobody reads, only their documents in the same collections."""
    seeds = []
    for _ in range(OTHER_ORGS):
        org_id = str(uuid.uuid4())
        seeds.append(_seed(dbs, org_id, "ballast", {key: value * factor // OTHER_ORGS for key, value in OTHERS.items()},
                           with_accounts=False))
    return seeds


def _latencies(client, org_id, token, requests=REQUESTS, quantile=0.5):
    """Milliseconds per operation at ``quantile`` (the median unless asked), ``requests``
    sequential calls each after a warm-up."""
    base = f"/organizations/{org_id}"
    calls = {
        "members_page": lambda: client.call("GET", base + "/members?limit=50", token),
        "credits_page": lambda: client.call("GET", base + "/credits?limit=50", token),
        "deliveries_page": lambda: client.call("GET", base + "/notifications/deliveries?limit=50", token),
        "overview": lambda: client.call("GET", base, token),
        "reservation": lambda: client.call("POST", base + "/credits/reservations", token, expect=(201,), json={
            "amount": 1, "job_id": "growth-" + uuid.uuid4().hex[:8], "job_type": "bench",
            "idempotency_key": uuid.uuid4().hex}),
    }
    found = {}
    for name in OPERATIONS:
        for _ in range(3):
            calls[name]()
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            calls[name]()
            times.append(time.perf_counter() - started)
        times.sort()
        found[name] = times[min(len(times) - 1, int(quantile * len(times)))] * 1000
    return found


#: what works on after a bulk seed: PostgreSQL's autovacuum and analyze of the grown tables, FerretDB
_SETTLING = ("postgres", "ferretdb", "usage", "membership", "notifications", "org", "audit")


def _settled(inst):
    """Wait until the database and the services are idle after a seed: a page is measured in the
    steady state the data is in, not while PostgreSQL still vacuums and analyzes the 360,000 rows
    just inserted (that halved some pages' speed in the seconds after the 10x seed)."""
    return cpu.settle(inst, labels=_SETTLING, idle=0.05, window=1.0, timeout=180)


def measure(inst, client):
    mongo = pymongo.MongoClient(inst.mongo_url, tz_aware=True)
    dbs = {name: mongo[inst.db_prefix + name] for name in ("membership", "usage", "notifications")}
    targets = [client.signup(f"Growth Bench {n}") for n in (1, 2)]
    for signup in targets:  # every service knows both organizations before seeding
        org_id = signup["organization"]["id"]
        client.wait(lambda org_id=org_id: dbs["usage"].organizations.find_one({"_id": org_id}), "usage to learn the "
                                                                                                "org")
        client.wait(lambda org_id=org_id: dbs["notifications"].organizations.find_one({"_id": org_id}),
                    "notifications to learn the org")
    started = time.perf_counter()
    shapes.insert_all(dbs, [_seed(dbs, t["organization"]["id"], t["user"]["id"], TARGET, True) for t in targets]
                + _others(dbs, 1))
    print(f"  seeded 2 targets and the 1x rest in {time.perf_counter() - started:.0f}s (then idle after "
          f"{_settled(inst):.0f}s)", flush=True)
    first, second = targets
    before_other = _latencies(client, first["organization"]["id"], first["access_token"])
    started = time.perf_counter()
    shapes.insert_all(dbs, _others(dbs, 9))  # the rest grows to 10x
    print(f"  the rest grown to 10x in {time.perf_counter() - started:.0f}s (then idle after {_settled(inst):.0f}s)",
          flush=True)
    after_other = _latencies(client, first["organization"]["id"], first["access_token"])
    before_same = _latencies(client, second["organization"]["id"], second["access_token"])
    started = time.perf_counter()
    shapes.insert_all(dbs, [_seed(dbs, second["organization"]["id"], second["user"]["id"],
                            {key: value * 9 for key, value in TARGET.items()}, True)])
    print(f"  the second target grown to 10x its history in {time.perf_counter() - started:.0f}s (then idle after "
          f"{_settled(inst):.0f}s)", flush=True)
    after_same = _latencies(client, second["organization"]["id"], second["access_token"])
    # capacity: the largest organization with everything else at 10x, 200 calls per operation
    capacity = {q: _latencies(client, second["organization"]["id"], second["access_token"], 200, q)
                for q in (0.5, 0.99)}
    sizes = {name: dbs[db][collection].estimated_document_count() for name, db, collection in (
        ("memberships", "membership", "memberships"), ("ledger entries", "usage", "ledger"),
        ("deliveries", "notifications", "deliveries"))}
    mongo.close()
    organization = ", ".join(f"{TARGET[key] * 10} {key}" for key in TARGET)
    database = ", ".join(f"{count} {name}" for name, count in sizes.items())
    print(f"  capacity: the organization has {organization}; the database {database}", flush=True)
    figures = []
    for kind, before, after in (("other", before_other, after_other), ("same", before_same, after_same)):
        for name in OPERATIONS:
            figures.append(Figure(f"growth_10x_{kind}:{name}", after[name] / before[name],
                                  "<= 1.5" if not SMALL else None,
                                  f"({before[name]:.1f} ms -> {after[name]:.1f} ms)"))
    for name in OPERATIONS:
        figures.append(Figure(f"capacity_p99_ms:{name}", capacity[0.99][name], None,
                              f"(p50 {capacity[0.5][name]:.1f} ms, 200 sequential calls)"))
    return figures
