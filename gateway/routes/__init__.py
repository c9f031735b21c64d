"""The HTTP API: thin views that check access (declared), call one service, shape the answer.

Importing this package registers every operation on ``api``.
"""
from gateway.routes import audit, auth, health, invites, members, notifications, organizations, usage  # noqa: F401,E501  (registration)
from gateway.routes.common import api  # noqa: F401
from gateway.routes.health import register_health  # noqa: F401

__all__ = ["api", "register_health", "audit", "auth", "health", "invites", "members", "notifications", "organizations",
           "usage"]
