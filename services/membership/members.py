"""Organizations as their members see them: creating one, listing, roles, removal, ownership.

Seats: ``organizations.member_count`` is a counter changed only by conditional ``$inc`` (a seat is
claimed before a membership is inserted and released after one is removed), which is what makes
"two accounts race for the last seat, exactly one wins" hold without transactions.
"""
import re
import uuid

from common import events, outbox
from common.errors import DomainError, not_found
from common.events import ROLE_RANK, utcnow
from common.organizations import require_active
from common.validation import decode_sequence, encode_sequence
from services.membership import idempotency
from services.membership.revocation import access_revoked, next_cutoff, now_seconds
from services.membership.schemas import MemberSchema

MAX_PAGE = 200
#: compare-and-set attempts when a member is changed concurrently
CHANGE_ATTEMPTS = 5


def create_remote_organization(create_org, name, account, org_id=None):
    """Ask the org service to create the organization (idempotent by the id chosen here)."""
    return create_org(org_id or str(uuid.uuid4()), name, {"id": account["_id"], "name": account["name"],
                                                          "email": account["email"]})


def new_membership(org_id, account, role):
    return {"_id": f'{org_id}:{account["_id"]}', "org_id": org_id, "user_id": account["_id"],
            "email": account["email"], "name": account["name"], "role": role,
            "can_delete_organization": False, "tokens_not_before": now_seconds(), "joined_at": utcnow()}


def member_joined(org_id, account, role, via_invite, member_count, is_owner=False, invite_id=None):
    """Joining is always the joiner's own act (sign-up, a new organization, an accepted invite), also
    when no token says so yet: they are the event's actor."""
    extra = {"invite_id": invite_id} if invite_id else {}
    return outbox.pending(events.MEMBER_JOINED, org_id, user_id=account["_id"], email=account["email"],
                          name=account["name"], role=role, via_invite=via_invite, is_owner=is_owner,
                          member_count=member_count, actor={"user_id": account["_id"],
                                                           "is_superuser": bool(account.get("is_superuser"))},
                          **extra)


def record_new_organization(store, organization, account):
    """The creator's side of a new organization: our copy of it and the owner's membership."""
    store.insert_organization(organization["id"], organization["name"], account["_id"], organization["created_at"])
    membership = new_membership(organization["id"], account, "admin")
    store.insert_membership(membership, member_joined(organization["id"], account, "admin", False, 1, True))
    return membership


def create_organization(store, create_org, user_id, name, settings=None, idempotency_key=None):
    """With an ``Idempotency-Key``, a retry creates under the first request's id: the org service
    answers the organization it already created, and the membership is found again."""
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    ids, replayed = idempotency.claim(store, settings, "organization:" + user_id, idempotency_key,
                                      {"name": name}, {"org_id": str(uuid.uuid4())})
    organization = create_remote_organization(create_org, name, account, ids["org_id"])
    record_new_organization(store, organization, account)
    return dict(organization, replayed=replayed)


def list_organizations(store, user_id):
    memberships = store.memberships_of(user_id)
    orgs = store.organizations(m["org_id"] for m in memberships)
    return [{"id": m["org_id"], "name": orgs.get(m["org_id"], {}).get("name", ""), "role": m["role"],
             "is_owner": orgs.get(m["org_id"], {}).get("owner_user_id") == user_id} for m in memberships]


def require_role(store, org_id, actor, minimum):
    """Check the actor's *current* role (the token's may be seconds old); superusers pass."""
    if actor.get("su"):
        return None
    membership = store.membership(org_id, actor["sub"])
    if membership is None or ROLE_RANK[membership["role"]] < ROLE_RANK[minimum]:
        raise DomainError("forbidden", "your role in this organization does not allow this")
    return membership


_MEMBER = MemberSchema()  # one instance: building a marshmallow schema costs more than a dump


def member_view(membership, organization):
    is_owner = organization.get("owner_user_id") == membership["user_id"]
    return _MEMBER.dump(dict(membership, is_owner=is_owner,
                             can_delete_organization=is_owner or bool(membership.get("can_delete_organization"))))


def list_members(store, org_id, limit=50, cursor=None, q=None):
    organization = require_active(store, org_id)
    limit = max(1, min(int(limit or 50), MAX_PAGE))
    after = decode_sequence(cursor) if cursor else None  # pages follow join order
    search = re.escape(q.strip()) if q and q.strip() else None
    page = store.member_page(org_id, limit + 1, after, search, organization)
    items = [member_view(m, organization) for m in page[:limit]]
    return {"items": items, "next_cursor": encode_sequence(page[limit - 1]["ordinal"]) if len(page) > limit else None}


def change_member(store, org_id, actor, user_id, role=None, can_delete_organization=None):
    """Role and deletion right. The deletion right belongs to admins: a demotion clears it (else
    it would silently come back with a later promotion) and a non-admin cannot be given it."""
    organization = require_active(store, org_id)
    require_role(store, org_id, actor, "admin")
    is_owner = organization.get("owner_user_id") == user_id
    if can_delete_organization is not None and organization.get("owner_user_id") != actor["sub"]:
        raise DomainError("forbidden", "only the owner may grant the right to delete the organization")
    if role is not None and role != "admin" and is_owner:
        raise DomainError("owner_protected", "the owner's role cannot be lowered; transfer ownership first")
    for _ in range(CHANGE_ATTEMPTS):
        target = store.membership(org_id, user_id)
        if target is None:
            raise not_found("member")
        new_role = role if role is not None else target["role"]
        if can_delete_organization and new_role != "admin":
            raise DomainError("conflict", "only an admin can hold the right to delete the organization")
        fields, pending = {}, []
        if can_delete_organization is not None:
            fields["can_delete_organization"] = bool(can_delete_organization)
        if new_role != target["role"]:
            cutoff = next_cutoff(target.get("tokens_not_before"))
            fields.update(role=new_role, tokens_not_before=cutoff)
            if new_role != "admin":
                fields["can_delete_organization"] = False
            pending = [outbox.pending(events.MEMBER_ROLE_CHANGED, org_id, user_id=user_id, role=new_role,
                                      previous_role=target["role"]),
                       access_revoked(org_id, user_id, not_before=cutoff)]
        if not fields:
            return member_view(target, organization)
        held = bool(target.get("can_delete_organization"))
        if "can_delete_organization" in fields and fields["can_delete_organization"] != held:
            pending.append(outbox.pending(events.DELETION_RIGHT_CHANGED, org_id, user_id=user_id,
                                          granted=fields["can_delete_organization"]))
        updated = store.update_membership(org_id, user_id, fields, *pending,
                                          cutoff=target.get("tokens_not_before"))
        if updated is not None:
            return member_view(updated, organization)
    raise DomainError("conflict", "the member was changed concurrently; try again")


def remove_member(store, org_id, actor, user_id):
    """An admin removes a member, or a member leaves; never the owner."""
    organization = require_active(store, org_id)
    leaving = actor["sub"] == user_id
    if not leaving:
        require_role(store, org_id, actor, "admin")
    membership = store.membership(org_id, user_id)
    if membership is None:
        raise not_found("member")
    if organization.get("owner_user_id") == user_id:
        raise DomainError("owner_protected", "the owner cannot leave or be removed; transfer ownership first")
    count = store.release_seat(org_id)
    reason = "left" if leaving else "removed"
    removed = store.remove_membership(
        org_id, user_id,
        outbox.pending(events.MEMBER_LEFT, org_id, user_id=user_id, reason=reason, member_count=count),
        access_revoked(org_id, user_id, not_before=next_cutoff(membership.get("tokens_not_before"))),
        cutoff=membership.get("tokens_not_before"))
    if not removed:  # removed (or changed) concurrently: give the seat back
        store.claim_seat(org_id, None)
        if store.membership(org_id, user_id) is not None:
            raise DomainError("conflict", "the member was changed concurrently; try again")
        raise not_found("member")
    store.revoke_sessions(user_id, utcnow(), org_id=org_id)
    return {"removed": True, "reason": reason}


def transfer_ownership(store, org_id, actor, to_user_id):
    organization = require_active(store, org_id)
    from_user_id = actor["sub"]
    if organization.get("owner_user_id") != from_user_id:
        raise DomainError("forbidden", "only the owner may transfer ownership")
    target = store.membership(org_id, to_user_id)
    if target is None:
        raise not_found("member")
    if to_user_id == from_user_id or target["role"] != "admin":
        raise DomainError("conflict", "ownership can only go to another admin of the organization")
    updated = store.transfer_owner(
        org_id, from_user_id, to_user_id,
        outbox.pending(events.OWNERSHIP_TRANSFERRED, org_id, from_user_id=from_user_id, to_user_id=to_user_id,
                       to_user_email=target["email"], to_user_name=target["name"]))
    if updated is None:
        raise DomainError("conflict", "ownership changed meanwhile")
    # after the owner is written (see sessions.is_owner_of): both members' tokens state the owner flag
    for user_id in (from_user_id, to_user_id):
        void_tokens(store, org_id, user_id)
    return {"owner_user_id": to_user_id, "previous_owner_user_id": from_user_id}


def void_tokens(store, org_id, user_id):
    """Move the member's cut-off on and announce it: every token issued before now dies."""
    for _ in range(CHANGE_ATTEMPTS):
        membership = store.membership(org_id, user_id)
        if membership is None:
            return  # removed: its removal announced a cut-off of its own
        cutoff = next_cutoff(membership.get("tokens_not_before"))
        if store.update_membership(org_id, user_id, {"tokens_not_before": cutoff},
                                   access_revoked(org_id, user_id, not_before=cutoff),
                                   cutoff=membership.get("tokens_not_before")):
            return
    raise DomainError("conflict", "the member was changed concurrently; try again")


def on_organization_renamed(store, event):
    store.set_if_newer(event["organization_id"], "name", event["name"], event["occurred_at"])

