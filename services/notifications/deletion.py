"""The notifications side of deleting an organization: confirm to the owner, then purge.

The confirmation mail must leave before the data that addresses it goes, so the purge waits until
that mail is final (sent, or failed after its retries); until then the organization is marked
``purge_pending`` and the dispatcher timer finishes the job.
"""
import re

from common import events, metrics, outbox, tombstones
from common.addresses import normalize_address, single_line
from common.errors import DomainError
from common.events import utcnow
from common.mongo import purge_delete
from services.notifications import dispatch, settings
from services.notifications.schemas import DeliverySchema

KIND = "organization_deletion_requested"


#: the completion mail: its queue and log entries name the organization by digest only, and its log
#: entry and attempts are deleted once it is final (nothing of the organization may remain)
COMPLETED_KIND = dispatch.EPHEMERAL_KINDS[0]


def gone():
    return DomainError("organization_gone", "organization is deleted or being deleted")


def require_live(store, org_id, ask_org):
    """410 once the organization is being deleted (or purged here), 404 if it never existed.

    An organization this service has not heard of yet (its ``organization_created`` may still be on
    the way) is asked of the org service, whose 404 or 410 is then the answer; nothing is recorded."""
    if store.was_purged(org_id):
        raise gone()
    doc = store.organization(org_id)
    if doc is not None and doc.get("status") == "deleting":
        raise gone()
    if doc is None:
        ask_org("get_overview", org_id)
    return doc


def mark_deleting(store, org_id):
    """From the announcement on, settings and the delivery log answer 410 (the purge may wait for
    the confirmation mail). Only marks a known organization: nothing is created for it."""
    store.db.organizations.update_one({"_id": org_id}, {"$set": {"status": "deleting"}})


def purge_when_mailed(store, org_id):
    """Purge now if the confirmation is final; returns the counts, or None if still waiting."""
    if store.unfinished(org_id, KIND):
        store.db.organizations.update_one({"_id": org_id}, {"$set": {"purge_pending": True, "status": "deleting"}},
                                          upsert=True)
        return None
    return purge(store, org_id)


def delete_everything(store, org_id):
    """Every document of the organization, by collection; also what a write racing the purge left."""
    return {
        "deliveries": purge_delete(store.db.deliveries, "org_id", [org_id]),
        "delivery_attempts": purge_delete(store.db.delivery_attempts, "org_id", [org_id]),
        "mail_queue": purge_delete(store.db.mail_queue, "org_id", [org_id]),
        "members": purge_delete(store.db.members, "org_id", [org_id]),
        "settings": purge_delete(store.db.settings, "_id", [org_id]),
        "mail_decisions": store.db.mail_decisions.delete_many(
            {"_id": {"$regex": "^%s:" % re.escape(org_id)}}).deleted_count,
        # a retried mail's claims are named after its delivery, whose key may start with the org id
        "delivery_claims": store.db.delivery_claims.delete_many(
            {"_id": {"$regex": "^%s:" % re.escape(org_id)}}).deleted_count,
        "organizations": purge_delete(store.db.organizations, "_id", [org_id]),
        "delivery_counters": purge_delete(store.db.delivery_counters, "_id", [org_id]),
    }


@metrics.PURGE_SECONDS.labels("notifications").time()
def purge(store, org_id):
    """Remembers the organization (digest) first, then deletes: a write that checked just before
    and landed just after sees the digest when it checks again, and scrubs (``scrub_if_purged``)."""
    tombstones.remember(store.db, org_id, utcnow())
    removed = delete_everything(store, org_id)
    store.outbox.publish_entry(outbox.pending(events.organization_purged("notifications"), org_id,
                                              service="notifications", removed=removed))
    return removed


def scrub_if_purged(store, org_id):
    """After a write for ``org_id`` (a settings change, mail recorded or attempted for one of its
    events): if the organization was purged meanwhile, delete what the purge missed. True if so."""
    if org_id is None or not store.was_purged(org_id):
        return False
    delete_everything(store, org_id)
    return True


def completion_mail(store, event, lease_seconds):
    """The owner's mail when the deletion completed (``organization_deleted``), addressed from the
    event alone: every service, this one included, has forgotten the organization by then."""
    recipients = [address for address in [normalize_address(event.get("owner_email"))] if address]
    context = {"org_name": single_line(event.get("name") or "your organization", limit=300),
               "requested_at": event.get("requested_at") or "", "completed_at": event.get("completed_at") or ""}
    return dispatch.enqueue(store, tombstones.digest(event["organization_id"]), COMPLETED_KIND,
                            "%s:%s" % (event["event_id"], COMPLETED_KIND), recipients, context,
                            lease_seconds=lease_seconds)


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
