"""The usage side of deleting an organization: purge everything, remember only a digest."""
from common import events, metrics, outbox, tombstones
from common.events import utcnow
from common.mongo import purge_delete
from services.usage import credits, storage

BY_ORG_FIELD = ("ledger", "grant_expiries", "storage_reports", "dataset_buckets")
BY_ID = ("organizations", "plans", "member_counts")


def delete_everything(store, org_id):
    """Every document of the organization, by collection; also what a write racing the purge left."""
    removed = {name: purge_delete(store.db[name], "org_id", [org_id]) for name in BY_ORG_FIELD}
    removed.update({name: purge_delete(store.db[name], "_id", [org_id]) for name in BY_ID})
    return removed


@metrics.PURGE_SECONDS.labels("usage").time()
def purge(store, org_id):
    """Idempotent. From now on writes for the organization are refused (404), never resurrected.

    A request that arrives while another purge of the organization runs is dropped: that purge reports."""
    tombstones.remember(store.db, org_id, utcnow())
    with tombstones.purge_lease(store.db, org_id) as mine:
        if not mine:
            return None
        removed = delete_everything(store, org_id)
        store.outbox.publish_entry(outbox.pending(events.organization_purged("usage"), org_id, service="usage",
                                                  removed=removed))
    return removed


def export(store, org_id):
    """The storage report (every dataset), the whole credit ledger and the reservations."""
    credits.require_active(store, org_id)
    datasets = sorted((item for bucket in store.buckets(org_id) for item in bucket["datasets"].values()),
                      key=lambda item: item["id"])
    ledger = [credits.present(entry) for entry in store.ledger_entries(org_id)]
    return {"storage": dict(storage.summary(store, org_id), datasets_report=datasets),
            "credits": {"balance": credits.balance(store, org_id), "ledger": ledger,
                        "reservations": [entry for entry in ledger if entry["kind"] == "reservation"]}}
