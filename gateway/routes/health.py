"""Liveness and readiness."""
from flask import jsonify

from gateway.routes.common import rpc


def register_health(app):
    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        checks = {}
        for service in ("org", "membership", "notifications", "usage", "audit"):
            try:
                checks[service] = "ok" if rpc(service, "ping") == "pong" else "unexpected answer"
            except Exception as error:  # any failure means "not ready"; say which
                checks[service] = "unavailable: %s" % type(error).__name__
        ready = all(value == "ok" for value in checks.values())
        return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), 200 if ready else 503
