"""Flask application factory for the gateway (run by gunicorn: ``gateway.app:create_app()``).

Flask's ``create_app`` + ``init_app`` pattern: the settings are read once (``gateway/settings.py``),
then each part registers itself -- request ids, the RPC pool, the bus listener's lists, metrics,
token checks, the API and console, the error shape (``gateway/errors.py``), headers and CORS
(``gateway/headers.py``). Nothing here connects or starts a thread: the bus listener is started
after gunicorn forks (``gateway/listener.py``), the RPC proxies on first use.
"""
from flask import Flask, jsonify

from common.bus import least_privilege
from gateway import asyncapi, errors, headers, listener, metrics, requestid
from gateway.api import build_openapi
from gateway.auth import KeyRing, TokenVerifier
from gateway.console import register_console
from gateway.edge import Bulkheads, trusted_networks
from gateway.routes import api, register_health
from gateway.routes.bench import enabled as bench_routes_enabled
from gateway.routes.bench import register_bench
from gateway.rpc import RpcPool
from gateway.settings import GatewaySettings


def _called_as_is(func):
    return func


def create_app(overrides=None):
    """The gateway app: ``gateway/config.yml`` with ``overrides`` (by key, e.g. a test's broker)."""
    least_privilege()  # the gateway's broker user declares no exchange and reads only its own replies
    settings = GatewaySettings.from_file(**(overrides or {}))
    app = Flask(__name__)
    # no view or hook is a coroutine: skip Flask's check of every hook and view on every request
    app.ensure_sync = _called_as_is
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    app.extensions["settings"] = settings
    requestid.init_app(app)  # first: every answer, an early one included, carries X-Request-ID

    pool = RpcPool({"AMQP_URI": settings.amqp_uri}, size=settings.rpc_pool_size, timeout=settings.rpc_timeout)
    app.extensions["rpc"] = pool
    revocations = listener.init_app(app, settings, pool)
    app.extensions["bulkheads"] = Bulkheads(settings)
    app.extensions["trusted_proxies"] = trusted_networks(settings.forwarded_allow_ips)
    # counts every answer; GET /metrics on the private port
    metrics.init_app(app, revocations, enabled=settings.metrics_enabled)
    key_files = list(settings.jwt_public_key_files)
    keyring = KeyRing(key_files, fetch=None if key_files else lambda: pool.call("membership", "public_keys"))
    app.extensions["verifier"] = TokenVerifier(keyring, settings.jwt_issuer, revocations)

    app.register_blueprint(api.blueprint, url_prefix="/api/v1")
    register_health(app)
    register_console(app, settings)  # the web console at / (gateway/console/)
    if bench_routes_enabled(settings):  # `make bench` only; never in the OpenAPI document
        register_bench(app)
    openapi = build_openapi(api)

    @app.get("/api/v1/openapi.json")
    def openapi_document():
        return jsonify(openapi)

    asyncapi.init_app(app)  # GET /api/v1/asyncapi.json
    errors.init_app(app)
    headers.init_app(app, settings)
    return app
