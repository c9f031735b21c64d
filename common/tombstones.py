"""Remembering that an organization was purged without keeping its id.

After a purge a service must refuse late writes for the organization (an event still in flight, a
storage report racing the deletion) instead of resurrecting it -- yet nothing of the organization
may remain. So services keep only a one-way digest of the purged id (``purged_organizations``).
"""
import hashlib
from contextlib import contextmanager
from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from common.events import utcnow

COLLECTION = "purged_organizations"
LEASES = "purge_leases"


def digest(org_id):
    return hashlib.sha256(("orgplatform-purged\x00%s" % org_id).encode()).hexdigest()


def remember(db, org_id, at):
    db[COLLECTION].update_one({"_id": digest(org_id)}, {"$setOnInsert": {"purged_at": at}}, upsert=True)


def was_purged(db, org_id):
    return org_id is not None and db[COLLECTION].find_one({"_id": digest(org_id)}, {"_id": 1}) is not None


@contextmanager
def purge_lease(db, org_id, seconds=900):
    """Yields True for the one purge of an organization allowed to run now in this service.

    A slow purge (a big organization) overlaps the re-drives and redeliveries of its request;
    running them all at once multiplies the work. The lease (keyed by the digest, so no id is left
    behind) ends with the purge, or after ``seconds`` if the process died, so a later request
    purges again."""
    key, now = digest(org_id), utcnow()
    try:
        db[LEASES].insert_one({"_id": key, "until": now + timedelta(seconds=seconds)})
    except DuplicateKeyError:
        taken = db[LEASES].find_one_and_update({"_id": key, "until": {"$lt": now}},
                                               {"$set": {"until": now + timedelta(seconds=seconds)}})
        if taken is None:
            yield False
            return
    try:
        yield True
    finally:
        db[LEASES].delete_one({"_id": key})
