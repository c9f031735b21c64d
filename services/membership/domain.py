"""Accounts, sign-up, login, sessions and revocation.

A session is one refresh-token family scoped to one organization. Access tokens are short JWTs;
whatever voids them (logout, switch, removal, role change, password change...) publishes
``access_revoked`` so that every gateway rejects them at once, without asking us per request.
"""
import re
import time
import uuid
from datetime import timedelta

from common import events, outbox
from common.errors import DomainError
from common.events import utcnow
from services.membership.security import new_secret_token, seal_for, token_hash, unseal_for

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


def check_password(password, field="password"):
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise DomainError("validation_failed", "invalid input",
                          {field: ["Must be %d-%d characters." % (MIN_PASSWORD, MAX_PASSWORD)]})


def public_user(account):
    return {"id": account["_id"], "email": account["email"], "name": account["name"],
            "is_superuser": bool(account.get("is_superuser"))}


def new_account(email, name, password_hash, is_superuser=False):
    return {"_id": str(uuid.uuid4()), "email": email, "name": name, "password_hash": password_hash,
            "is_superuser": is_superuser, "last_org_id": None, "tokens_not_before": 0.0,
            "created_at": utcnow()}


def now_seconds():
    return round(time.time(), 3)


def next_cutoff(previous):
    """A revocation cut-off for a document whose current one is ``previous``: now, and always later.

    The cut-off is written into the account or membership together with the change and published
    as the ``access_revoked`` event's ``not_before``; tokens carry the cut-off they were issued
    under (``av``/``mv``), so it must grow strictly with every change.
    """
    return max(now_seconds(), round(float(previous or 0.0) + 0.001, 3))


def access_revoked(org_id=None, user_id=None, session_id=None, not_before=None):
    """An ``access_revoked`` outbox entry.

    With ``user_id``, ``not_before`` is the cut-off written into the account (no ``org_id``) or
    the membership, and voids tokens issued under an older one. With ``org_id`` alone it voids every
    token of that organization (it is being deleted). With ``session_id``, that session's tokens.
    """
    return outbox.pending(events.ACCESS_REVOKED, org_id, user_id=user_id, session_id=session_id,
                          not_before=now_seconds() if not_before is None else not_before)


# -- sessions ----------------------------------------------------------------------------------

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


# -- sign-up and login -------------------------------------------------------------------------

def signup(store, security, create_org, email, password, name, organization_name=None, config=None,
           client_address=None, idempotency_key=None):
    """Create an account, and with ``organization_name`` an organization it owns.

    The organization is created first (idempotently, by an id chosen here) so that a failure there
    leaves no half-made account behind. Rate limited per client address; a taken email is refused
    before the password is hashed (the 409 says it is taken anyway, so hashing first hid nothing
    and made every such request cost a hash). With an ``idempotency_key`` the account and the
    organization get the ids the first request with that key chose (``idempotency.claim``), so a
    retry after a timeout finds what the first one wrote and finishes like it.
    """
    from services.membership import idempotency, members

    email = normalize_email(email)
    name = clean_person_name(name)
    check_password(password)
    check_signup_rate(store, config or {}, client_address)
    ids, replayed = idempotency.claim(store, config or {}, "signup:" + email, idempotency_key,
                                      {"name": name, "organization_name": organization_name},
                                      {"account_id": str(uuid.uuid4()), "org_id": str(uuid.uuid4())})
    account = replayed_account(store, security, email, password, ids, idempotency_key)
    stored = account is not None
    if not stored:
        account = new_account(email, name, security.passwords.hash(password))
        account["_id"] = ids["account_id"]
    organization = None
    if organization_name is not None:
        organization = members.create_remote_organization(create_org, organization_name, account, ids["org_id"])
        account["last_org_id"] = organization["id"]
    if not stored and not store.insert_account(account):
        account = replayed_account(store, security, email, password, ids, idempotency_key)
        if account is None:
            raise DomainError("email_taken", "an account with this email already exists")
        stored = True  # the first request with this key inserted it a moment ago
    membership = None
    if organization is not None:
        membership = members.record_new_organization(store, organization, account)
    tokens = open_session(store, security, account, organization["id"] if organization else None,
                          membership, is_owner=organization is not None)
    summary = None
    if organization is not None:
        summary = {"id": organization["id"], "name": organization["name"], "role": "admin", "is_owner": True}
    # a replay only if the first request with this key got as far as the account (else this one made it)
    return dict(tokens, organization=summary, replayed=replayed and stored)


def replayed_account(store, security, email, password, ids, idempotency_key):
    """The account of ``email`` if a request with the same ``Idempotency-Key`` created it (it must
    then have the same password), None if there is none yet; any other account is a 409."""
    existing = store.account_by_email(email)
    if existing is None:
        return None
    if idempotency_key is None or existing["_id"] != ids["account_id"]:
        raise DomainError("email_taken", "an account with this email already exists")
    from services.membership import idempotency
    if not security.passwords.verify(existing["password_hash"], password):
        raise idempotency.reused_with_other_parameters()
    return existing


class Counted:
    """What :func:`rate_limit` counted, so that a caller can give it back (:meth:`refund`)."""

    def __init__(self, store, start, expires, amount):
        self.store, self.start, self.expires, self.amount = store, start, expires, amount
        self.keys = []

    def refund(self, *keys):
        """Take back this request's count on ``keys`` (all counted keys if none are named)."""
        for key in keys or list(self.keys):
            if key in self.keys:
                self.store.count_attempt(key, self.start, self.expires, -self.amount)
                self.keys.remove(key)


def rate_limit(store, counters, window, message, amount=1, refund_refused=False):
    """Fixed-window counters in the database, so every replica enforces the same limit.

    ``counters`` is ``[(key, limit)]``, counted in that order; the first one over its limit
    refuses (429 + ``Retry-After``) and the keys after it are not counted at all: a refused
    request costs the key that refused it -- the attacker's address, say -- and nobody else. With
    ``refund_refused`` a refused request gives back what it counted (a batch that does not fit
    must not use up what is left of the window). Returns a :class:`Counted`.
    """
    now = time.time()
    start = int(now // window * window)
    counted = Counted(store, start, utcnow() + timedelta(seconds=2 * window), amount)
    for key, limit in counters:
        counted.keys.append(key)
        if store.count_attempt(key, start, counted.expires, amount) > limit:
            if refund_refused:
                counted.refund()
            raise DomainError("rate_limited", message, {"retry_after": max(1, int(start + window - now) + 1)})
    return counted


def check_login_rate(store, config, email, client_address):
    """Per address first, then per email. An attempt the address limit refuses does not count
    against the email: otherwise anyone could lock a victim out for free, from an address that is
    itself already refused."""
    limits = []
    if client_address:
        limits.append(("addr:" + client_address, int(config.get("LOGIN_LIMIT_PER_ADDRESS") or 60)))
    if email:
        limits.append(("email:" + email, int(config.get("LOGIN_LIMIT_PER_EMAIL") or 10)))
    return rate_limit(store, limits, int(config.get("LOGIN_LIMIT_WINDOW") or 60),
                      "too many login attempts, try again later")


def login_succeeded(counted, email):
    """A right password gives its count on the email back: the per-email limit is there against
    guessing, and should not lock out someone who simply logs in often (every tab, every device)."""
    if email:
        counted.refund("email:" + email)


def check_signup_rate(store, config, client_address):
    """Every sign-up costs a password hash (and may store an account): bounded per address."""
    if not client_address:
        return None
    return rate_limit(store, [("signup-addr:" + client_address,
                               int(config.get("SIGNUP_LIMIT_PER_ADDRESS") or 20))],
                      int(config.get("SIGNUP_LIMIT_WINDOW") or 600), "too many sign-ups, try again later")


def login(store, security, config, email, password, organization_id=None, client_address=None):
    """Same answer for an unknown email and a wrong password, after the same amount of work."""
    try:
        email = normalize_email(email)
    except DomainError:
        email = None
    counted = check_login_rate(store, config, email, client_address)
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


def change_password(store, security, session_id, user_id, current_password, new_password, config=None):
    """Every session of the account ends; the caller gets a fresh one in the same organization.

    Each try of ``current_password`` counts against the per-email login limit: a stolen access
    token must not give unlimited guesses of the password behind it."""
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    check_password(new_password, "new_password")
    counted = check_login_rate(store, config or {}, account["email"], None)
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
