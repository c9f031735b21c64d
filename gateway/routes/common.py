"""Shared helpers of the route modules."""
from flask import current_app, g, request

from common import context
from gateway.api import Api
from gateway.edge import client_address as _client_address

#: every route module registers its operations here; the OpenAPI document is built from it
api = Api()


def rpc(service, method, *args, **kwargs):
    """One call; the services learn who asks (``common.context``): the events the call causes name
    that person as their actor."""
    claims = getattr(g, "claims", None) or {}
    token = context.bind_actor({"user_id": claims.get("sub"), "is_superuser": claims.get("su")})
    try:
        return current_app.extensions["rpc"].call(service, method, *args, **kwargs)
    finally:
        context.unbind_actor(token)


def actor():
    """Who is asking, as services need it to re-check rights against current data."""
    return {key: g.claims.get(key) for key in ("sub", "org", "role", "su", "owner")}


def client_address():
    """The client's address as the proxy saw it (per-address rate limits): ``gateway/edge.py``."""
    return _client_address(request.environ, request.headers, current_app.extensions["trusted_proxies"])
