"""Organization rules: names, creation, renaming, the overview read model."""
import hashlib
import re
import secrets
from datetime import timedelta

from common import context, events, outbox
from common.errors import DomainError, gone, not_found
from common.events import DEFAULT_PLAN, PlanSchema, isoformat, utcnow
from common.validation import bounded_moment
from services.org.schemas import OwnerSchema

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PLAN, OWNER = PlanSchema(), OwnerSchema()  # marshmallow schemas are reusable; building one per call is not free


def clean_name(name):
    """1-100 characters after trimming, no control characters (names end up in mail headers)."""
    if not isinstance(name, str):
        raise DomainError("validation_failed", "invalid input", {"name": ["Not a valid string."]})
    name = name.strip()
    if not 1 <= len(name) <= 100 or _CONTROL.search(name):
        raise DomainError("validation_failed", "invalid input",
                          {"name": ["Must be 1-100 characters without control characters."]})
    return name


def _live(store, org_id, cached=False):
    doc = store.cached_organization(org_id) if cached else store.get_organization(org_id)
    if doc is None:
        raise not_found("organization")
    if doc.get("status") != "active":
        raise gone()
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
    # the caller (POST /organizations) or, at sign-up (no token yet), the new owner: they created it
    actor = context.actor() or {"user_id": owner["id"], "is_superuser": False}
    event = outbox.pending(events.ORGANIZATION_CREATED, org_id, name=name, owner_user_id=owner["id"],
                           owner_email=owner["email"], owner_name=owner["name"],
                           plan=PLAN.dump(plan), created_at=isoformat(now), actor=actor)
    if not store.insert_organization(doc, event):
        existing = store.get_organization(org_id)
        if existing["owner"]["id"] != owner["id"]:
            raise DomainError("conflict", "organization id already in use")
        doc = existing
    return overview(doc)


def rename(store, org_id, name):
    name = clean_name(name)
    current = _live(store, org_id)
    event = outbox.pending(events.ORGANIZATION_RENAMED, org_id, name=name, previous_name=current["name"])
    doc = store.rename_active(org_id, name, utcnow(), event)
    if doc is None:
        _live(store, org_id)  # raises the right error if it changed state meanwhile
        raise not_found("organization")
    return overview(doc)


def get_overview(store, org_id):
    """Served from the process's organization cache (see ``services/org/cache.py``)."""
    return overview(_live(store, org_id, cached=True))


def overview(doc):
    """The contract's overview shape; ``null`` included = unlimited."""
    plan = PLAN.dump(doc.get("plan") or DEFAULT_PLAN)
    used = (doc.get("storage") or {}).get("used_bytes", 0)
    members = (doc.get("members") or {}).get("count", 0)
    included_bytes, included_users = plan["included_storage_bytes"], plan["included_users"]
    return {
        "id": doc["_id"],
        "name": doc["name"],
        "owner": OWNER.dump(doc.get("owner") or {}),
        "plan": plan,
        "storage": {"used_bytes": used, "included_bytes": included_bytes,
                    "exceeded": included_bytes is not None and used > included_bytes},
        "members": {"count": members, "included": included_users,
                    "exceeded": included_users is not None and members > included_users},
        "credits": {"balance": (doc.get("credits") or {}).get("balance", 0)},
        "created_at": isoformat(doc["created_at"]),
        "status": doc["status"],
    }


def on_member_count(store, event):
    """member_joined / member_left carry the seat count after the change; newest fact wins."""
    if event.get("member_count") is not None:
        store.apply_read_model(event["organization_id"], "members", {"count": event["member_count"]},
                               event["occurred_at"])


def on_ownership_transferred(store, event):
    owner = {"id": event["to_user_id"], "name": event.get("to_user_name", ""),
             "email": event.get("to_user_email", "")}
    store.apply_read_model(event["organization_id"], "owner", owner, event["occurred_at"])


def _usage_as_of(event):
    """The usage service numbers its facts (ledger / report chain position): order by that, not by clock."""
    if event.get("sequence") is not None:
        return f'seq:{event["sequence"]:020d}'
    return event["occurred_at"]


def on_storage_updated(store, event):
    store.apply_read_model(event["organization_id"], "storage",
                         {"used_bytes": event["used_bytes"], "datasets": event["datasets"]}, _usage_as_of(event))


def on_credits_changed(store, event):
    store.apply_read_model(event["organization_id"], "credits", {"balance": event["balance"]},
                         _usage_as_of(event))


def set_plan(store, org_id, plan, changed_by):
    """A superuser sets the plan; the history keeps who changed what when."""
    if plan.get("name") not in events.PLAN_NAMES:
        raise DomainError("validation_failed", "invalid input", {"name": ["Not a valid plan."]})
    for field in ("included_users", "included_storage_bytes"):
        value = plan.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise DomainError("validation_failed", "invalid input", {field: ["Must be a non-negative integer or "
                                                                             "null."]})
    paid_until = bounded_moment(plan.get("paid_until"), "paid_until")
    current = _live(store, org_id)
    new_plan = {"name": plan["name"], "included_users": plan.get("included_users"),
                "included_storage_bytes": plan.get("included_storage_bytes"), "paid_until": paid_until}
    now = utcnow()
    event = outbox.pending(events.PLAN_CHANGED, org_id, plan=PLAN.dump(new_plan),
                           old_plan=PLAN.dump(current.get("plan") or DEFAULT_PLAN))
    history = {"at": now, "by": changed_by, "plan": new_plan, "previous": current.get("plan")}
    doc = store.change_active_plan(org_id, new_plan, history, now, event)
    if doc is None:
        _live(store, org_id)
        raise not_found("organization")
    return overview(doc)


# -- deletion ------------------------------------------------------------------------------------
#: every service that holds data of an organization and reports its purge
PURGING_SERVICES = ("membership", "notifications", "usage", "audit")
#: the deletion receipt: 256 random bits, base64url (43 characters); only its SHA-256 is stored
RECEIPT_BYTES = 32
RECEIPT_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def receipt_hash(receipt):
    return hashlib.sha256((f"orgplatform-deletion-receipt\x00{receipt}").encode()).hexdigest()


def request_deletion(store, org_id, requested_by, confirm_name):
    """Mark the organization ``deleting`` and announce it; every service then purges its part.

    The announcement is queued in the same write as the status change (outbox), so a crash in
    between loses nothing; a second request while deleting just returns the status.
    """
    doc = store.get_organization(org_id)
    if doc is None:
        raise not_found("organization")
    if doc["status"] != "active":
        raise gone()
    if not isinstance(confirm_name, str) or confirm_name.strip() != doc["name"]:
        raise DomainError("validation_failed", "invalid input",
                          {"confirm_name": ["Must equal the organization's current name."]})
    now = utcnow()
    event = outbox.pending(events.ORGANIZATION_DELETION_REQUESTED, org_id, name=doc["name"],
                           requested_by=requested_by, owner_email=(doc.get("owner") or {}).get("email"))
    receipt = secrets.token_urlsafe(RECEIPT_BYTES)
    deletion = {"requested_at": now, "requested_by": requested_by, "owner_id": (doc.get("owner") or {}).get("id"),
                "completed_at": None, "services": dict({s: "pending" for s in PURGING_SERVICES}, org="pending"),
                "receipt_hash": receipt_hash(receipt)}
    updated = store.start_deletion(org_id, deletion, now, event)
    if updated is None:  # a concurrent request won; only the winner's answer carries the receipt
        raise gone()
    return dict(deletion_status(updated), receipt=receipt)


def on_service_purged(store, event, receipt_days):
    """A service reports its purge; when all have, the organization shrinks to its tombstone."""
    doc = store.mark_service_purged(event["organization_id"], event["service"], event["removed"],
                                    event["occurred_at"])
    if doc is not None and all(doc["deletion"]["services"].get(s) == "purged" for s in PURGING_SERVICES):
        finish_deletion(store, doc, receipt_days)


def finish_deletion(store, doc, receipt_days):
    now = utcnow()
    deletion = dict(doc["deletion"], completed_at=now, services=dict(doc["deletion"]["services"], org="purged"))
    tombstone = {"_id": doc["_id"], "status": "deleted", "created_at": doc["created_at"], "deleted_at": now,
                 "deletion": {key: deletion.get(key) for key in ("requested_at", "requested_by", "owner_id",
                                                                 "completed_at", "services", "receipt_hash")}}
    tombstone["deletion"]["receipt_expires_at"] = now + timedelta(days=receipt_days)
    owner = doc.get("owner") or {}
    # The completion mail needs the owner's address and the name, which no service keeps any more:
    # the event carries them (it waits in the tombstone's outbox only until it is published).
    store.replace_with_tombstone(
        doc["_id"], tombstone,
        outbox.pending(events.organization_purged("org"), doc["_id"], service="org",
                       removed={"organizations": 1, "plan_history": len(doc.get("plan_history") or [])}),
        outbox.pending(events.ORGANIZATION_DELETED, doc["_id"], name=doc.get("name") or "",
                       owner_email=owner.get("email"), requested_at=isoformat(deletion["requested_at"]),
                       completed_at=isoformat(now)))


MAX_REDRIVE_SECONDS = 3600


def redrive_deletions(store, older_than_seconds, receipt_days):
    """Announce again deletions some service has not reported yet (purges are idempotent).

    With exponential backoff per deletion (``older_than_seconds`` x 2^n, at most an hour): a big
    organization's purge may take minutes, and a request every interval would pile up purges.
    Each re-drive is claimed with a conditional update, so of several org replicas one sends it."""
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_seconds)
    count = 0
    for doc in store.deletions_requested_before(cutoff):
        if all(doc["deletion"]["services"].get(s) == "purged" for s in PURGING_SERVICES):
            finish_deletion(store, doc, receipt_days)
            continue
        redrives = doc["deletion"].get("redrives", 0)
        last = doc["deletion"].get("redriven_at") or doc["deletion"]["requested_at"]
        if now - last < timedelta(seconds=min(older_than_seconds * 2 ** redrives, MAX_REDRIVE_SECONDS)):
            continue
        claimed = store.claim_redrive(doc["_id"], doc["deletion"].get("redrives"), now)
        if claimed is None:
            continue  # another replica re-drove it, or it finished meanwhile
        store.outbox.publish_entry(outbox.pending(
            events.ORGANIZATION_DELETION_REQUESTED, doc["_id"], name=doc["name"],
            requested_by=doc["deletion"]["requested_by"], owner_email=(doc.get("owner") or {}).get("email")))
        count += 1
    return count


def deletion_status(doc):
    deletion = doc.get("deletion") or {}
    return {"organization_id": doc["_id"], "status": doc["status"],
            "requested_at": isoformat(deletion.get("requested_at")),
            "completed_at": isoformat(deletion.get("completed_at")),
            "services": dict({s: "pending" for s in PURGING_SERVICES + ("org",)}, **deletion.get("services", {}))}


def get_deletion(store, org_id, actor):
    """Readable by the requester, the owner and superusers -- also after completion."""
    doc = store.get_organization(org_id)
    if doc is None or "deletion" not in doc:
        raise not_found("deletion")
    deletion = doc["deletion"]
    if not actor.get("su") and actor.get("sub") not in (deletion.get("requested_by"), deletion.get("owner_id")):
        raise not_found("deletion")
    return deletion_status(doc)


def get_deletion_by_receipt(store, receipt):
    """The deletion status for whoever holds the receipt the 202 answered with -- the requester,
    whose token the deletion revoked (and whose account it may have deleted). Single purpose: the
    status, nothing else. Unknown, malformed and expired receipts are all the same 404; guessing
    is hopeless (256 bits), so no rate limit is needed."""
    if not isinstance(receipt, str) or not RECEIPT_PATTERN.match(receipt):
        raise not_found("deletion")
    doc = store.organization_by_receipt(receipt_hash(receipt))
    if doc is None or "deletion" not in doc:
        raise not_found("deletion")
    expires_at = doc["deletion"].get("receipt_expires_at")
    if expires_at is not None and expires_at <= utcnow():
        raise not_found("deletion")
    return deletion_status(doc)


def export(store, org_id):
    doc = _live(store, org_id)
    return {"organization": overview(doc),
            "plan_history": [{"at": isoformat(h["at"]), "by": h["by"], "plan": PLAN.dump(h["plan"]),
                              "previous": PLAN.dump(h["previous"]) if h.get("previous") else None}
                             for h in doc.get("plan_history") or []]}
