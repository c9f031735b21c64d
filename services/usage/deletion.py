"""The usage side of deleting an organization: purge everything, remember only a digest."""
from common import purge as purge_protocol
from common.organizations import require_active
from services.usage import credits, storage


def purge(store, org_id):
    """The purge protocol (``common.purge``) with usage's delete step (``UsageStore.purge_organization``).
    From then on writes for the organization are refused (404), never resurrected."""
    return purge_protocol.purge(store, "usage", org_id)


def export(store, org_id):
    """The storage report (every dataset), the whole credit ledger and the reservations."""
    require_active(store, org_id)
    datasets = sorted((item for bucket in store.buckets(org_id) for item in bucket["datasets"].values()),
                      key=lambda item: item["id"])
    ledger = [credits.present(entry) for entry in store.ledger_entries(org_id)]
    return {"storage": dict(storage.summary(store, org_id), datasets_report=datasets),
            "credits": {"balance": credits.balance(store, org_id), "ledger": ledger,
                        "reservations": [entry for entry in ledger if entry["kind"] == "reservation"]}}
