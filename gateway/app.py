"""Flask application factory for the gateway (run by gunicorn: ``gateway.app:create_app()``)."""
import logging
import os

from flask import Flask, jsonify, request
from nameko.exceptions import RemoteError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from common.bus import least_privilege
from common.config import load_config
from common.errors import STATUS_BY_CODE, DomainError
from gateway.api import build_openapi
from gateway.auth import KeyRing, TokenVerifier
from gateway.console import register_console
from gateway.deletions import GoneOrganizations
from gateway import asyncapi, metrics, requestid
from gateway.edge import Bulkheads, trusted_networks
from gateway.readmodel import OverviewCache, shared_stamps
from gateway.revocations import RevocationList, revocation_listener
from gateway.routes import api, register_health
from gateway.routes.bench import enabled as bench_routes_enabled, register_bench
from gateway.rpc import RpcPool, ServiceUnavailable

log = logging.getLogger("gateway")
CONFIG_FILE = os.path.join(os.path.dirname(__file__), "config.yml")
_CODE_BY_STATUS = {400: "malformed_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                   405: "method_not_allowed", 409: "conflict", 410: "organization_gone",
                   413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_failed", 429: "rate_limited"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_SECURITY_ITEMS = tuple((name.lower(), name, value) for name, value in SECURITY_HEADERS.items())
# CORS (only for CORS_ALLOWED_ORIGINS): bearer tokens, no cookies, so no Allow-Credentials
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
CORS_EXPOSE_HEADERS = "Location, Retry-After, Idempotent-Replayed, X-Request-ID"
CORS_MAX_AGE = 600


def _called_as_is(func):
    return func


def error_response(code, message, details=None, status=None, headers=None):
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return jsonify(body), status or STATUS_BY_CODE[code], headers or {}


def create_app(config=None):
    least_privilege()  # the gateway's broker user declares no exchange and reads only its own replies
    # ``config`` (tests) overrides config.yml, which holds every default
    config = dict(load_config(CONFIG_FILE), **(config or {}))
    app = Flask(__name__)
    # no view or hook is a coroutine: skip Flask's check of every hook and view on every request
    app.ensure_sync = _called_as_is
    app.config["MAX_CONTENT_LENGTH"] = int(config.get("MAX_REQUEST_BYTES") or 1048576)
    max_url_bytes = int(config.get("MAX_URL_BYTES") or 16384)
    app.json.sort_keys = False
    requestid.init_app(app)  # first: every answer, an early one included, carries X-Request-ID

    pool = RpcPool(config, size=config.get("RPC_POOL_SIZE") or 8, timeout=config.get("RPC_TIMEOUT") or 5)
    key_files = [p.strip() for p in str(config.get("JWT_PUBLIC_KEY_FILES") or "").split(",") if p.strip()]
    keyring = KeyRing(key_files, fetch=None if key_files else lambda: pool.call("membership", "public_keys"))
    revocations = RevocationList(lambda claims: pool.call("membership", "check_access", claims))
    gone = GoneOrganizations(enabled=str(config.get("GATEWAY_FAULT_NO_DELETION_LIST") or "").strip().lower()
                             not in ("1", "true", "yes"))
    overviews = OverviewCache(shared_stamps(), max_age=float(config["OVERVIEW_CACHE_SECONDS"]),
                              observe=metrics.observe_overview)
    # one listener feeds all three: the revocation list, the organizations being deleted, the overviews
    consumer = revocation_listener(config["AMQP_URI"], revocations, gone.add, overviews)
    consumer.start()
    app.extensions["gone_organizations"] = gone
    app.extensions["overviews"] = overviews
    app.extensions["rpc"] = pool
    app.extensions["bulkheads"] = Bulkheads(config)
    app.extensions["trusted_proxies"] = trusted_networks(config.get("FORWARDED_ALLOW_IPS"))
    app.extensions["revocation_consumer"] = consumer
    # counts every answer; GET /metrics on the private port
    metrics.init_app(app, revocations, enabled=str(config.get("METRICS_ENABLED")).strip() not in ("0", "false", ""))
    app.extensions["verifier"] = TokenVerifier(keyring, config.get("JWT_ISSUER") or "orgplatform", revocations)
    allowed_origins = {o.strip() for o in str(config.get("CORS_ALLOWED_ORIGINS") or "").split(",") if o.strip()}

    app.register_blueprint(api.blueprint, url_prefix="/api/v1")
    register_health(app)
    register_console(app, config)  # the web console at / (gateway/console/)
    if bench_routes_enabled(config):  # `make bench` only; never in the OpenAPI document
        register_bench(app)
    openapi = build_openapi(api)

    @app.get("/api/v1/openapi.json")
    def openapi_document():
        return jsonify(openapi)

    asyncapi.init_app(app)  # GET /api/v1/asyncapi.json

    @app.errorhandler(DomainError)
    def domain_error(error):
        headers = {}
        if error.code in ("rate_limited", "service_unavailable") or "retry_after" in error.details:
            headers["Retry-After"] = str(error.details.get("retry_after", 1))
        return error_response(error.code, error.message, error.details, headers=headers)

    @app.errorhandler(ServiceUnavailable)
    def unavailable(error):
        log.warning("%s", error)
        return error_response("service_unavailable", "%s service is unavailable, try again shortly"
                              % error.service, {"service": error.service}, headers={"Retry-After": "1"})

    @app.errorhandler(RemoteError)
    def remote_error(error):
        log.error("service error: %s", error)
        return error_response("internal_error", "internal error")

    @app.errorhandler(HTTPException)
    def http_error(error):
        code = _CODE_BY_STATUS.get(error.code, "malformed_request" if error.code < 500 else "internal_error")
        headers = {}
        if isinstance(error, MethodNotAllowed) and error.valid_methods:  # 405 says what is allowed
            headers["Allow"] = ", ".join(sorted(set(error.valid_methods)))
        return error_response(code, error.description or error.name, status=error.code, headers=headers)

    @app.errorhandler(Exception)
    def unexpected(error):
        log.exception("unhandled error")
        return error_response("internal_error", "internal error")

    @app.before_request
    def target_length():
        target = request.environ.get("RAW_URI") or request.full_path
        if len(target) > max_url_bytes:
            return error_response("uri_too_long", "the request target is longer than %d bytes" % max_url_bytes)

    @app.after_request
    def headers(response):
        # those the answer lacks (the console's pages set their own CSP, caching and referrer policy)
        present = {name.lower() for name in response.headers.keys()}
        response.headers.extend([(name, value) for lower, name, value in _SECURITY_ITEMS if lower not in present])
        origin = request.headers.get("Origin")
        if allowed_origins:
            response.vary.add("Origin")  # answers differ per origin: caches must keep them apart
        if origin and origin in allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
                # preflight: the route's methods (Flask's automatic OPTIONS answer lists them)
                response.headers["Access-Control-Allow-Methods"] = response.headers.get("Allow", "")
                response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE)
            else:
                response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        return response

    return app
