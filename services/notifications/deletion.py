"""The notifications side of deleting an organization: confirm to the owner, then purge.

The confirmation mail must leave before the data that addresses it goes, so the purge waits until
that mail is final (sent, or failed after its retries); until then the organization is marked
``purge_pending`` and the dispatcher timer finishes the job.
"""
import re

from common import events, outbox, tombstones
from common.events import utcnow
from common.mongo import delete_in_batches
from services.notifications import settings
from services.notifications.schemas import DeliverySchema

KIND = "organization_deletion_requested"


def purge_when_mailed(store, org_id):
    """Purge now if the confirmation is final; returns the counts, or None if still waiting."""
    if store.unfinished(org_id, KIND):
        store.db.organizations.update_one({"_id": org_id}, {"$set": {"purge_pending": True}}, upsert=True)
        return None
    return purge(store, org_id)


def purge(store, org_id):
    removed = {
        "deliveries": delete_in_batches(store.db.deliveries, {"org_id": org_id}),
        "delivery_attempts": delete_in_batches(store.db.delivery_attempts, {"org_id": org_id}),
        "mail_queue": delete_in_batches(store.db.mail_queue, {"org_id": org_id}),
        "members": delete_in_batches(store.db.members, {"org_id": org_id}),
        "settings": store.db.settings.delete_many({"_id": org_id}).deleted_count,
        "mail_decisions": store.db.mail_decisions.delete_many(
            {"_id": {"$regex": "^%s:" % re.escape(org_id)}}).deleted_count,
        "organizations": store.db.organizations.delete_many({"_id": org_id}).deleted_count,
    }
    tombstones.remember(store.db, org_id, utcnow())
    store.outbox.publish_entry(outbox.pending(events.organization_purged("notifications"), org_id,
                                              service="notifications", removed=removed))
    return removed


def purge_ready(store):
    """Finish purges that waited for their confirmation mail (run after each dispatch round)."""
    for doc in store.db.organizations.find({"purge_pending": True}, {"_id": 1}).limit(100):
        purge_when_mailed(store, doc["_id"])


def export(store, org_id):
    """Settings and the whole delivery log (mail bodies excluded: they may hold invite links)."""
    deliveries = list(store.db.deliveries.find({"org_id": org_id}, {"text": 0, "html": 0}).sort(
        [("created_at", -1), ("_id", -1)]))
    return {"settings": settings.get_settings(store, org_id),
            "deliveries": DeliverySchema(many=True).dump(settings.with_attempts(store, org_id, deliveries, whole_log=True))}
