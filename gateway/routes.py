"""The HTTP API: thin views that check access (declared), call one service, shape the answer."""
from flask import current_app, g, jsonify, request

from gateway import schemas as s
from common.events import isoformat
from gateway.api import ADMIN, MEMBER, OWNER, PUBLIC, SUPERUSER, USER, Api

api = Api()


def rpc(service, method, *args, **kwargs):
    return current_app.extensions["rpc"].call(service, method, *args, **kwargs)


def actor():
    """Who is asking, as services need it to re-check rights against current data."""
    return {key: g.claims.get(key) for key in ("sub", "org", "role", "su", "owner")}


# -- auth ------------------------------------------------------------------------------------

@api.route("/auth/signup", "POST", PUBLIC, "Create an account (optionally with an organization)", "auth",
           body=s.SignupRequest, response=s.SignupResponse, status=201, errors=("409",))
def signup(body):
    if body.get("invite_token"):
        return rpc("membership", "signup_with_invite", body["email"], body["password"], body["name"],
                   body["invite_token"])
    return rpc("membership", "signup", body["email"], body["password"], body["name"],
               body.get("organization_name"))


@api.route("/auth/login", "POST", PUBLIC, "Log in; the token is scoped to an organization", "auth",
           body=s.LoginRequest, response=s.TokenPairSchema, errors=("401", "403", "429"))
def login(body):
    return rpc("membership", "login", body["email"], body["password"], body.get("organization_id"),
               request.remote_addr)


@api.route("/auth/refresh", "POST", PUBLIC, "Rotate the refresh token, get a new access token", "auth",
           body=s.RefreshRequest, response=s.TokenPairSchema, errors=("401",))
def refresh(body):
    return rpc("membership", "refresh", body["refresh_token"])


@api.route("/auth/logout", "POST", USER, "Revoke the current session", "auth", response=s.LogoutResponse)
def logout():
    return rpc("membership", "logout", g.claims["sid"], g.claims["sub"], g.claims.get("org"))


@api.route("/auth/switch", "POST", USER, "Switch to another organization: new token pair, old session ends",
           "auth", body=s.SwitchRequest, response=s.SwitchResponse)
def switch(body):
    return rpc("membership", "switch", g.claims["sid"], g.claims["sub"], body["organization_id"])


@api.route("/auth/password", "POST", USER, "Change the password; every other session ends", "auth",
           body=s.PasswordChangeRequest, response=s.TokenPairSchema)
def change_password(body):
    return rpc("membership", "change_password", g.claims["sid"], g.claims["sub"], body["current_password"],
               body["new_password"])


@api.route("/me", "GET", USER, "The caller, the token's organization and all their organizations", "auth",
           response=s.MeSchema)
def me():
    return rpc("membership", "me", g.claims["sub"], g.claims.get("org"))


# -- organizations ---------------------------------------------------------------------------

@api.route("/organizations", "POST", USER, "Create an organization; the caller becomes its owner",
           "organizations", body=s.CreateOrganizationRequest, response=s.OrganizationOverviewSchema, status=201)
def create_organization(body):
    return rpc("membership", "create_organization", g.claims["sub"], body["name"])


@api.route("/organizations", "GET", USER, "The caller's organizations", "organizations",
           response=s.OrganizationListSchema)
def list_organizations():
    return {"items": rpc("membership", "list_organizations", g.claims["sub"])}


@api.route("/organizations/<org_id>", "GET", MEMBER, "Organization overview", "organizations",
           response=s.OrganizationOverviewSchema, errors=("410",))
def get_organization(org_id):
    return rpc("org", "get_overview", org_id)


@api.route("/organizations/<org_id>", "PATCH", ADMIN, "Rename the organization", "organizations",
           body=s.RenameOrganizationRequest, response=s.OrganizationOverviewSchema, errors=("410",))
def rename_organization(org_id, body):
    return rpc("org", "rename", org_id, body["name"])


@api.route("/organizations/<org_id>/plan", "PUT", SUPERUSER, "Set the plan (platform operators)", "organizations",
           body=s.PlanRequest, response=s.OrganizationOverviewSchema, errors=("410",))
def set_plan(org_id, body):
    plan = dict(body, paid_until=isoformat(body["paid_until"]) if body["paid_until"] else None)
    return rpc("org", "set_plan", org_id, plan, g.claims["sub"])


# -- members ---------------------------------------------------------------------------------

@api.route("/organizations/<org_id>/members", "GET", MEMBER, "Members, cursor-paginated, searchable", "members",
           query=s.MemberQuery, response=s.MemberPageSchema, errors=("410",))
def list_members(org_id, query):
    return rpc("membership", "list_members", org_id, query["limit"], query["cursor"], query["q"])


@api.route("/organizations/<org_id>/members/<user_id>", "PATCH", ADMIN,
           "Change a member's role or deletion right (the right: owner only)", "members",
           body=s.MemberUpdateRequest, response=s.MemberSchema, errors=("409", "410"))
def change_member(org_id, user_id, body):
    return rpc("membership", "change_member", org_id, actor(), user_id, body.get("role"),
               body.get("can_delete_organization"))


@api.route("/organizations/<org_id>/members/<user_id>", "DELETE", MEMBER,
           "Remove a member (admin) or leave (the member itself)", "members", response=s.RemovedSchema,
           errors=("409", "410"))
def remove_member(org_id, user_id):
    return rpc("membership", "remove_member", org_id, actor(), user_id)


@api.route("/organizations/<org_id>/ownership", "POST", OWNER, "Transfer ownership to another admin", "members",
           body=s.OwnershipRequest, response=s.OwnershipSchema, errors=("409", "410"))
def transfer_ownership(org_id, body):
    return rpc("membership", "transfer_ownership", org_id, actor(), body["user_id"])


# -- invites ---------------------------------------------------------------------------------

@api.route("/organizations/<org_id>/invites", "POST", ADMIN, "Invite people by email (one invite each)",
           "invites", body=s.InviteRequest, response=s.InvitesCreatedSchema, status=201, errors=("410",))
def create_invites(org_id, body):
    return rpc("membership", "create_invites", org_id, actor(), body["emails"], body["role"])


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


# -- health ----------------------------------------------------------------------------------

def register_health(app):
    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        checks = {}
        for service in ("org", "membership", "notifications", "usage"):
            try:
                checks[service] = "ok" if rpc(service, "ping") == "pong" else "unexpected answer"
            except Exception as error:  # any failure means "not ready"; say which
                checks[service] = "unavailable: %s" % type(error).__name__
        ready = all(value == "ok" for value in checks.values())
        return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), 200 if ready else 503
