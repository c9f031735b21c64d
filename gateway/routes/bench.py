"""Bench-only route (``BENCH_ROUTES=1``): the cost of one authenticated RPC hop, for `make bench`.

``GET /api/v1/_bench/one-hop`` checks the bearer token exactly as every API operation does
(signature, claims, revocation list) and makes one trivial RPC (``org.ping``). It is registered on
its own blueprint, so it never appears in the OpenAPI document, and only when the setting is on:
production config leaves ``BENCH_ROUTES`` empty.
"""
from flask import Blueprint, current_app, jsonify

from gateway.api import bearer_token
from gateway.routes.common import rpc

blueprint = Blueprint("bench", __name__)


@blueprint.get("/one-hop")
def one_hop():
    current_app.extensions["verifier"].verify(bearer_token())
    return jsonify({"answer": rpc("org", "ping")})


def enabled(settings):
    return settings.bench_routes


def register_bench(app):
    app.register_blueprint(blueprint, url_prefix="/api/v1/_bench")
