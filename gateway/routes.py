"""The HTTP API: thin views that check access (declared), call one service, shape the answer."""
from flask import current_app, g, jsonify

from gateway import schemas as s
from gateway.api import ADMIN, MEMBER, PUBLIC, USER, Api

api = Api()


def rpc(service, method, *args, **kwargs):
    return current_app.extensions["rpc"].call(service, method, *args, **kwargs)


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
    return rpc("membership", "login", body["email"], body["password"], body.get("organization_id"))


@api.route("/auth/refresh", "POST", PUBLIC, "Rotate the refresh token, get a new access token", "auth",
           body=s.RefreshRequest, response=s.TokenPairSchema, errors=("401",))
def refresh(body):
    return rpc("membership", "refresh", body["refresh_token"])


@api.route("/auth/logout", "POST", USER, "Revoke the current session", "auth", response=s.LogoutResponse)
def logout():
    return rpc("membership", "logout", g.claims["sid"], g.claims["sub"], g.claims.get("org"))


@api.route("/me", "GET", USER, "The caller, the token's organization and all their organizations", "auth",
           response=s.MeSchema)
def me():
    return rpc("membership", "me", g.claims["sub"], g.claims.get("org"))


# -- organizations ---------------------------------------------------------------------------

@api.route("/organizations/<org_id>", "GET", MEMBER, "Organization overview", "organizations",
           response=s.OrganizationOverviewSchema, errors=("410",))
def get_organization(org_id):
    return rpc("org", "get_overview", org_id)


@api.route("/organizations/<org_id>", "PATCH", ADMIN, "Rename the organization", "organizations",
           body=s.RenameOrganizationRequest, response=s.OrganizationOverviewSchema, errors=("410",))
def rename_organization(org_id, body):
    return rpc("org", "rename", org_id, body["name"])


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
