"""Invitations: create, list, revoke, preview, accept."""
from flask import g

from gateway import schemas as s
from gateway.api import ADMIN, PUBLIC, USER
from gateway.routes.common import actor, api, rpc


@api.route("/organizations/<org_id>/invites", "POST", ADMIN,
           "Invite people by email (one invite each; a repeat keeps a pending invite of the same role)",
           "invites", body=s.InviteRequest, response=s.InvitesCreatedSchema, status=201,
           errors=("409", "410", "429"), idempotent=True)
def create_invites(org_id, body):
    """One invite per email, each mailed; an existing member is skipped (`skipped`). Inviting an email
    again with the same role while its invite is pending keeps that invite (no second mail)."""
    return rpc("membership", "create_invites", org_id, actor(), body["emails"], body["role"], g.idempotency_key)


@api.route("/organizations/<org_id>/invites", "GET", ADMIN, "Pending invites", "invites",
           response=s.InviteListSchema, errors=("410",))
def list_invites(org_id):
    return rpc("membership", "list_invites", org_id, actor())


@api.route("/organizations/<org_id>/invites/<invite_id>", "DELETE", ADMIN, "Revoke a pending invite", "invites",
           response=s.InviteSchema, errors=("410",))
def revoke_invite(org_id, invite_id):
    return rpc("membership", "revoke_invite", org_id, actor(), invite_id)


@api.route("/invites/<token>", "GET", PUBLIC, "Preview an invite", "invites", response=s.InvitePreviewSchema,
           errors=("404",))
def preview_invite(token):
    return rpc("membership", "preview_invite", token)


@api.route("/invites/<token>/accept", "POST", USER, "Accept an invite addressed to the caller's email",
           "invites", response=s.SwitchResponse, errors=("403", "404", "409"))
def accept_invite(token):
    return rpc("membership", "accept_invite", token, g.claims["sub"])
