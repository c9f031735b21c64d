"""Invitations: one per email, single use, expiring, revocable; tokens stored only as hashes."""
import uuid
from datetime import timedelta

from common import events, outbox
from common.errors import DomainError, not_found
from common.events import isoformat, utcnow
from services.membership import domain, members
from services.membership.security import token_hash

MAX_EMAILS = 100


def invite_view(invite):
    return {"id": invite["_id"], "email": invite["email"], "role": invite["role"], "status": invite["status"],
            "invited_by": invite["invited_by"], "created_at": isoformat(invite["created_at"]),
            "expires_at": isoformat(invite["expires_at"])}


def create_invites(store, config, org_id, actor, emails, role):
    """Invite each (normalised, de-duplicated) email; an older pending invite for it is replaced."""
    organization = members.live_organization(store, org_id)
    members.require_role(store, org_id, actor, "admin")
    if role not in members.ROLE_RANK:
        raise DomainError("validation_failed", "invalid input", {"role": ["Not a valid role."]})
    if not isinstance(emails, list) or not 1 <= len(emails) <= MAX_EMAILS:
        raise DomainError("validation_failed", "invalid input", {"emails": ["Give 1-%d emails." % MAX_EMAILS]})
    normalized = []
    for index, email in enumerate(emails):
        try:
            email = domain.normalize_email(email)
        except DomainError:
            raise DomainError("validation_failed", "invalid input", {"emails": {str(index): ["Not a valid email."]}})
        if email not in normalized:
            normalized.append(email)
    inviter = store.account(actor["sub"])
    inviter_name = inviter["name"] if inviter else "A platform operator"
    ttl = timedelta(days=float(config.get("INVITE_TTL_DAYS") or 14))
    created, skipped = [], []
    for email in normalized:
        account = store.account_by_email(email)
        if account is not None and store.membership(org_id, account["_id"]) is not None:
            skipped.append({"email": email, "reason": "already_member"})
            continue
        now = utcnow()
        for older in store.pending_invites(org_id, email):
            store.set_invite_status(older["_id"], "pending", {"status": "revoked", "revoked_at": now,
                                                              "revoked_reason": "replaced"})
        invite_id = uuid.uuid4().hex
        invite = {"_id": invite_id, "org_id": org_id, "email": email, "role": role,
                  "token_hash": token_hash(store.invite_tokens.token(invite_id)), "status": "pending",
                  "invited_by": actor["sub"], "created_at": now, "expires_at": now + ttl}
        # accept_url is filled in at publish time (InviteTokens): the token is never stored
        store.insert_invite(invite, outbox.pending(
            events.INVITE_CREATED, org_id, invite_id=invite_id, email=email, role=role,
            inviter_name=inviter_name, accept_url="", expires_at=isoformat(invite["expires_at"]),
            organization_name=organization["name"]))
        created.append(invite_view(invite))
    return {"items": created, "skipped": skipped}


def list_invites(store, org_id, actor):
    members.live_organization(store, org_id)
    members.require_role(store, org_id, actor, "admin")
    now = utcnow()
    return {"items": [invite_view(i) for i in store.pending_invites(org_id) if i["expires_at"] > now]}


def revoke_invite(store, org_id, actor, invite_id):
    members.live_organization(store, org_id)
    members.require_role(store, org_id, actor, "admin")
    invite = store.set_invite_status(invite_id, "pending", {"status": "revoked", "revoked_at": utcnow()},
                                     org_id=org_id)
    if invite is None:
        raise not_found("invite")
    return invite_view(invite)


def _usable_invite(store, token):
    """The pending, unexpired invite for ``token``; 404 for anything else (never say why)."""
    if not isinstance(token, str) or not token:
        raise not_found("invite")
    invite = store.invite_by_token_hash(token_hash(token))
    if invite is None or invite["status"] != "pending" or invite["expires_at"] <= utcnow():
        raise not_found("invite")
    organization = store.organization(invite["org_id"])
    if organization is None or organization.get("status") != "active":
        raise not_found("invite")
    return invite, organization


def preview(store, token):
    invite, organization = _usable_invite(store, token)
    return {"organization": {"id": organization["_id"], "name": organization["name"]}, "role": invite["role"],
            "expires_at": isoformat(invite["expires_at"])}


def _check_invitee(invite, account_email):
    if invite["email"] != account_email:
        raise DomainError("forbidden", "this invite is for another email address")


def accept(store, security, plan_limit, token, user_id):
    invite, organization = _usable_invite(store, token)
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    _check_invitee(invite, account["email"])
    return _join(store, security, invite, organization, account, plan_limit(organization["_id"]))


def signup_with_invite(store, security, plan_limit, email, password, name, token, config=None,
                       client_address=None):
    """Create the account directly in the inviting organization (the invite must be for this email).

    If joining fails once the account exists (the last seat went to someone else a moment ago, the
    invite was used or revoked meanwhile), the account is deleted again: it would otherwise block
    the retry with 409 ``email_taken`` although the person never got in."""
    email = domain.normalize_email(email)
    name = domain.clean_person_name(name)
    domain.check_password(password)
    domain.check_signup_rate(store, config or {}, client_address)
    invite, organization = _usable_invite(store, token)
    _check_invitee(invite, email)
    limit = plan_limit(organization["_id"])
    if limit is not None and organization.get("member_count", 0) >= limit:
        raise DomainError("user_limit_reached", "the organization's plan has no free seat")
    if store.account_by_email(email):
        raise DomainError("email_taken", "an account with this email already exists")
    account = domain.new_account(email, name, security.passwords.hash(password))
    account["last_org_id"] = organization["_id"]
    if not store.insert_account(account):
        raise DomainError("email_taken", "an account with this email already exists")
    try:
        return _join(store, security, invite, organization, account, limit)
    except DomainError:  # raised before any membership exists: nothing refers to the account yet
        store.delete_account(account["_id"])
        raise


def _join(store, security, invite, organization, account, limit):
    """Seat first (conditional on the plan's current limit), then the invite, then the membership."""
    org_id = organization["_id"]
    if store.membership(org_id, account["_id"]) is not None:
        raise DomainError("already_member", "you are already a member of this organization")
    count = store.claim_seat(org_id, limit)
    if count is None:
        raise DomainError("user_limit_reached", "the organization's plan has no free seat")
    claimed = store.set_invite_status(invite["_id"], "pending", {
        "status": "accepted", "accepted_by": account["_id"], "accepted_at": utcnow()})
    if claimed is None:
        store.release_seat(org_id)
        raise not_found("invite")
    membership = members.new_membership(org_id, account, invite["role"])
    if not store.insert_membership(membership, members.member_joined(org_id, account, invite["role"], True, count)):
        store.release_seat(org_id)
        raise DomainError("already_member", "you are already a member of this organization")
    store.set_account(account["_id"], {"last_org_id": org_id})
    tokens = domain.open_session(store, security, account, org_id, membership)
    return dict(tokens, organization={"id": org_id, "name": organization["name"], "role": invite["role"],
                                      "is_owner": False})
