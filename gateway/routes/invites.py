"""Invitations: create, list, revoke, preview, accept."""
import re

from flask import g, request

from common.errors import DomainError

from gateway import schemas as s
from gateway.api import ADMIN, PUBLIC, USER
from gateway.routes.common import actor, api, rpc


_KEY = re.compile(r"^[!-~]{1,200}$")


def idempotency_key():
    """The optional ``Idempotency-Key`` header: 1-200 visible ASCII characters, else 422."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY.match(key):
        raise DomainError("validation_failed", "invalid input",
                          {"Idempotency-Key": ["Must be 1-200 visible ASCII characters."]})
    return key


@api.route("/organizations/<org_id>/invites", "POST", ADMIN,
           "Invite people by email (one invite each; a repeat keeps a pending invite of the same role)",
           "invites", body=s.InviteRequest, response=s.InvitesCreatedSchema, status=201,
           errors=("409", "410", "429"), headers=("Idempotency-Key",))
def create_invites(org_id, body):
    result = rpc("membership", "create_invites", org_id, actor(), body["emails"], body["role"], idempotency_key())
    return result, {"Idempotent-Replayed": "true"} if result.get("replayed") else {}


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
