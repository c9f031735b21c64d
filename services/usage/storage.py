"""Storage reports: per-dataset byte counts, totals kept incrementally.

Datasets live in 8 bucket documents per organization (``<org>:<nn>``, bucket by hash of the dataset
id), so a report of 10,000 datasets is at most 8 writes (per-command overhead dominates on the
local server; 8 buckets of a map each still hold over a million datasets). Reports of one organization are
serialised by a chain like the ledger's: a report first claims position ``n + 1`` in
``storage_reports`` (unique ``(org_id, seq)``; it starts ``applying`` with a lease), applies its
datasets, then finishes the claim with the new totals and a ``storage_updated`` event in the same
write. The totals are the previous report's totals plus this report's differences, so a read never
scans datasets. A claim left ``applying`` past its lease (its writer died) is repaired by the next
report or by the timer: totals recomputed from the buckets once, status ``interrupted``.
"""
import hashlib
import logging
import time
import uuid
from datetime import timedelta

from common import events, outbox
from common.errors import DomainError
from common.events import DEFAULT_PLAN, PlanSchema, isoformat, utcnow
from common.organizations import require_active
from services.usage.credits import refuse_if_purged

log = logging.getLogger(__name__)

BUCKETS = 8
MAX_DATASETS = 10_000
MAX_BYTES = 2 ** 49  # 512 TiB a dataset: even 10,000 of them stay within a 64-bit total (BSON int64)
# An organization's totals, whatever mix of partial reports built them: at most what one complete
# report can state (5.6e18 bytes, 61 % of int64), and a dataset count whose eight bucket documents
# stay far below MongoDB's 16 MB document limit. Partial reports used to add up past int64: the
# totals could not be written, the claim stayed ``applying`` and its repair overflowed again, so
# the organization's storage reporting answered 500 for good.
MAX_TOTAL_BYTES = MAX_DATASETS * MAX_BYTES
MAX_TOTAL_DATASETS = 100_000
CLAIM_WAIT_SECONDS = 2.5


def _hash(dataset_id):
    return hashlib.sha1(dataset_id.encode("utf-8")).hexdigest()


def bucket_of(dataset_id):
    return int(_hash(dataset_id)[:8], 16) % BUCKETS


def dataset_key(dataset_id):
    """Map keys must not contain '.' or start with '$'; dataset ids may."""
    return _hash(dataset_id)[:24]


def validate_report(datasets, complete):
    errors = {}
    if not isinstance(complete, bool):
        errors["complete"] = ["Must be a boolean."]
    if not isinstance(datasets, list):
        errors["datasets"] = ["Must be a list."]
    elif len(datasets) > MAX_DATASETS:
        errors["datasets"] = [f"At most {MAX_DATASETS} datasets per report."]
    else:
        seen = set()
        for index, item in enumerate(datasets):
            dataset_id = item.get("dataset_id") if isinstance(item, dict) else None
            size = item.get("bytes") if isinstance(item, dict) else None
            if not isinstance(dataset_id, str) or not 1 <= len(dataset_id) <= 200:
                errors.setdefault("datasets", {})[index] = {"dataset_id": ["Must be 1-200 characters."]}
            elif dataset_id in seen:
                errors.setdefault("datasets", {})[index] = {"dataset_id": ["Duplicate dataset id."]}
            elif not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BYTES:
                errors.setdefault("datasets", {})[index] = {"bytes": ["Must be a non-negative integer."]}
            else:
                seen.add(dataset_id)
    if errors:
        raise DomainError("validation_failed", "invalid input", errors)


def _totals(doc):
    return {"used_bytes": doc["used_bytes"], "datasets": doc["datasets"]} if doc else {"used_bytes": 0,
                                                                                        "datasets": 0}


def _finish(store, report, status, totals):
    now = utcnow()
    included = ((store.fact("plans", report["org_id"]) or {}).get("plan") or DEFAULT_PLAN).get("included_storage_bytes")
    event = outbox.pending(events.STORAGE_UPDATED, report["org_id"], used_bytes=totals["used_bytes"],
                           datasets=totals["datasets"], sequence=report["seq"], included_bytes=included,
                           exceeded=included is not None and totals["used_bytes"] > included,
                           previous_used_bytes=report["used_bytes"])
    store.finish_storage_report(report["_id"], dict(totals, status=status, applied_at=now), event,
                                before_publish=lambda: refuse_if_purged(store, report["org_id"]))
    return dict(report, status=status, applied_at=now, **totals)


def repair(store, report):
    """Recompute an interrupted report's totals from the buckets (the only full scan, after a crash)."""
    used = count = 0
    for bucket in store.buckets(report["org_id"]):
        for dataset in (bucket.get("datasets") or {}).values():
            used += dataset["bytes"]
            count += 1
    log.warning("storage report %s of %s was interrupted; totals recomputed", report["seq"], report["org_id"])
    return _finish(store, report, "interrupted", {"used_bytes": used, "datasets": count})


def _claim(store, org_id, complete, size):
    deadline = time.monotonic() + CLAIM_WAIT_SECONDS
    while True:
        head = store.storage_head(org_id)
        now = utcnow()
        if head is not None and head["status"] == "applying":
            if head["lease_until"] <= now:
                repair(store, head)
                continue
            if time.monotonic() > deadline:
                raise DomainError("conflict", "another storage report is being applied; try again")
            time.sleep(0.05)
            continue
        claim = dict(_totals(head), _id=uuid.uuid4().hex, org_id=org_id, seq=(head["seq"] if head else 0) + 1,
                     status="applying", complete=complete, reported_datasets=size, created_at=now,
                     lease_until=now + timedelta(seconds=store.storage_lease_seconds))
        if store.insert_storage_report(claim):
            return claim


def _check_totals(totals):
    if totals["used_bytes"] > MAX_TOTAL_BYTES or totals["datasets"] > MAX_TOTAL_DATASETS:
        raise DomainError("validation_failed", "invalid input", {"datasets": [
            f'The organization would hold {totals["datasets"]} datasets of {totals["used_bytes"]} bytes in all; at '
            f'most {MAX_TOTAL_DATASETS} datasets and {MAX_TOTAL_BYTES} bytes.']})


def report(store, org_id, datasets, complete):
    """Apply a report under its claim. The new buckets and totals are computed (and bounded) before
    anything is written: a refused report gives its claim back, so nothing of it stays behind."""
    validate_report(datasets, complete)
    require_active(store, org_id)
    claim = _claim(store, org_id, complete, len(datasets))
    try:
        groups = {}
        for item in datasets:
            groups.setdefault(bucket_of(item["dataset_id"]), {})[dataset_key(item["dataset_id"])] = {
                "id": item["dataset_id"], "bytes": item["bytes"]}
        if complete:  # the report is the whole truth: every bucket is replaced (emptied if absent)
            buckets = {index: groups.get(index, {}) for index in range(BUCKETS)}
            totals = {"used_bytes": sum(item["bytes"] for item in datasets), "datasets": len(datasets)}
        else:
            buckets, totals = {}, _totals(claim)
            for index, changes in groups.items():
                current = dict((store.bucket(org_id, index) or {}).get("datasets") or {})
                for key, dataset in changes.items():
                    previous = current.get(key)
                    totals["used_bytes"] += dataset["bytes"] - (previous["bytes"] if previous else 0)
                    totals["datasets"] += 0 if previous else 1
                    current[key] = dataset
                buckets[index] = current
        _check_totals(totals)
    except BaseException:
        store.drop_storage_claim(claim["_id"])  # nothing written yet: the previous report is the head again
        raise
    for index, content in buckets.items():
        store.put_bucket(org_id, index, content)
    done = _finish(store, claim, "applied", totals)
    return {"used_bytes": done["used_bytes"], "datasets": done["datasets"],
            "last_report_at": isoformat(done["applied_at"]), "sequence": done["seq"]}


def repair_stale(store):
    """Timer: finish claims whose writer died (lease passed)."""
    for stale in store.stale_storage_claims(utcnow()):
        head = store.storage_head(stale["org_id"])
        if head is not None and head["_id"] == stale["_id"]:
            repair(store, stale)


def summary(store, org_id):
    head = store.storage_head(org_id)
    if head is None:
        return {"used_bytes": 0, "datasets": 0, "last_report_at": None}
    last = head.get("applied_at")
    if head["status"] == "applying":  # shows the previous report's totals until this one finishes
        last = None
        if head["seq"] > 1:
            previous = store.storage_report(org_id, head["seq"] - 1)
            last = previous.get("applied_at") if previous else None
    return {"used_bytes": head["used_bytes"], "datasets": head["datasets"], "last_report_at": isoformat(last)}


# -- this service's copy of organization facts (from events) and the usage summary ---------------



_PLAN = PlanSchema()  # one instance: building a marshmallow schema costs more than a dump


def learn_organization(store, org_id, ask_org):
    """An organization created a moment ago may still be on its way here (``organization_created``):
    on a miss, ask the org service (``ask_org(method, *args)``) rather than answer 404 for an
    organization that exists. Its 404 or 410 is then this call's answer too. The event fills in the
    plan and the member count when it arrives; until then the defaults apply. True if learnt now."""
    if store.organization(org_id) is not None or store.was_purged(org_id):
        return False
    overview = ask_org("get_overview", org_id)
    return store.insert_organization(org_id, overview["name"], None)


def on_organization_created(store, event):
    store.insert_organization(event["organization_id"], event["name"], event.get("created_at") or event["occurred_at"])
    if event.get("plan"):
        store.set_fact_if_newer("plans", event["organization_id"], {"plan": event["plan"]}, event["occurred_at"])
    store.set_fact_if_newer("member_counts", event["organization_id"], {"count": 1}, event["occurred_at"])


def on_plan_changed(store, event):
    store.set_fact_if_newer("plans", event["organization_id"], {"plan": event["plan"]}, event["occurred_at"])


def on_member_count(store, event):
    if event.get("member_count") is not None:
        store.set_fact_if_newer("member_counts", event["organization_id"], {"count": event["member_count"]},
                                event["occurred_at"])


def usage(store, org_id, balance):
    require_active(store, org_id)
    plan = (store.fact("plans", org_id) or {}).get("plan") or DEFAULT_PLAN
    members = (store.fact("member_counts", org_id) or {}).get("count", 1)
    storage = summary(store, org_id)
    included = plan.get("included_storage_bytes")
    return {
        "storage": dict(storage, included_bytes=included,
                        exceeded=included is not None and storage["used_bytes"] > included),
        "members": {"count": members, "included": plan.get("included_users")},
        "credits": {"balance": balance},
        "plan": _PLAN.dump(plan),
    }
