"""The notifications side of deleting an organization: confirm to the owner, then purge.

The confirmation mail must leave before the data that addresses it goes, so the purge waits until
that mail is final (sent, or failed after its retries); until then the organization is marked
``purge_pending`` and the dispatcher timer finishes the job.
"""
from common import purge as purge_protocol
from common import tombstones
from common.addresses import normalize_address, single_line
from common.errors import gone
from services.notifications import dispatch, preferences
from services.notifications.schemas import DeliverySchema

KIND = "organization_deletion_requested"


#: the completion mail: its queue and log entries name the organization by digest only, and its log
#: entry and attempts are deleted once it is final (nothing of the organization may remain)
COMPLETED_KIND = dispatch.EPHEMERAL_KINDS[0]


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
    store.mark_deleting(org_id)


def purge_when_mailed(store, org_id):
    """Purge now if the confirmation is final; returns the counts, or None if still waiting."""
    if store.unfinished(org_id, KIND):
        store.mark_purge_pending(org_id)
        return None
    return purge(store, org_id)


def purge(store, org_id):
    """The purge protocol (``common.purge``: tombstone, lease, delete, report) with notifications'
    delete step (``NotificationsStore.purge_organization``). A write that checked just before and
    landed just after sees the tombstone when it checks again, and scrubs (``scrub_if_purged``)."""
    return purge_protocol.purge(store, "notifications", org_id)


def scrub_if_purged(store, org_id):
    """After a write for ``org_id`` (a settings change, mail recorded or attempted for one of its
    events): if the organization was purged meanwhile, delete what the purge missed. True if so."""
    if org_id is None or not store.was_purged(org_id):
        return False
    store.purge_organization(org_id)
    return True


def completion_mail(store, event, lease_seconds):
    """The owner's mail when the deletion completed (``organization_deleted``), addressed from the
    event alone: every service, this one included, has forgotten the organization by then."""
    recipients = [address for address in [normalize_address(event.get("owner_email"))] if address]
    context = {"org_name": single_line(event.get("name") or "your organization", limit=300),
               "requested_at": event.get("requested_at") or "", "completed_at": event.get("completed_at") or ""}
    return dispatch.enqueue(store, tombstones.digest(event["organization_id"]), COMPLETED_KIND,
                            f'{event["event_id"]}:{COMPLETED_KIND}', recipients, context,
                            lease_seconds)


def purge_ready(store):
    """Finish purges that waited for their confirmation mail (run after each dispatch round)."""
    for org_id in store.purge_pending_ids(limit=100):
        purge_when_mailed(store, org_id)


def export(store, org_id):
    """Settings and the whole delivery log (mail bodies excluded: they may hold invite links)."""
    deliveries = store.deliveries_for_export(org_id)
    return {"settings": preferences.get_settings(store, org_id),
            "deliveries": DeliverySchema(many=True).dump(
                preferences.with_attempts(store, org_id, deliveries, whole_log=True))}
