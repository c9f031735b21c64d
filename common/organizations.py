"""The one rule every service applies to the organization a call is about.

Each service keeps its own copy of the organizations it serves (``store.organization``) and the
tombstones of the purged ones (``store.was_purged``); the answer is the same everywhere.
"""
from common.errors import gone, not_found


def require_active(store, org_id):
    """The service's copy of the organization if it is active: 404 for one this service never heard
    of, 410 while it is being deleted and after it was purged (its tombstone answers)."""
    organization = store.organization(org_id)
    if organization is None:
        if store.was_purged(org_id):
            raise gone()
        raise not_found("organization")
    if organization.get("status") != "active":
        raise gone()
    return organization
