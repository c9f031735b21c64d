"""Invitations: one per email, single use, expiring, revocable; tokens stored only as hashes."""
import hashlib
import uuid
from datetime import timedelta

from common import events, outbox
from common.errors import DomainError, not_found
from common.events import isoformat, utcnow
from common.organizations import require_active
from services.membership import idempotency, members
from services.membership.accounts import new_account, replayed_account
from services.membership.ratelimit import check_signup_rate, rate_limit
from services.membership.schemas import InviteSchema
from services.membership.security import token_hash
from services.membership.sessions import open_session
from services.membership.validation import check_password, clean_person_name, normalize_email

MAX_EMAILS = 100


_INVITE = InviteSchema()  # one instance: building a marshmallow schema costs more than a dump


def invite_view(invite):
    return _INVITE.dump(invite)


def _digest(*parts):
    """A one-way key for counters and records: no organization or user id is stored in them, so a
    purge has nothing of the organization to find there."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def _normalized_emails(emails):
    if not isinstance(emails, list) or not 1 <= len(emails) <= MAX_EMAILS:
        raise DomainError("validation_failed", "invalid input", {"emails": [f"Give 1-{MAX_EMAILS} emails."]})
    normalized = []
    for index, email in enumerate(emails):
        try:
            email = normalize_email(email)
        except DomainError:
            raise DomainError("validation_failed", "invalid input", {"emails": {str(index): ["Not a valid "
                                                                                             "email."]}}) from None
        if email not in normalized:
            normalized.append(email)
    return normalized


def create_invites(store, invite_tokens, settings, org_id, actor, emails, role, idempotency_key=None):
    """Invite each (normalised, de-duplicated) email.

    A repeat is harmless, so that a client may retry a batch whose answer it did not get: an email
    that already has a pending, unexpired invite with the same role keeps it (same id, same link,
    no second mail; it is listed in ``items`` again); only a different role replaces the pending
    invite (the old link dies). With an ``idempotency_key`` a repeat answers exactly the first
    answer (``replayed``), and the same key with another batch is 409. Rate limited per
    organization and per inviter, counting the invites created (each is a mail), not requests.
    The batch costs a fixed handful of database commands (one read of members, one of pending
    invites, one insert, one update), so 100 emails answer well within the RPC timeout; the mails
    go out asynchronously from the outbox.
    """
    organization = require_active(store, org_id)
    members.require_role(store, org_id, actor, "admin")
    if role not in events.ROLE_RANK:
        raise DomainError("validation_failed", "invalid input", {"role": ["Not a valid role."]})
    normalized = _normalized_emails(emails)
    request = {"emails": sorted(normalized), "role": role}
    record = None
    if idempotency_key is not None:
        record, replay = _claim_request(store, settings, org_id, actor, idempotency_key, request)
        if replay is not None:
            return dict(replay, replayed=True)
    try:
        result = _create_invites(store, invite_tokens, settings, organization, org_id, actor, normalized, role)
    except BaseException:
        if record is not None:
            store.release_invite_request(record)
        raise
    if record is not None:
        store.finish_invite_request(record, result)
    return result


def _claim_request(store, settings, org_id, actor, key, request):
    """``(record id, None)`` for a new key (claimed), ``(None, first answer)`` for a replay."""
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise DomainError("validation_failed", "invalid input", {"idempotency_key": ["Must be 1-200 characters."]})
    now = utcnow()
    ttl = settings.invite_idempotency_seconds
    record_id = _digest(org_id, actor.get("sub") or "", key)
    existing = store.claim_invite_request({
        "_id": record_id, "org_id": org_id, "request": request, "state": "running", "claimed_at": now,
        "expires_at": now + timedelta(seconds=ttl)})
    if existing is None:
        return record_id, None
    if existing.get("request") != request:
        raise DomainError("conflict", "this idempotency key was already used with a different batch",
                          {"idempotency_key": ["Already used with different parameters."]})
    if existing["state"] == "done":
        return None, existing["response"]
    # still running: the first request is being answered right now -- unless its worker died
    lease = 2 * settings.rpc_timeout
    if store.take_over_invite_request(record_id, now - timedelta(seconds=lease), now):
        return record_id, None
    raise DomainError("conflict", "a request with this idempotency key is still in progress",
                      {"idempotency_key": ["Still in progress; retry shortly."]})


def _create_invites(store, invite_tokens, settings, organization, org_id, actor, normalized, role):
    inviter = store.account(actor["sub"])
    inviter_name = inviter["name"] if inviter else "A platform operator"
    ttl = timedelta(days=settings.invite_ttl_days)
    now = utcnow()
    member_emails = store.members_with_emails(org_id, normalized)
    pending = {}
    for older in store.pending_invites_for(org_id, normalized):  # newest first
        pending.setdefault(older["email"], []).append(older)
    items, skipped, replaced, new = [], [], [], []
    for email in normalized:
        if email in member_emails:
            skipped.append({"email": email, "reason": "already_member"})
            continue
        olders = pending.get(email, [])
        keep = next((i for i in olders if i["role"] == role and i["expires_at"] > now), None)
        replaced += [i["_id"] for i in olders if i is not keep]
        if keep is not None:
            items.append(keep)
            continue
        invite_id = uuid.uuid4().hex
        invite = {"_id": invite_id, "org_id": org_id, "email": email, "role": role,
                  "token_hash": token_hash(invite_tokens.token(invite_id)), "status": "pending",
                  "invited_by": actor["sub"], "created_at": now, "expires_at": now + ttl}
        # accept_url is filled in at publish time (InviteTokens): the token is never stored
        new.append((invite, [outbox.pending(
            events.INVITE_CREATED, org_id, invite_id=invite_id, email=email, role=role,
            inviter_name=inviter_name, accept_url="", expires_at=isoformat(invite["expires_at"]),
            organization_name=organization["name"])]))
        items.append(invite)
    if new:
        window = settings.invite_limit_window
        rate_limit(store, [
            ("invite-inviter:" + _digest(actor.get("sub") or ""), settings.invite_limit_per_inviter),
            ("invite-org:" + _digest(org_id), settings.invite_limit_per_org)],
            window, "too many invitations, try again later", amount=len(new), refund_refused=True)
    store.revoke_invites(replaced, {"status": "revoked", "revoked_at": now, "revoked_reason": "replaced"})
    store.insert_invites(new)
    return {"items": [invite_view(i) for i in items], "skipped": skipped}


def list_invites(store, org_id, actor):
    require_active(store, org_id)
    members.require_role(store, org_id, actor, "admin")
    now = utcnow()
    return {"items": [invite_view(i) for i in store.pending_invites(org_id) if i["expires_at"] > now]}


def revoke_invite(store, org_id, actor, invite_id):
    require_active(store, org_id)
    members.require_role(store, org_id, actor, "admin")
    found = store.invite(invite_id, org_id) if isinstance(invite_id, str) else None
    if found is None or found["status"] != "pending":
        raise not_found("invite")
    revoked = outbox.pending(events.INVITE_REVOKED, org_id, invite_id=invite_id, email=found["email"],
                             role=found["role"])
    invite = store.set_invite_status(invite_id, "pending", {"status": "revoked", "revoked_at": utcnow()},
                                     org_id=org_id, events=(revoked,))
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
    """What the accept page shows: the organization, who invited, the role (never the invited
    address: a leaked link must not tell whom it was for)."""
    invite, organization = _usable_invite(store, token)
    inviter = store.account(invite["invited_by"]) if invite.get("invited_by") else None
    return {"organization": {"id": organization["_id"], "name": organization["name"]}, "role": invite["role"],
            "expires_at": isoformat(invite["expires_at"]), "inviter_name": inviter["name"] if inviter else None}


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


def signup_with_invite(store, security, plan_limit, email, password, name, token, settings=None,
                       client_address=None, idempotency_key=None):
    """Create the account directly in the inviting organization (the invite must be for this email).

    If joining fails once the account exists (the last seat went to someone else a moment ago, the
    invite was used or revoked meanwhile), the account is deleted again: it would otherwise block
    the retry with 409 ``email_taken`` although the person never got in."""
    email = normalize_email(email)
    name = clean_person_name(name)
    check_password(password)
    check_signup_rate(store, settings, client_address)
    ids, replayed = idempotency.claim(store, settings, "signup:" + email, idempotency_key,
                                      {"name": name, "invite": token_hash(token or "")},
                                      {"account_id": str(uuid.uuid4())})
    if replayed:
        existing = replayed_account(store, security, email, password, ids, idempotency_key)
        joined = _joined_by_invite(store, existing, token)
        if joined is not None:  # the first request got in: answer as it did
            org_id, membership, organization = joined
            tokens = open_session(store, security, existing, org_id, membership)
            return dict(tokens, replayed=True, organization={
                "id": org_id, "name": organization["name"], "role": membership["role"], "is_owner": False})
    invite, organization = _usable_invite(store, token)
    _check_invitee(invite, email)
    limit = plan_limit(organization["_id"])
    if limit is not None and organization.get("member_count", 0) >= limit:
        raise DomainError("user_limit_reached", "the organization's plan has no free seat")
    if store.account_by_email(email):
        raise DomainError("email_taken", "an account with this email already exists")
    account = new_account(email, name, security.passwords.hash(password))
    account["_id"] = ids["account_id"]
    account["last_org_id"] = organization["_id"]
    if not store.insert_account(account):
        raise DomainError("email_taken", "an account with this email already exists")
    try:
        return _join(store, security, invite, organization, account, limit)
    except DomainError:  # raised before any membership exists: nothing refers to the account yet
        store.delete_account(account["_id"])
        raise


def _joined_by_invite(store, account, token):
    """``(org_id, membership, organization)`` if ``account`` joined through the invite ``token``."""
    if account is None:
        return None
    invite = store.invite_by_token_hash(token_hash(token or ""))
    if invite is None or invite.get("accepted_by") != account["_id"]:
        return None
    membership = store.membership(invite["org_id"], account["_id"])
    organization = store.organization(invite["org_id"])
    if membership is None or organization is None:
        return None
    return invite["org_id"], membership, organization


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
    if not store.insert_membership(membership, members.member_joined(org_id, account, invite["role"], True, count,
                                                                      invite_id=invite["_id"])):
        store.release_seat(org_id)
        raise DomainError("already_member", "you are already a member of this organization")
    store.set_account(account["_id"], {"last_org_id": org_id})
    tokens = open_session(store, security, account, org_id, membership)
    return dict(tokens, organization={"id": org_id, "name": organization["name"], "role": invite["role"],
                                      "is_owner": False})
