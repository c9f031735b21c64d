"""Remembering that an organization was purged without keeping its id.

After a purge a service must refuse late writes for the organization (an event still in flight, a
storage report racing the deletion) instead of resurrecting it -- yet nothing of the organization
may remain. So services keep only a one-way digest of the purged id (``purged_organizations``).
"""
import hashlib

COLLECTION = "purged_organizations"


def digest(org_id):
    return hashlib.sha256(("orgplatform-purged\x00%s" % org_id).encode()).hexdigest()


def remember(db, org_id, at):
    db[COLLECTION].update_one({"_id": digest(org_id)}, {"$setOnInsert": {"purged_at": at}}, upsert=True)


def was_purged(db, org_id):
    return org_id is not None and db[COLLECTION].find_one({"_id": digest(org_id)}, {"_id": 1}) is not None
