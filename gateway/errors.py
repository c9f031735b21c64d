"""The one error shape, for every answer the gateway makes: ``{"error": {"code", "message", "details"}}``.

``init_app(app)`` registers the handlers that turn each kind of failure into it: a service's
``DomainError`` (with the status its code maps to, ``common.errors.STATUS_BY_CODE``), a service
that does not answer (503 + ``Retry-After``), a service's unexpected failure and our own (500,
nothing of the failure told), and Flask's HTTP errors (405 says what is allowed).
"""
import logging

from flask import jsonify
from nameko.exceptions import RemoteError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from common.errors import STATUS_BY_CODE, DomainError
from gateway.rpc import ServiceUnavailable

log = logging.getLogger("gateway")

_CODE_BY_STATUS = {400: "malformed_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                   405: "method_not_allowed", 409: "conflict", 410: "organization_gone",
                   413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_failed",
                   429: "rate_limited"}


def error_document(code, message, details=None):
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(code, message, details=None, status=None, headers=None):
    return jsonify(error_document(code, message, details)), status or STATUS_BY_CODE[code], headers or {}


def init_app(app):
    @app.errorhandler(DomainError)
    def domain_error(error):
        headers = {}
        if error.code in ("rate_limited", "service_unavailable") or "retry_after" in error.details:
            headers["Retry-After"] = str(error.details.get("retry_after", 1))
        return error_response(error.code, error.message, error.details, headers=headers)

    @app.errorhandler(ServiceUnavailable)
    def unavailable(error):
        log.warning("%s", error)
        return error_response("service_unavailable", f"{error.service} service is unavailable, try again shortly",
                              {"service": error.service}, headers={"Retry-After": "1"})

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
