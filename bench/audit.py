"""``audit_verify``: how fast the audit service verifies an untouched 10,000-entry log (issue 19).

An organization is signed up through the API (its first entries come from its events), then its
log is continued to 10,000 entries directly in the audit service's database, in the service's own
shape and hashed by its own rule (``bench/shapes.py``: 10,000 events through the bus would measure
the bus). The figure is entries per second of ``GET .../audit-log/verify`` through the gateway
(median of a few runs; a run follows ``next_cursor`` until the head: each call stops within the
service's time budget), next to the baseline of the same run: reading those 10,000 documents with
one bare ``find`` by organization. Reported, no goal yet.
"""
import os
import statistics
import time

import pymongo

from bench import shapes
from bench.harness import Figure

ENTRIES = 1_000 if os.environ.get("BENCH_SMALL") else 10_000
RUNS = 3


def measure(inst, client):
    owner = client.signup("Audit Bench")
    org_id, token = owner["organization"]["id"], owner["access_token"]
    path = f"/organizations/{org_id}/audit-log/verify"
    # 404 until the audit service has handled the organization's first event (README, "Audit log"):
    # after the deletion part it may still be catching up on the purges' events
    head = client.wait(lambda: (lambda v: v if (v.get("last_sequence") or 0) >= 2 else None)(
        client.call("GET", path, token, expect=(200, 404))), "the sign-up's audit entries")
    mongo = pymongo.MongoClient(inst.mongo_url, tz_aware=True)
    try:
        db = mongo[inst.db_prefix + "audit"]
        first = head["last_sequence"] + 1
        shapes.insert(db.entries, shapes.audit_log(org_id, ENTRIES - head["last_sequence"], first_seq=first,
                                                   previous=head["head_hash"]))
        shapes.move_audit_top(db, org_id, ENTRIES)
        times, calls = [], 0
        for _ in range(RUNS):
            started, checked, cursor = time.perf_counter(), 0, None
            while True:  # a big log is checked over several calls (each within the service's budget)
                result = client.call("GET", path + (f"?cursor={cursor}" if cursor else ""), token)
                calls += 1
                if not result["ok"]:
                    raise RuntimeError(f"the seeded log did not verify: {result!r}")
                checked += result["entries"]
                cursor = result["next_cursor"]
                if cursor is None:
                    break
            times.append(time.perf_counter() - started)
            if checked != ENTRIES:
                raise RuntimeError(f"verified {checked} entries of {ENTRIES}")
        started = time.perf_counter()
        bare = len(list(db.entries.find({"org_id": org_id})))
        bare_seconds = time.perf_counter() - started
    finally:
        mongo.close()
    seconds = statistics.median(times)
    return Figure("audit_verify_entries_per_s", ENTRIES / seconds, None,
                  f"({ENTRIES} entries verified in {seconds:.2f} s through the gateway, {calls / RUNS:.1f} calls a "
                  f"run; a bare find of the {bare} documents: {bare_seconds:.2f} s, {bare / bare_seconds:.0f} "
                  "documents/s)")
