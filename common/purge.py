"""The one purge protocol every service follows when an organization is deleted.

Each service supplies only its delete step (``store.purge_organization(org_id)``, returning counts
per collection); the order around it is the same everywhere and is what makes purges safe:

1. **Remember the tombstone first** (``store.remember_purged``, a one-way digest of the id). A write
   that checked ``was_purged`` just before and lands just after (an event in flight, a settings
   change) checks again after writing and takes itself back (``Store.take_back_if_purged``); had
   the tombstone come after the deletes, such a write would land in a window nobody looks at.
2. **Take the lease** (``store.purge_lease``): a big organization's purge overlaps re-drives and
   redeliveries of its request; only one runs at a time, the others return None (that one reports).
3. **Delete** (the service's ``store.purge_organization``).
4. **Report** ``organization_purged`` with the counts, which the org service collects.

Idempotent: a redelivered or re-driven request deletes nothing twice and reports again.
"""
from common import events, metrics, outbox


def purge(store, service, org_id):
    """Run the protocol for ``service``'s part of ``org_id``; the counts, or None if another purge
    of it holds the lease right now."""
    with metrics.PURGE_SECONDS.labels(service).time():
        store.remember_purged(org_id)
        with store.purge_lease(org_id) as mine:
            if not mine:
                return None
            removed = store.purge_organization(org_id)
            store.outbox.publish_entry(outbox.pending(events.organization_purged(service), org_id,
                                                      service=service, removed=removed))
        return removed
