"""Accounts: their public shape, creation, the operator account, ``GET /me`` and deleting one's own.

Deleting one's own account (``DELETE /me``) is refused (409) while the person owns an organization:
ownership must move first (or the organization be deleted), since an organization never stays
without an owner. Otherwise, in this order, so that a crash anywhere leaves an account its owner
can log into and delete again: every session ends and the account's cut-off moves
(``access_revoked``: every token dies at every gateway), the person leaves each organization
(``member_left``, reason ``left``, seat released), what this service holds of them goes (sessions,
idempotency records, login counters), and the account is deleted by the outbox once
``account_deleted`` is published. Other services purge what they hold of the person on that event.
"""
import uuid

from common import events, outbox
from common.errors import DomainError
from common.events import utcnow
from services.membership import idempotency, ratelimit, revocation
from services.membership.validation import check_password, clean_person_name, normalize_email


def public_user(account):
    return {"id": account["_id"], "email": account["email"], "name": account["name"],
            "is_superuser": bool(account.get("is_superuser"))}


def new_account(email, name, password_hash, is_superuser=False):
    return {"_id": str(uuid.uuid4()), "email": email, "name": name, "password_hash": password_hash,
            "is_superuser": is_superuser, "last_org_id": None, "tokens_not_before": 0.0,
            "created_at": utcnow()}


def replayed_account(store, security, email, password, ids, idempotency_key):
    """The account of ``email`` if a request with the same ``Idempotency-Key`` created it (it must
    then have the same password), None if there is none yet; any other account is a 409."""
    existing = store.account_by_email(email)
    if existing is None:
        return None
    if idempotency_key is None or existing["_id"] != ids["account_id"]:
        raise DomainError("email_taken", "an account with this email already exists")
    if not security.passwords.verify(existing["password_hash"], password):
        raise idempotency.reused_with_other_parameters()
    return existing


def me(store, user_id, org_id):
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    memberships = store.memberships_of(user_id)
    orgs = store.organizations(m["org_id"] for m in memberships)
    organizations = [{"id": m["org_id"], "name": orgs.get(m["org_id"], {}).get("name", ""), "role": m["role"],
                      "is_owner": orgs.get(m["org_id"], {}).get("owner_user_id") == user_id}
                     for m in memberships]
    current = next((o for o in organizations if o["id"] == org_id), None)
    return {"user": public_user(account),
            "organization": {"id": current["id"], "name": current["name"]} if current else None,
            "role": current["role"] if current else None,
            "is_owner": current["is_owner"] if current else False,
            "organizations": organizations}


def ensure_superuser(store, security, email, password, name):
    """Create the operator account from configuration; an existing account is promoted, not changed."""
    email = normalize_email(email)
    check_password(password)
    existing = store.account_by_email(email)
    if existing:
        if not existing.get("is_superuser"):
            store.set_account(existing["_id"], {"is_superuser": True})
        return existing["_id"]
    account = new_account(email, clean_person_name(name), security.passwords.hash(password), True)
    if not store.insert_account(account):  # another replica won the race
        return store.account_by_email(email)["_id"]
    return account["_id"]


def delete_account(store, security, user_id, password, settings=None):
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    counted = ratelimit.check_login_rate(store, settings, account["email"], None)
    if not security.passwords.verify(account["password_hash"], password or ""):
        raise DomainError("validation_failed", "invalid input", {"password": ["Wrong password."]})
    ratelimit.login_succeeded(counted, account["email"])
    memberships = store.memberships_of(user_id)
    organizations = store.organizations(m["org_id"] for m in memberships)
    owned = sorted(org_id for org_id, org in organizations.items()
                   if org.get("owner_user_id") == user_id and org.get("status", "active") == "active")
    if owned:
        raise DomainError("conflict", "you own organizations: transfer their ownership or delete them first",
                          {"organizations": owned})
    store.revoke_sessions(user_id, utcnow(), all_orgs=True)
    cutoff = revocation.next_cutoff(account.get("tokens_not_before"))
    store.set_account(user_id, {"tokens_not_before": cutoff, "last_org_id": None},
                      revocation.access_revoked(None, user_id, not_before=cutoff))
    left = []
    for membership in memberships:
        org_id = membership["org_id"]
        if organizations.get(org_id, {}).get("status", "active") != "active":
            continue  # being deleted: its purge removes the membership
        count = store.release_seat(org_id)
        if store.remove_membership(org_id, user_id,
                                   outbox.pending(events.MEMBER_LEFT, org_id, user_id=user_id, reason="left",
                                                  member_count=count),
                                   revocation.access_revoked(org_id, user_id,
                                                         not_before=revocation.next_cutoff(
                                                             membership.get("tokens_not_before")))):
            left.append(org_id)
        else:
            store.claim_seat(org_id, None)  # removed concurrently: give the seat back
    store.forget_person(user_id, account["email"])
    store.delete_account_after_publish(
        user_id, outbox.pending(events.ACCOUNT_DELETED, None, user_id=user_id, email=account["email"],
                                organizations_left=left))
    return {"deleted": True, "user_id": user_id, "organizations_left": left}
