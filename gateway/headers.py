"""What every answer carries and what every request target must respect: security headers, CORS for
``CORS_ALLOWED_ORIGINS`` only, and the request target's length (``MAX_URL_BYTES``, 414 in the
error shape). ``init_app(app, settings)`` registers the hooks."""
from flask import request

from gateway.errors import error_response

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


def init_app(app, settings):
    max_url_bytes = settings.max_url_bytes
    allowed_origins = set(settings.cors_allowed_origins)

    @app.before_request
    def target_length():
        target = request.environ.get("RAW_URI") or request.full_path
        if len(target) > max_url_bytes:
            return error_response("uri_too_long", f"the request target is longer than {max_url_bytes} bytes")

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
