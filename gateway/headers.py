"""What every answer carries and what every request target must respect: security headers, CORS for
``CORS_ALLOWED_ORIGINS`` only, and the request target's length (``MAX_URL_BYTES``, 414 in the
error shape). ``init_app(app, settings)`` sets them up.

All of it is applied by the WSGI middleware (``gateway/wsgi.py``) to the answer's header list:
constant header tuples appended to every answer that lacks them, CORS from the environ's
``Origin``, no Flask hook and no werkzeug header validation per request.
"""
import json

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
    allowed_origins = frozenset(settings.cors_allowed_origins)
    if allowed_origins:
        edge.cors = _cors(allowed_origins)


def _cors(allowed_origins):
    """CORS for ``allowed_origins``, applied to an answer's WSGI header list: ``Vary: Origin`` on
    every answer (answers differ per origin: caches must keep them apart), and for an allowed
    ``Origin`` the allow-origin header with either the preflight's answer (the route's methods, as
    Flask's automatic ``OPTIONS`` answer lists them in ``Allow``) or the exposed headers. The
    ``Origin`` echoed is one of the configured origins, never other client text."""
    preflight_headers = [("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS),
                         ("Access-Control-Max-Age", str(CORS_MAX_AGE))]
    expose = ("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)

    def cors(environ, headers):
        allow = None
        for index, (name, value) in enumerate(headers):
            lower = name.lower()
            if lower == "vary":
                if "origin" not in {token.strip().lower() for token in value.split(",")}:
                    headers[index] = (name, f"{value}, Origin" if value.strip() else "Origin")
                break
            if lower == "allow":
                allow = value
        else:
            headers.append(("Vary", "Origin"))
        origin = environ.get("HTTP_ORIGIN")
        if origin and origin in allowed_origins:
            headers.append(("Access-Control-Allow-Origin", origin))
            if environ.get("REQUEST_METHOD") == "OPTIONS" and environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"):
                if allow is None:
                    allow = next((value for name, value in headers if name.lower() == "allow"), "")
                headers.append(("Access-Control-Allow-Methods", allow))
                headers.extend(preflight_headers)
            else:
                headers.append(expose)
    return cors


def _too_long(max_url_bytes):
    """The answer to a request target over ``MAX_URL_BYTES``: 414 in the error shape, made by the
    middleware before Flask parses the target (the middleware adds the request id and headers)."""
    document = error_document("uri_too_long", f"the request target is longer than {max_url_bytes} bytes")
    data = (json.dumps(document, separators=(",", ":")) + "\n").encode()

    def answer(environ, start_response):
        start_response("414 Request-URI Too Long", [("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(data)))])
        return [data]
    return answer
