"""Liveness and readiness."""
from flask import current_app, jsonify

from gateway.routes.common import rpc


def register_health(app):
    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz/gateway")
    def gateway_ready():
        """What a load balancer asks: can this gateway process serve? It needs the broker (its
        broadcast listener is connected); a service that is down answers its own operations 503
        and must not take the whole API out of rotation. ``/readyz`` (every service) is for monitoring."""
        connected = current_app.extensions["revocation_consumer"].ready.is_set()
        return jsonify({"status": "ready" if connected else "not_ready",
                        "checks": {"broker": "ok" if connected else "unavailable: the listener is not connected"}}), \
            200 if connected else 503

    @app.get("/readyz")
    def readyz():
        checks = {}
        for service in ("org", "membership", "notifications", "usage", "audit"):
            try:
                checks[service] = "ok" if rpc(service, "ping") == "pong" else "unexpected answer"
            except Exception as error:  # any failure means "not ready"; say which
                checks[service] = f"unavailable: {type(error).__name__}"
        ready = all(value == "ok" for value in checks.values())
        return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), 200 if ready else 503
