"""What every answer carries and what every request target must respect: security headers, CORS for
``CORS_ALLOWED_ORIGINS`` only, and the request target's length (``MAX_URL_BYTES``, 414 in the
error shape). ``init_app(app, settings)`` sets them up.

The security headers and the target limit are applied by the WSGI middleware (``gateway/wsgi.py``):
constant header tuples appended to every answer that lacks them, no Flask hook and no werkzeug
header validation per request. CORS depends on the request's ``Origin`` and merges into ``Vary``
and the preflight's ``Allow``, so it stays an ``after_request`` hook, registered only when origins
are configured.
"""
import json

from flask import request

from gateway import wsgi
from gateway.errors import error_document

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# CORS (only for CORS_ALLOWED_ORIGINS): bearer tokens, no cookies, so no Allow-Credentials
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
CORS_EXPOSE_HEADERS = "Location, Retry-After, Idempotent-Replayed, X-Request-ID"
CORS_MAX_AGE = 600


def init_app(app, settings):
    edge = wsgi.install(app)
    edge.add_headers(SECURITY_HEADERS)  # those the answer lacks (the console's pages set some of their own)
    edge.max_target, edge.too_long = settings.max_url_bytes, _too_long(settings.max_url_bytes)
    allowed_origins = set(settings.cors_allowed_origins)
    if not allowed_origins:
        return

    @app.after_request
    def cors(response):
        response.vary.add("Origin")  # answers differ per origin: caches must keep them apart
        origin = request.headers.get("Origin")
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


def _too_long(max_url_bytes):
    """The answer to a request target over ``MAX_URL_BYTES``: 414 in the error shape, made by the
    middleware before Flask parses the target (the middleware adds the request id and headers; as
    no Flask hook runs, it carries no CORS headers)."""
    document = error_document("uri_too_long", f"the request target is longer than {max_url_bytes} bytes")
    data = (json.dumps(document, separators=(",", ":")) + "\n").encode()

    def answer(environ, start_response):
        start_response("414 Request-URI Too Long", [("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(data)))])
        return [data]
    return answer
