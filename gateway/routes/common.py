"""Shared helpers of the route modules."""
from flask import current_app, g

from gateway.api import Api

#: every route module registers its operations here; the OpenAPI document is built from it
api = Api()


def rpc(service, method, *args, **kwargs):
    return current_app.extensions["rpc"].call(service, method, *args, **kwargs)


def actor():
    """Who is asking, as services need it to re-check rights against current data."""
    return {key: g.claims.get(key) for key in ("sub", "org", "role", "su", "owner")}
