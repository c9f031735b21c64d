"""gunicorn access log without secrets.

Invite tokens and deletion receipts live in URL paths (``/invites/<token>``,
``/deletions/<receipt>``), and clients sometimes put a token in the query string
(``?access_token=...``; the API never asks for that, but a log must not keep what a client sent by
mistake). The request line, path, query and referer are logged with every path segment after
``/invites/`` or ``/deletions/`` and the value of every query parameter named like a secret
(:data:`SECRET_PARAMETERS`, any case, percent-encoded names too) replaced by ``[redacted]``;
request headers that carry credentials are never logged.

Every line gunicorn writes (error log, access log) and every line of the app's own loggers goes
through ``common.logs``: one JSON object per line (``LOG_FORMAT=text`` for a terminal), the access
line with its fields (``method``, ``path``, ``status``, ``bytes``, ``duration_ms``, ``remote``,
``request_id``) besides the redacted ``message``.
"""
import logging
import re
import traceback
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger

from common import logs
from gateway.settings import GatewaySettings


_INVITE_TOKEN = re.compile(r"(/(?:invites|deletions)/)[^/?#\s]+")  # invite tokens, deletion receipts
# a query string: after "?" up to a fragment, a space (the request line's " HTTP/1.1") or the end
_QUERY = re.compile(r"(\?)([^#\s]*)")
SECRET_PARAMETERS = frozenset((
    "access_token", "refresh_token", "id_token", "token", "invite_token", "receipt", "password",
    "current_password", "new_password", "secret", "code", "key", "api_key", "apikey", "authorization",
))
_URL_ATOMS = ("r", "U", "q", "f")
_SECRET_HEADERS = ("{authorization}i", "{cookie}i", "{proxy-authorization}i")


def _redact_pairs(query):
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        if equals and unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
            pair = name + "=[redacted]"
        pairs.append(pair)
    return "&".join(pairs)


def redact_query(query):
    """A bare query string (gunicorn's ``%(q)s``) with secret parameters' values redacted."""
    return _redact_pairs(query) if isinstance(query, str) else query


def redact(text):
    """A URL or request line with invite tokens and secret query parameters redacted."""
    if not isinstance(text, str):
        return text
    text = _INVITE_TOKEN.sub(r"\1[redacted]", text)
    return _QUERY.sub(lambda match: match.group(1) + _redact_pairs(match.group(2)), text)


class RedactingLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        settings = GatewaySettings.from_file()
        formatter = logs.formatter("gateway", settings.log_format)
        for log in (self.error_log, self.access_log):
            log.propagate = False  # their own handlers write them; the root's would write them again
            for handler in log.handlers:
                handler.setFormatter(formatter)
        # the app's loggers (gateway, common.*, nameko, kombu) go to stderr in the same format
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_orgplatform", False)]:
            root.removeHandler(handler)
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        handler._orgplatform = True
        root.addHandler(handler)
        root.setLevel(settings.log_level.upper())
        for noisy in ("kombu", "amqp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        atoms = self.atoms_wrapper_class(self.atoms(resp, req, environ, request_time))
        try:
            self.access_log.info(self.cfg.access_log_format, atoms, extra={
                "method": atoms["m"], "path": atoms["U"], "query": atoms["q"] or None,
                "status": resp.status_code, "bytes": getattr(resp, "sent", None),
                "duration_ms": round(request_time.total_seconds() * 1000, 1), "remote": atoms["h"],
                "request_id": dict((k.lower(), v) for k, v in resp.headers).get("x-request-id")})
        except Exception:
            self.error(traceback.format_exc())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in _URL_ATOMS:
            atoms[key] = redact_query(atoms.get(key)) if key == "q" else redact(atoms.get(key))
        for key in _SECRET_HEADERS:
            if key in atoms:
                atoms[key] = "[redacted]"
        return atoms
