"""The membership side of deleting an organization: who may ask, the purge, the export."""
from common import purge as purge_protocol
from common.errors import DomainError
from common.events import isoformat
from common.organizations import require_active
from services.membership import members
from services.membership.invites import invite_view
from services.membership.revocation import access_revoked


def request(store, request_deletion, org_id, actor, confirm_name):
    """The owner, or an admin holding ``can_delete_organization``, may delete the organization."""
    organization = require_active(store, org_id)
    membership = store.membership(org_id, actor["sub"])
    is_owner = organization.get("owner_user_id") == actor["sub"]
    allowed = membership is not None and (is_owner or (
        membership["role"] == "admin" and membership.get("can_delete_organization")))
    if not allowed:
        raise DomainError("forbidden", "only the owner or an admin holding the deletion right may do this")
    status = request_deletion(org_id, actor["sub"], confirm_name)
    # From the 202 on every membership call about it answers 410, and no login, refresh or switch
    # opens a session into it: mark our copy now rather than when the announcement arrives (the
    # purge does it again, idempotently). The request waits for this write.
    store.set_organization_status(org_id, "deleting", access_revoked(org_id))
    return status


def purge(store, event):
    """Tokens die first (org-wide ``access_revoked``), then the purge protocol (``common.purge``)
    deletes invites, memberships and sessions, accounts left without any organization, and clears
    last-used pointers to it (``MembershipStore.purge_organization``)."""
    org_id = event["organization_id"]
    store.set_organization_status(org_id, "deleting", access_revoked(org_id))
    return purge_protocol.purge(store, "membership", org_id)


def export(store, org_id):
    organization = require_active(store, org_id)
    accounts = store.accounts(m["user_id"] for m in store.org_memberships(org_id))
    return {
        "members": [dict(members.member_view(m, organization),
                         account_created_at=isoformat(accounts.get(m["user_id"], {}).get("created_at")))
                    for m in store.org_memberships(org_id)],
        "invites": [invite_view(invite) for invite in store.export_invites(org_id)],
    }

