"""Sign-up: an account, and with an organization name an organization it owns and a session.

Composes the roles below it (validation, rate limits, idempotency, accounts, members, sessions);
nothing imports this module but the service.
"""
import uuid

from common.errors import DomainError
from services.membership import idempotency, members
from services.membership.accounts import new_account, replayed_account
from services.membership.ratelimit import check_signup_rate
from services.membership.sessions import open_session
from services.membership.validation import check_password, clean_person_name, normalize_email


def signup(store, security, create_org, email, password, name, organization_name=None, settings=None,
           client_address=None, idempotency_key=None):
    """Create an account, and with ``organization_name`` an organization it owns.

    The organization is created first (idempotently, by an id chosen here) so that a failure there
    leaves no half-made account behind. Rate limited per client address; a taken email is refused
    before the password is hashed (the 409 says it is taken anyway, so hashing first hid nothing
    and made every such request cost a hash). With an ``idempotency_key`` the account and the
    organization get the ids the first request with that key chose (``idempotency.claim``), so a
    retry after a timeout finds what the first one wrote and finishes like it.
    """
    email = normalize_email(email)
    name = clean_person_name(name)
    check_password(password)
    check_signup_rate(store, settings, client_address)
    ids, replayed = idempotency.claim(store, settings, "signup:" + email, idempotency_key,
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
