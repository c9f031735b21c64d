"""Sessions: login, refresh, switch, logout, password change and the gateways' slow-path check.

A session is one refresh-token family scoped to one organization. Access tokens are short JWTs
carrying the account's and the membership's revocation cut-offs (``revocation.py``).
"""
import uuid
from datetime import timedelta

from common.errors import DomainError
from common.events import utcnow
from services.membership.accounts import public_user
from services.membership.ratelimit import check_login_rate, login_succeeded
from services.membership.revocation import access_revoked, next_cutoff
from services.membership.security import new_secret_token, seal_for, token_hash, unseal_for
from services.membership.validation import check_password, normalize_email


def open_session(store, security, account, org_id, membership, is_owner=False):
    now = utcnow()
    refresh_token = new_secret_token()
    session = {"_id": uuid.uuid4().hex, "user_id": account["_id"], "org_id": org_id,
               "refresh_hash": token_hash(refresh_token), "previous_hashes": [], "created_at": now,
               "expires_at": now + timedelta(seconds=security.refresh_ttl), "revoked_at": None}
    store.insert_session(session)
    return token_pair(security, account, session, membership, is_owner, refresh_token)


def token_pair(security, account, session, membership, is_owner, refresh_token):
    """Sign from ``account`` and ``membership`` as read: their cut-offs go into the token with them."""
    access_token, expires_in = security.tokens.access_token(
        account["_id"], session["org_id"], membership["role"] if membership else None,
        is_owner, account.get("is_superuser"), session["_id"], account.get("tokens_not_before", 0.0),
        membership.get("tokens_not_before", 0.0) if membership else None)
    return {"access_token": access_token, "refresh_token": refresh_token, "expires_in": expires_in,
            "token_type": "Bearer", "user": public_user(account)}


def organization_summary(store, org_id, membership, user_id):
    """The organization a new token is scoped to, as sign-up, login, refresh and switch answer it
    (``None`` for a token scoped to no organization)."""
    if not org_id or membership is None:
        return None
    organization = store.organization(org_id) or {}
    return {"id": org_id, "name": organization.get("name", ""), "role": membership["role"],
            "is_owner": organization.get("owner_user_id") == user_id}


def is_owner_of(store, org_id, user_id):
    """Read *after* the membership: ownership changes bump both memberships' cut-offs after the
    owner is written, so a token carrying the new cut-off also carries the new owner flag."""
    organization = store.organization(org_id) if org_id else None
    return bool(organization and organization.get("owner_user_id") == user_id)


def require_live(store, org_id):
    """Sessions open only into an active organization: 410 from the deletion request on."""
    organization = store.organization(org_id)
    if (organization is not None and organization.get("status", "active") != "active") or (
            organization is None and store.was_purged(org_id)):
        raise DomainError("organization_gone", "organization is being deleted or was deleted")
    return organization


def revoke_session(store, session_id, user_id, org_id):
    return store.revoke_session(session_id, utcnow(), access_revoked(org_id, user_id, session_id))


def login(store, security, settings, email, password, organization_id=None, client_address=None):
    """Same answer for an unknown email and a wrong password, after the same amount of work."""
    try:
        email = normalize_email(email)
    except DomainError:
        email = None
    counted = check_login_rate(store, settings, email, client_address)
    account = store.account_by_email(email) if email else None
    if not security.passwords.verify(account["password_hash"] if account else None, password or ""):
        raise DomainError("invalid_credentials", "email or password is wrong")
    login_succeeded(counted, email)
    org_id, membership = choose_organization(store, account, organization_id)
    if org_id != account.get("last_org_id"):
        store.set_account(account["_id"], {"last_org_id": org_id})
    tokens = open_session(store, security, account, org_id, membership, is_owner_of(store, org_id, account["_id"]))
    return dict(tokens, organization=organization_summary(store, org_id, membership, account["_id"]))


def choose_organization(store, account, organization_id):
    """The requested organization, else the last used one, else the oldest membership."""
    if organization_id is not None:
        membership = store.membership(organization_id, account["_id"])
        require_live(store, organization_id)
        if membership is None:
            raise DomainError("not_a_member", "you are not a member of this organization")
        return organization_id, membership
    if account.get("last_org_id"):
        membership = store.membership(account["last_org_id"], account["_id"])
        if membership is not None and _is_live(store, account["last_org_id"]):
            return account["last_org_id"], membership
    for membership in store.memberships_of(account["_id"]):
        if _is_live(store, membership["org_id"]):
            return membership["org_id"], membership
    return None, None


def _is_live(store, org_id):
    try:
        require_live(store, org_id)
        return True
    except DomainError:
        return False


def switch(store, security, session_id, user_id, organization_id):
    """A new session scoped to another organization; the current session ends."""
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    membership = store.membership(organization_id, user_id)
    require_live(store, organization_id)
    if membership is None:
        raise DomainError("not_a_member", "you are not a member of this organization")
    session = store.session(session_id)
    revoke_session(store, session_id, user_id, session["org_id"] if session else None)
    store.set_account(user_id, {"last_org_id": organization_id})
    tokens = open_session(store, security, account, organization_id, membership,
                          is_owner_of(store, organization_id, user_id))
    organization = store.organization(organization_id) or {}
    return dict(tokens, organization={"id": organization_id, "name": organization.get("name", ""),
                                      "role": membership["role"],
                                      "is_owner": organization.get("owner_user_id") == user_id})


def refresh(store, security, refresh_token):
    """Rotate the refresh token; a reused (already rotated) token revokes its whole session.

    The new pair is signed first and then swapped in with one conditional write that also keeps it
    sealed with the old token (``security.seal_for``). Two tabs presenting the same token at once:
    one swap wins, the other finds the winner's pair and, within ``refresh_grace`` seconds, answers
    it too, so both tabs hold the same pair. A reuse after that window is taken as theft.
    """
    if not isinstance(refresh_token, str) or not refresh_token:
        raise DomainError("invalid_token", "refresh token is invalid or expired")
    now = utcnow()
    old_hash = token_hash(refresh_token)
    session = store.live_session_by_refresh(old_hash, now)
    if session is not None:
        pair = _renewed_pair(store, security, session)
        sealed = seal_for(refresh_token, pair)
        if store.rotate_refresh(old_hash, token_hash(pair["refresh_token"]), now,
                                now + timedelta(seconds=security.refresh_ttl),
                                now + timedelta(seconds=security.refresh_grace), sealed):
            return pair
    reused = store.session_with_previous_hash(old_hash)
    if reused is not None:
        grace = reused.get("grace") or {}
        pair = unseal_for(refresh_token, grace.get("sealed")) if (
            grace.get("hash") == old_hash and reused.get("revoked_at") is None
            and grace.get("until") is not None and grace["until"] > now) else None
        if pair is not None:
            return pair
        revoke_session(store, reused["_id"], reused["user_id"], reused.get("org_id"))
    raise DomainError("invalid_token", "refresh token is invalid or expired")


def _renewed_pair(store, security, session):
    """A new token pair for ``session`` from the account and membership as they are now."""
    account = store.account(session["user_id"])
    org_id = session["org_id"]
    membership = store.membership(org_id, session["user_id"]) if org_id else None
    live = org_id is None or _is_live(store, org_id)
    if account is None or (org_id and membership is None) or not live:
        revoke_session(store, session["_id"], session["user_id"], org_id)
        raise DomainError("invalid_token", "refresh token is invalid or expired")
    pair = token_pair(security, account, session, membership, is_owner_of(store, org_id, account["_id"]),
                      new_secret_token())
    return dict(pair, organization=organization_summary(store, org_id, membership, account["_id"]))


def logout(store, session_id, user_id, org_id):
    revoke_session(store, session_id, user_id, org_id)
    return {"logged_out": True}


def change_password(store, security, session_id, user_id, current_password, new_password, settings=None):
    """Every session of the account ends; the caller gets a fresh one in the same organization.

    Each try of ``current_password`` counts against the per-email login limit: a stolen access
    token must not give unlimited guesses of the password behind it."""
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    check_password(new_password, "new_password")
    counted = check_login_rate(store, settings, account["email"], None)
    if not security.passwords.verify(account["password_hash"], current_password or ""):
        raise DomainError("validation_failed", "invalid input", {"current_password": ["Wrong password."]})
    login_succeeded(counted, account["email"])
    password_hash = security.passwords.hash(new_password)
    # sessions end before the cut-off moves: a refresh that read the account after the move (its
    # token would carry the new cut-off) finds its session revoked when it swaps the refresh hash
    store.revoke_sessions(user_id, utcnow(), all_orgs=True)
    cutoff = next_cutoff(account.get("tokens_not_before"))
    store.set_account(user_id, {"password_hash": password_hash, "tokens_not_before": cutoff},
                      access_revoked(None, user_id, not_before=cutoff))
    session = store.session(session_id)
    org_id = session["org_id"] if session else account.get("last_org_id")
    membership = store.membership(org_id, user_id) if org_id else None
    if membership is None:
        org_id = None
    return open_session(store, security, store.account(user_id), org_id, membership,
                        is_owner_of(store, org_id, user_id))


def check_access(store, claims):
    """The slow path for gateways that may have missed ``access_revoked`` events."""
    session = store.session(claims.get("sid"))
    if session is None or session["revoked_at"] is not None or session["user_id"] != claims.get("sub"):
        return False
    account = store.account(claims["sub"])
    if account is None or claims.get("av", claims["iat"]) < account.get("tokens_not_before", 0):
        return False
    org_id = claims.get("org")
    if org_id:
        membership = store.membership(org_id, claims["sub"])
        organization = store.organization(org_id)
        if membership is None or claims.get("mv", claims["iat"]) < membership.get("tokens_not_before", 0):
            return False
        if organization is None or organization.get("status") != "active":
            return False
    return True
