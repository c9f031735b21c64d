"""Error codes shared by services and gateway, and the one remote exception that carries them.

Services raise ``DomainError(code, message, details)``; because the class is registered with
nameko's exception registry, an RPC caller gets the same class back (not a generic RemoteError),
so the gateway can map ``code`` to an HTTP status without string parsing.
"""
from nameko.exceptions import deserialize_to_instance

#: code -> HTTP status. The gateway uses this table; services only pick a code.
STATUS_BY_CODE = {
    "malformed_request": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "invalid_token": 401,
    "token_expired": 401,
    "token_revoked": 401,
    "invalid_credentials": 401,
    "insufficient_credits": 402,
    "forbidden": 403,
    "wrong_organization": 403,
    "not_a_member": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "email_taken": 409,
    "already_member": 409,
    "user_limit_reached": 409,
    "owner_protected": 409,
    "organization_gone": 410,
    "request_timeout": 408,
    "payload_too_large": 413,
    "uri_too_long": 414,
    "unsupported_media_type": 415,
    "validation_failed": 422,
    "headers_too_large": 431,
    "rate_limited": 429,
    "internal_error": 500,
    "service_unavailable": 503,
}


@deserialize_to_instance
class DomainError(Exception):
    """A business-rule failure with a contract error code; safe to show to the client."""

    def __init__(self, code, message, details=None):
        if code not in STATUS_BY_CODE:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code, message, details or {})
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def status(self):
        return STATUS_BY_CODE[self.code]

    def __str__(self):
        return f"{self.code}: {self.message}"


def not_found(what="resource"):
    return DomainError("not_found", f"{what} not found")


def gone():
    """410 for an organization being deleted or deleted (its tombstone answers like its deletion)."""
    return DomainError("organization_gone", "organization is deleted or being deleted")
