"""Organizations as their members see them: creating one, listing, roles, removal, ownership.

Seats: ``organizations.member_count`` is a counter changed only by conditional ``$inc`` (a seat is
claimed before a membership is inserted and released after one is removed), which is what makes
"two accounts race for the last seat, exactly one wins" hold without transactions.
"""
import base64
import json
import re
import uuid
from datetime import datetime

from common import events, outbox
from common.errors import DomainError, not_found
from common.events import isoformat, utcnow
from services.membership.domain import access_revoked, now_seconds

ROLE_RANK = {"member": 1, "dataset_manager": 2, "admin": 3}
MAX_PAGE = 200


def create_remote_organization(create_org, name, account):
    """Ask the org service to create the organization (idempotent by the id chosen here)."""
    return create_org(str(uuid.uuid4()), name, {"id": account["_id"], "name": account["name"],
                                                "email": account["email"]})


def new_membership(org_id, account, role):
    return {"_id": "%s:%s" % (org_id, account["_id"]), "org_id": org_id, "user_id": account["_id"],
            "email": account["email"], "name": account["name"], "role": role,
            "can_delete_organization": False, "tokens_not_before": 0.0, "joined_at": utcnow()}


def member_joined(org_id, account, role, via_invite, member_count, is_owner=False):
    return outbox.pending(events.MEMBER_JOINED, org_id, user_id=account["_id"], email=account["email"],
                          name=account["name"], role=role, via_invite=via_invite, is_owner=is_owner,
                          member_count=member_count)


def record_new_organization(store, organization, account):
    """The creator's side of a new organization: our copy of it and the owner's membership."""
    store.insert_organization(organization["id"], organization["name"], account["_id"], organization["created_at"])
    membership = new_membership(organization["id"], account, "admin")
    store.insert_membership(membership, member_joined(organization["id"], account, "admin", False, 1, True))
    return membership


def create_organization(store, create_org, user_id, name):
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    organization = create_remote_organization(create_org, name, account)
    record_new_organization(store, organization, account)
    return organization


def list_organizations(store, user_id):
    memberships = store.memberships_of(user_id)
    orgs = store.organizations(m["org_id"] for m in memberships)
    return [{"id": m["org_id"], "name": orgs.get(m["org_id"], {}).get("name", ""), "role": m["role"],
             "is_owner": orgs.get(m["org_id"], {}).get("owner_user_id") == user_id} for m in memberships]


def live_organization(store, org_id):
    """The organization if it is active: 404 if unknown, 410 while it is being deleted and after."""
    organization = store.organization(org_id)
    if organization is None:
        if store.was_purged(org_id):  # deleted: its tombstone answers 410, like while deleting
            raise DomainError("organization_gone", "organization is deleted or being deleted")
        raise not_found("organization")
    if organization.get("status") != "active":
        raise DomainError("organization_gone", "organization is deleted or being deleted")
    return organization


def require_role(store, org_id, actor, minimum):
    """Check the actor's *current* role (the token's may be seconds old); superusers pass."""
    if actor.get("su"):
        return None
    membership = store.membership(org_id, actor["sub"])
    if membership is None or ROLE_RANK[membership["role"]] < ROLE_RANK[minimum]:
        raise DomainError("forbidden", "your role in this organization does not allow this")
    return membership


def member_view(membership, organization):
    is_owner = organization.get("owner_user_id") == membership["user_id"]
    return {"user_id": membership["user_id"], "email": membership["email"], "name": membership["name"],
            "role": membership["role"], "is_owner": is_owner,
            "can_delete_organization": is_owner or bool(membership.get("can_delete_organization")),
            "joined_at": isoformat(membership["joined_at"])}


def _encode_cursor(membership):
    raw = json.dumps([isoformat(membership["joined_at"]), membership["user_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor):
    try:
        joined_at, user_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(joined_at.replace("Z", "+00:00")), str(user_id)
    except (ValueError, TypeError):
        raise DomainError("validation_failed", "invalid input", {"cursor": ["Not a valid cursor."]})


def list_members(store, org_id, limit=50, cursor=None, q=None):
    organization = live_organization(store, org_id)
    limit = max(1, min(int(limit or 50), MAX_PAGE))
    after = _decode_cursor(cursor) if cursor else None
    search = re.escape(q.strip()) if q and q.strip() else None
    page = store.member_page(org_id, limit + 1, after, search)
    items = [member_view(m, organization) for m in page[:limit]]
    return {"items": items, "next_cursor": _encode_cursor(page[limit - 1]) if len(page) > limit else None}


def change_member(store, org_id, actor, user_id, role=None, can_delete_organization=None):
    organization = live_organization(store, org_id)
    require_role(store, org_id, actor, "admin")
    target = store.membership(org_id, user_id)
    if target is None:
        raise not_found("member")
    is_owner = organization.get("owner_user_id") == user_id
    if can_delete_organization is not None and organization.get("owner_user_id") != actor["sub"]:
        raise DomainError("forbidden", "only the owner may grant the right to delete the organization")
    if role is not None and role != "admin" and is_owner:
        raise DomainError("owner_protected", "the owner's role cannot be lowered; transfer ownership first")
    fields, pending = {}, []
    if can_delete_organization is not None:
        fields["can_delete_organization"] = bool(can_delete_organization)
    if role is not None and role != target["role"]:
        fields.update(role=role, tokens_not_before=now_seconds())
        pending = [outbox.pending(events.MEMBER_ROLE_CHANGED, org_id, user_id=user_id, role=role),
                   access_revoked(org_id, user_id)]
    if fields:
        target = store.update_membership(org_id, user_id, fields, *pending)
        if target is None:
            raise not_found("member")
    return member_view(target, organization)


def remove_member(store, org_id, actor, user_id):
    """An admin removes a member, or a member leaves; never the owner."""
    organization = live_organization(store, org_id)
    leaving = actor["sub"] == user_id
    if not leaving:
        require_role(store, org_id, actor, "admin")
    if store.membership(org_id, user_id) is None:
        raise not_found("member")
    if organization.get("owner_user_id") == user_id:
        raise DomainError("owner_protected", "the owner cannot leave or be removed; transfer ownership first")
    count = store.release_seat(org_id)
    reason = "left" if leaving else "removed"
    removed = store.remove_membership(
        org_id, user_id,
        outbox.pending(events.MEMBER_LEFT, org_id, user_id=user_id, reason=reason, member_count=count),
        access_revoked(org_id, user_id))
    if not removed:  # removed concurrently: give the seat back
        store.claim_seat(org_id, None)
        raise not_found("member")
    store.revoke_sessions(user_id, utcnow(), org_id=org_id)
    return {"removed": True, "reason": reason}


def transfer_ownership(store, org_id, actor, to_user_id):
    organization = live_organization(store, org_id)
    from_user_id = actor["sub"]
    if organization.get("owner_user_id") != from_user_id:
        raise DomainError("forbidden", "only the owner may transfer ownership")
    target = store.membership(org_id, to_user_id)
    if target is None:
        raise not_found("member")
    if to_user_id == from_user_id or target["role"] != "admin":
        raise DomainError("conflict", "ownership can only go to another admin of the organization")
    now = now_seconds()
    updated = store.transfer_owner(
        org_id, from_user_id, to_user_id,
        outbox.pending(events.OWNERSHIP_TRANSFERRED, org_id, from_user_id=from_user_id, to_user_id=to_user_id,
                       to_user_email=target["email"], to_user_name=target["name"]),
        access_revoked(org_id, from_user_id), access_revoked(org_id, to_user_id))
    if updated is None:
        raise DomainError("conflict", "ownership changed meanwhile")
    for user_id in (from_user_id, to_user_id):
        store.update_membership(org_id, user_id, {"tokens_not_before": now})
    return {"owner_user_id": to_user_id, "previous_owner_user_id": from_user_id}


def on_organization_renamed(store, event):
    store.set_if_newer(event["organization_id"], "name", event["name"], event["occurred_at"])

