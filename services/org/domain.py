"""Organization rules: names, creation, renaming, the overview read model."""
import re

from common import events, outbox
from common.errors import DomainError, not_found
from common.events import isoformat, utcnow
from services.org.schemas import OwnerSchema, PlanSchema

DEFAULT_PLAN = {"name": "custom", "included_users": None, "included_storage_bytes": None,
                "paid_until": None}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_name(name):
    """1-100 characters after trimming, no control characters (names end up in mail headers)."""
    if not isinstance(name, str):
        raise DomainError("validation_failed", "invalid input", {"name": ["Not a valid string."]})
    name = name.strip()
    if not 1 <= len(name) <= 100 or _CONTROL.search(name):
        raise DomainError("validation_failed", "invalid input",
                          {"name": ["Must be 1-100 characters without control characters."]})
    return name


def _live(store, org_id):
    doc = store.get_organization(org_id)
    if doc is None or doc.get("status") == "deleted":
        raise not_found("organization")
    if doc.get("status") == "deleting":
        raise DomainError("organization_gone", "organization is being deleted")
    return doc


def create_organization(store, org_id, name, owner):
    """Idempotent by ``org_id`` so a caller may retry after a timeout."""
    name = clean_name(name)
    now = utcnow()
    plan = dict(DEFAULT_PLAN)
    doc = {"_id": org_id, "name": name, "status": "active", "created_at": now, "updated_at": now,
           "owner": {"id": owner["id"], "name": owner["name"], "email": owner["email"]},
           "plan": plan, "members": {"count": 1}, "storage": {"used_bytes": 0, "datasets": 0},
           "credits": {"balance": 0}}
    event = outbox.pending(events.ORGANIZATION_CREATED, org_id, name=name, owner_user_id=owner["id"],
                           owner_email=owner["email"], owner_name=owner["name"],
                           plan=PlanSchema().dump(plan), created_at=isoformat(now))
    if not store.insert_organization(doc, event):
        existing = store.get_organization(org_id)
        if existing["owner"]["id"] != owner["id"]:
            raise DomainError("conflict", "organization id already in use")
        doc = existing
    return overview(doc)


def rename(store, org_id, name):
    name = clean_name(name)
    _live(store, org_id)
    event = outbox.pending(events.ORGANIZATION_RENAMED, org_id, name=name)
    doc = store.update_organization(org_id, {"status": "active"},
                                    {"$set": {"name": name, "updated_at": utcnow()}}, event)
    if doc is None:
        _live(store, org_id)  # raises the right error if it changed state meanwhile
        raise not_found("organization")
    return overview(doc)


def get_overview(store, org_id):
    return overview(_live(store, org_id))


def overview(doc):
    """The contract's overview shape; ``null`` included = unlimited."""
    plan = PlanSchema().dump(doc.get("plan") or DEFAULT_PLAN)
    used = (doc.get("storage") or {}).get("used_bytes", 0)
    members = (doc.get("members") or {}).get("count", 0)
    included_bytes, included_users = plan["included_storage_bytes"], plan["included_users"]
    return {
        "id": doc["_id"],
        "name": doc["name"],
        "owner": OwnerSchema().dump(doc.get("owner") or {}),
        "plan": plan,
        "storage": {"used_bytes": used, "included_bytes": included_bytes,
                    "exceeded": included_bytes is not None and used > included_bytes},
        "members": {"count": members, "included": included_users,
                    "exceeded": included_users is not None and members > included_users},
        "credits": {"balance": (doc.get("credits") or {}).get("balance", 0)},
        "created_at": isoformat(doc["created_at"]),
        "status": doc["status"],
    }
