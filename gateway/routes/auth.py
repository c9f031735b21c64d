"""Sign-up, login, sessions and the caller."""
from flask import g

from gateway import schemas as s
from gateway.api import PUBLIC, USER
from gateway.routes.common import api, client_address, rpc


@api.route("/auth/signup", "POST", PUBLIC, "Create an account (optionally with an organization)", "auth",
           body=s.SignupRequest, response=s.SignupResponse, status=201, errors=("403", "404", "409", "429"),
           bulkhead="hashing", idempotent=True)
def signup(body):
    """With `organization_name` the account owns a new organization; with `invite_token` it joins the
    inviting organization (the invite's email must match). Rate limited per client address. A replay
    (same key, same email, name, organization name or invite, and password) answers the same account
    and organization with a fresh token pair."""
    if body.get("invite_token"):
        return rpc("membership", "signup_with_invite", body["email"], body["password"], body["name"],
                   body["invite_token"], client_address(), g.idempotency_key)
    return rpc("membership", "signup", body["email"], body["password"], body["name"],
               body.get("organization_name"), client_address(), g.idempotency_key)


@api.route("/auth/login", "POST", PUBLIC, "Log in; the token is scoped to an organization", "auth",
           body=s.LoginRequest, response=s.ScopedTokenPairSchema, errors=("401", "403", "410", "429"),
           bulkhead="hashing")
def login(body):
    return rpc("membership", "login", body["email"], body["password"], body.get("organization_id"),
               client_address())


@api.route("/auth/refresh", "POST", PUBLIC, "Rotate the refresh token, get a new access token", "auth",
           body=s.RefreshRequest, response=s.ScopedTokenPairSchema, errors=("401",))
def refresh(body):
    return rpc("membership", "refresh", body["refresh_token"])


@api.route("/auth/logout", "POST", USER, "Revoke the current session", "auth", response=s.LogoutResponse)
def logout():
    return rpc("membership", "logout", g.claims["sid"], g.claims["sub"], g.claims.get("org"))


@api.route("/auth/switch", "POST", USER, "Switch to another organization: new token pair, old session ends",
           "auth", body=s.SwitchRequest, response=s.SwitchResponse, errors=("403", "410"))
def switch(body):
    return rpc("membership", "switch", g.claims["sid"], g.claims["sub"], body["organization_id"])


@api.route("/auth/password", "POST", USER, "Change the password; every other session ends", "auth",
           body=s.PasswordChangeRequest, response=s.TokenPairSchema, errors=("429",), bulkhead="hashing")
def change_password(body):
    return rpc("membership", "change_password", g.claims["sid"], g.claims["sub"], body["current_password"],
               body["new_password"])


@api.route("/me", "DELETE", USER, "Delete one's own account (password confirmation)", "auth",
           body=s.DeleteAccountRequest, response=s.AccountDeletedSchema, errors=("409", "429"), bulkhead="hashing")
def delete_me(body):
    """Refused with 409 while the caller owns an organization (`details.organizations` lists them):
    transfer ownership or delete the organization first. Otherwise the caller leaves every
    organization, every session and token of the account ends at once, the account and what every
    service holds of the person are deleted, and `account_deleted` is published. The email can
    sign up again afterwards."""
    return rpc("membership", "delete_account", g.claims["sub"], body["password"])


@api.route("/me", "GET", USER, "The caller, the token's organization and all their organizations", "auth",
           response=s.MeSchema)
def me():
    return rpc("membership", "me", g.claims["sub"], g.claims.get("org"))
