"""The audit side of deleting an organization: the log goes too; only the hidden tombstone stays.

The log of a deleted organization is not kept: the deletion's promise (CONTRACT, issue 8) is that
nothing of it remains but the org service's tombstone and each service's one-way digest of the id
(``common/tombstones.py``). Admins who need the log keep the export, which includes it.
"""
from common import events, metrics, outbox, tombstones
from common.events import utcnow


@metrics.PURGE_SECONDS.labels("audit").time()
def purge(store, org_id):
    """Idempotent. From now on events for the organization are dropped, never recorded again.

    A request that arrives while another purge of the organization runs is dropped: that purge reports."""
    tombstones.remember(store.db, org_id, utcnow())
    with tombstones.purge_lease(store.db, org_id) as mine:
        if not mine:
            return None
        removed = store.purge_organization(org_id)
        store.outbox.publish_entry(outbox.pending(events.organization_purged("audit"), org_id, service="audit",
                                                  removed=removed))
    return removed


def scrub_if_purged(store, org_id):
    """After an append: a purge that ran meanwhile (it remembers the organization, then deletes) may
    have missed what was just written, so the writer deletes it itself."""
    if store.was_purged(org_id):
        store.purge_organization(org_id)
        return True
    return False
