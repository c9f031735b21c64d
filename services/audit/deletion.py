"""The audit side of deleting an organization: the log goes too; only the hidden tombstone stays.

The log of a deleted organization is not kept: the deletion's promise (CONTRACT, issue 8) is that
nothing of it remains but the org service's tombstone and each service's one-way digest of the id
(``common/tombstones.py``). Admins who need the log keep the export, which includes it.
"""
from common import purge as purge_protocol


def purge(store, org_id):
    """The purge protocol (``common.purge``: tombstone, lease, delete, report) with the audit log's
    delete step (``AuditStore.purge_organization``). From then on events for the organization are
    dropped, never recorded again."""
    return purge_protocol.purge(store, "audit", org_id)


def scrub_if_purged(store, org_id):
    """After an append: a purge that ran meanwhile (it remembers the organization, then deletes) may
    have missed what was just written, so the writer deletes it itself."""
    if store.was_purged(org_id):
        store.purge_organization(org_id)
        return True
    return False
