"""Deleting one's own account (``DELETE /me``).

Refused (409) while the person owns an organization: ownership must move first (or the
organization be deleted), since an organization never stays without an owner. Otherwise, in this
order, so that a crash anywhere leaves an account its owner can log into and delete again:
every session ends and the account's cut-off moves (``access_revoked``: every token dies at every
gateway), the person leaves each organization (``member_left``, reason ``left``, seat released),
what this service holds of them goes (sessions, idempotency records, login counters), and the
account is deleted by the outbox once ``account_deleted`` is published. Other services purge what
they hold of the person on that event.
"""
from common import events, outbox
from common.errors import DomainError
from common.events import utcnow
from services.membership import domain


def delete_account(store, security, user_id, password, config=None):
    account = store.account(user_id)
    if account is None:
        raise DomainError("invalid_token", "account no longer exists")
    counted = domain.check_login_rate(store, config or {}, account["email"], None)
    if not security.passwords.verify(account["password_hash"], password or ""):
        raise DomainError("validation_failed", "invalid input", {"password": ["Wrong password."]})
    domain.login_succeeded(counted, account["email"])
    memberships = store.memberships_of(user_id)
    organizations = store.organizations(m["org_id"] for m in memberships)
    owned = sorted(org_id for org_id, org in organizations.items()
                   if org.get("owner_user_id") == user_id and org.get("status", "active") == "active")
    if owned:
        raise DomainError("conflict", "you own organizations: transfer their ownership or delete them first",
                          {"organizations": owned})
    store.revoke_sessions(user_id, utcnow(), all_orgs=True)
    cutoff = domain.next_cutoff(account.get("tokens_not_before"))
    store.set_account(user_id, {"tokens_not_before": cutoff, "last_org_id": None},
                      domain.access_revoked(None, user_id, not_before=cutoff))
    left = []
    for membership in memberships:
        org_id = membership["org_id"]
        if organizations.get(org_id, {}).get("status", "active") != "active":
            continue  # being deleted: its purge removes the membership
        count = store.release_seat(org_id)
        if store.remove_membership(org_id, user_id,
                                   outbox.pending(events.MEMBER_LEFT, org_id, user_id=user_id, reason="left",
                                                  member_count=count),
                                   domain.access_revoked(org_id, user_id,
                                                         not_before=domain.next_cutoff(
                                                             membership.get("tokens_not_before")))):
            left.append(org_id)
        else:
            store.claim_seat(org_id, None)  # removed concurrently: give the seat back
    store.forget_person(user_id, account["email"])
    store.delete_account_after_publish(
        user_id, outbox.pending(events.ACCOUNT_DELETED, None, user_id=user_id, email=account["email"],
                                organizations_left=left))
    return {"deleted": True, "user_id": user_id, "organizations_left": left}
