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
import atexit
import logging
import os
import re
import threading
import time
import traceback
from json.encoder import encode_basestring_ascii as _quoted  # a str as json.dumps(ensure_ascii=True) writes it
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger

from common import logs
from gateway import wsgi
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


#: gunicorn.conf.py's access_log_format, which :func:`_default_message` writes without ``%``
DEFAULT_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def _default_message(remote, request_line, status, sent, milliseconds):
    return f'{remote} "{request_line}" {status} {sent if sent is not None else "-"} {int(milliseconds)}ms'


def _json_int(value):
    """An int (or None) as ``json.dumps`` writes it."""
    return "null" if value is None else str(int(value))


_clock = (None, "")  # (a second, its ISO 8601 text): formatted once a second, not once a line


def _timestamp_now():
    """Now as ``common.logs`` writes it (ISO 8601 UTC, milliseconds, ``Z``)."""
    global _clock
    now = time.time()
    second = int(now)
    seen, text = _clock  # one tuple, replaced whole: a thread racing the update reads one or the other
    if seen != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _clock = (second, text)
    return f"{text}.{int((now - second) * 1000):03d}Z"


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
    """A URL or request line with invite tokens and secret query parameters redacted (the regular
    expressions only run on text that holds what they look for: most lines hold neither)."""
    if not isinstance(text, str):
        return text
    if "/invites/" in text or "/deletions/" in text:
        text = _INVITE_TOKEN.sub(r"\1[redacted]", text)
    if "?" in text:
        text = _QUERY.sub(lambda match: match.group(1) + _redact_pairs(match.group(2)), text)
    return text


class BufferedLines:
    """Access lines collected by the request threads and written by one thread every ``interval``
    seconds: a write and flush per request cost about as much as the rest of a ``/healthz`` answer.
    A worker flushes what is left when it exits (``worker_exit`` in ``gunicorn.conf.py``, and
    ``atexit``); a worker killed outright loses at most ``interval`` seconds of lines (nginx keeps
    its own access log)."""

    def __init__(self, stream, interval=0.2):
        self._stream, self._interval = stream, interval
        self._lines, self._lock = [], threading.Lock()
        self._running = False  # this process's flusher started (threads do not survive gunicorn's fork)
        os.register_at_fork(after_in_child=self._forked)  # a flag, not os.getpid() (a system call) per line
        atexit.register(self.flush)

    def _forked(self):
        self._running, self._lock = False, threading.Lock()

    def write(self, line):
        with self._lock:
            self._lines.append(line)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="access-log", daemon=True).start()

    def _run(self):
        while True:
            time.sleep(self._interval)
            self.flush()

    def flush(self):
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # the stream is closed (shutdown): nothing left to write to
                pass


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
        # JSON access lines skip the logging machinery and are written in batches (BufferedLines)
        stream = next((h.stream for h in self.access_log.handlers if hasattr(h, "stream")), None)
        json_format = settings.log_format.strip().lower() == "json"
        self._json_lines = BufferedLines(stream) if json_format and stream is not None else None
        # the access format as one function when it is gunicorn.conf.py's (no atoms dict, no %)
        self._format = self.cfg.access_log_format
        self._message = _default_message if self._format == DEFAULT_FORMAT else None
        # what follows the timestamp up to the message's value, the same on every access line
        self._json_head = f', "level": "INFO", "service": "gateway", "logger": {_quoted(self.access_log.name)}, ' \
                          '"message": '

    def flush_access(self):
        if self._json_lines is not None:
            self._json_lines.flush()

    def _json_access_line(self, resp, req, environ, request_time):
        """The access record with the fields of the logging path, from the few atoms the format
        uses (gunicorn's ``atoms()`` builds every header's atom, then each would be redacted).

        Written out by hand rather than by ``json.dumps`` of a dict (a third of a ``/healthz``
        answer's own cost went to this line): the keys and constants are fixed, every value a
        client chose (method, path, query, the message holding the request line, the address) is
        escaped by the C encoder ``json.dumps`` itself uses for strings, ASCII only, and numbers
        are written as ``json.dumps`` writes them; ``tests/unit/test_gateway_edge.py`` checks the
        line against ``common.logs.json_line``."""
        method = environ.get("REQUEST_METHOD") or "-"
        sent = getattr(resp, "sent", None)
        milliseconds = request_time.total_seconds() * 1000
        path, query = redact(environ.get("PATH_INFO") or ""), redact_query(environ.get("QUERY_STRING") or "")
        remote = environ.get("REMOTE_ADDR") or "-"
        status = resp.status_code
        line = redact(f'{method} {environ.get("RAW_URI")} {environ.get("SERVER_PROTOCOL")}')
        if self._message is not None:
            message = self._message(remote, line, status, sent, milliseconds)
        else:
            atoms = {"h": remote, "m": method, "U": path, "q": query, "r": line, "s": status,
                     "b": str(sent) if sent is not None else "-", "M": int(milliseconds)}
            try:
                message = self._format % atoms
            except (KeyError, TypeError, ValueError):  # a format with other atoms: gunicorn's full set
                message = self._format % self.atoms_wrapper_class(self.atoms(resp, req, environ, request_time))
        request_id = environ.get(wsgi.REQUEST_ID_KEY) or next(
            (value for name, value in resp.headers if name.lower() == "x-request-id"), None)
        return (f'{{"timestamp": "{_timestamp_now()}"{self._json_head}{_quoted(message)}, '
                f'"method": {_quoted(method)}, "path": {_quoted(path)}, '
                f'"query": {_quoted(query) if query else "null"}, "status": {_json_int(status)}, '
                f'"bytes": {_json_int(sent)}, "duration_ms": {round(milliseconds, 1)!r}, '
                f'"remote": {_quoted(remote)}, "request_id": {_quoted(request_id) if request_id else "null"}}}')

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        if self._json_lines is not None:
            try:
                self._json_lines.write(self._json_access_line(resp, req, environ, request_time))
            except Exception:
                self.error(traceback.format_exc())
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
