"""Accounts, sign-up, login and sessions.

A session is one refresh-token family scoped to one organization. Access tokens are short JWTs;
revoking a session publishes ``access_revoked`` so gateways reject its access tokens at once.
"""
import re
import uuid
from datetime import timedelta

from common import events, outbox
from common.errors import DomainError
from common.events import utcnow
from services.membership.security import new_secret_token, token_hash

MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalize_email(email):
    """Emails are unique case-insensitively; we store them lower-cased and trimmed."""
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise DomainError("validation_failed", "invalid input", {"email": ["Not a valid email address."]})
    return email.strip().lower()


def clean_person_name(name):
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100 or _CONTROL.search(name):
        raise DomainError("validation_failed", "invalid input",
                          {"name": ["Must be 1-100 characters without control characters."]})
    return name.strip()


def check_password(password):
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise DomainError("validation_failed", "invalid input",
                          {"password": ["Must be %d-%d characters." % (MIN_PASSWORD, MAX_PASSWORD)]})


def public_user(account):
    return {"id": account["_id"], "email": account["email"], "name": account["name"],
            "is_superuser": bool(account.get("is_superuser"))}


def _new_account(email, name, password_hash, is_superuser=False):
    return {"_id": str(uuid.uuid4()), "email": email, "name": name, "password_hash": password_hash,
            "is_superuser": is_superuser, "last_org_id": None, "created_at": utcnow()}


def _owner_membership(org_id, user_id):
    return {"_id": "%s:%s" % (org_id, user_id), "org_id": org_id, "user_id": user_id, "role": "admin",
            "is_owner": True, "can_delete_organization": True, "joined_at": utcnow()}


def signup(store, security, create_org, email, password, name, organization_name=None):
    """Create an account, and with ``organization_name`` an organization it owns.

    The organization is created first (idempotently, by an id chosen here) so that a failure there
    leaves no half-made account behind; a concurrent sign-up with the same email can at worst
    leave an organization without members, which never becomes visible to anyone.
    """
    email = normalize_email(email)
    name = clean_person_name(name)
    check_password(password)
    password_hash = security.passwords.hash(password)
    if store.account_by_email(email):
        raise DomainError("email_taken", "an account with this email already exists")
    account = _new_account(email, name, password_hash)
    organization = None
    if organization_name is not None:
        org_id = str(uuid.uuid4())
        organization = create_org(org_id, organization_name,
                                  {"id": account["_id"], "name": name, "email": email})
        account["last_org_id"] = org_id
    if not store.insert_account(account):
        raise DomainError("email_taken", "an account with this email already exists")
    membership = None
    if organization is not None:
        store.save_organization(organization["id"], organization["name"], organization["created_at"])
        membership = _owner_membership(organization["id"], account["_id"])
        store.insert_membership(membership, outbox.pending(
            events.MEMBER_JOINED, organization["id"], user_id=account["_id"], email=email, name=name,
            role="admin", via_invite=False, is_owner=True))
    tokens = _open_session(store, security, account, organization["id"] if organization else None,
                           membership)
    return dict(tokens, user=public_user(account),
                organization=_org_summary(organization, membership) if organization else None)


def signup_with_invite(store, security, email, password, name, invite_token):
    """Sign up straight into the organization an invite is for (invites arrive with their issue)."""
    raise DomainError("not_found", "invite not found")


def _org_summary(organization, membership):
    return {"id": organization["id"], "name": organization["name"], "role": membership["role"],
            "is_owner": membership["is_owner"]}


def login(store, security, email, password, organization_id=None):
    """Same answer for an unknown email and a wrong password, after the same amount of work."""
    try:
        email = normalize_email(email)
    except DomainError:
        email = None
    account = store.account_by_email(email) if email else None
    if not security.passwords.verify(account["password_hash"] if account else None, password or ""):
        raise DomainError("invalid_credentials", "email or password is wrong")
    org_id, membership = _choose_organization(store, account, organization_id)
    if org_id != account.get("last_org_id"):
        store.set_account(account["_id"], {"last_org_id": org_id})
    tokens = _open_session(store, security, account, org_id, membership)
    return dict(tokens, user=public_user(account))


def _choose_organization(store, account, organization_id):
    if organization_id is not None:
        membership = store.membership(organization_id, account["_id"])
        if membership is None:
            raise DomainError("not_a_member", "you are not a member of this organization")
        return organization_id, membership
    if account.get("last_org_id"):
        membership = store.membership(account["last_org_id"], account["_id"])
        if membership is not None:
            return account["last_org_id"], membership
    memberships = store.memberships_of(account["_id"])
    if memberships:
        return memberships[0]["org_id"], memberships[0]
    return None, None


def _open_session(store, security, account, org_id, membership):
    now = utcnow()
    refresh_token = new_secret_token()
    session = {"_id": uuid.uuid4().hex, "user_id": account["_id"], "org_id": org_id,
               "refresh_hash": token_hash(refresh_token), "previous_hashes": [], "created_at": now,
               "expires_at": now + timedelta(seconds=security.refresh_ttl), "revoked_at": None}
    store.insert_session(session)
    return _token_pair(security, account, session, membership, refresh_token)


def _token_pair(security, account, session, membership, refresh_token):
    access_token, expires_in = security.tokens.access_token(
        account["_id"], session["org_id"], membership["role"] if membership else None,
        membership["is_owner"] if membership else False, account.get("is_superuser"), session["_id"])
    return {"access_token": access_token, "refresh_token": refresh_token, "expires_in": expires_in,
            "token_type": "Bearer"}


def refresh(store, security, refresh_token):
    """Rotate the refresh token; a reused (already rotated) token revokes its whole session."""
    if not isinstance(refresh_token, str) or not refresh_token:
        raise DomainError("invalid_token", "refresh token is invalid or expired")
    now = utcnow()
    old_hash, new_token = token_hash(refresh_token), new_secret_token()
    session = store.rotate_refresh(old_hash, token_hash(new_token), now,
                                   now + timedelta(seconds=security.refresh_ttl))
    if session is None:
        reused = store.session_with_previous_hash(old_hash)
        if reused is not None:
            revoke_session(store, reused["_id"], reused["user_id"], reused.get("org_id"))
        raise DomainError("invalid_token", "refresh token is invalid or expired")
    account = store.account(session["user_id"])
    membership = store.membership(session["org_id"], account["_id"]) if session["org_id"] else None
    if account is None or (session["org_id"] and membership is None):
        revoke_session(store, session["_id"], session["user_id"], session["org_id"])
        raise DomainError("invalid_token", "refresh token is invalid or expired")
    return dict(_token_pair(security, account, session, membership, new_token), user=public_user(account))


def revoke_session(store, session_id, user_id, org_id):
    event = outbox.pending(events.ACCESS_REVOKED, org_id, user_id=user_id, session_id=session_id,
                           not_before=int(utcnow().timestamp()) + 1)
    return store.revoke_session(session_id, utcnow(), event)


def logout(store, session_id, user_id, org_id):
    revoke_session(store, session_id, user_id, org_id)
    return {"logged_out": True}


def me(store, user_id, org_id):
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    memberships = store.memberships_of(user_id)
    names = store.organization_names(m["org_id"] for m in memberships)
    organizations = [{"id": m["org_id"], "name": names.get(m["org_id"], ""), "role": m["role"],
                      "is_owner": m["is_owner"]} for m in memberships]
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
    account = _new_account(email, clean_person_name(name), security.passwords.hash(password), True)
    if not store.insert_account(account):  # another replica won the race
        return store.account_by_email(email)["_id"]
    return account["_id"]


def on_organization_renamed(store, event):
    store.rename_organization(event["organization_id"], event["name"], event["occurred_at"])

