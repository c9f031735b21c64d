"""Remembering that an organization was purged without keeping its id.

After a purge a service must refuse late writes for the organization (an event still in flight, a
storage report racing the deletion) instead of resurrecting it -- yet nothing of the organization
may remain. So services keep only a one-way digest of the purged id (``purged_organizations``),
written and read by ``common.mongo.Store`` (``remember_purged``, ``was_purged``, ``purge_lease``).
"""
import hashlib

COLLECTION = "purged_organizations"
LEASES = "purge_leases"


def digest(org_id):
    return hashlib.sha256((f"orgplatform-purged\x00{org_id}").encode()).hexdigest()
