"""Log lines every process writes alike: one JSON object per line, or readable text for a terminal.

Every line names its ``timestamp`` (ISO 8601 UTC), ``level``, ``service`` (the process's
component), ``logger``, ``message`` and, when one applies, the ``request_id`` and ``event_id`` of
the work in hand (``common.context``); extra fields a caller passes (``log.info(..., extra=...)``)
and an exception's traceback (``exc_info``) are fields too. ``LOG_FORMAT=text`` (each process's
``config.yml``) gives ``<time> <level> <service> <logger> [<request id>]: <message>`` instead, for
local development. What a line says is the caller's business: the redaction rules (the access log,
no tokens, passwords or invite links in messages) stay where they are.

The services use :func:`formatter` from their ``LOGGING`` configuration (``"()":
common.logs.formatter``); the gateway's gunicorn logger (``gateway.accesslog``) uses it for
gunicorn's error and access logs and the app's own loggers.
"""
import json
import logging
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

from common import context

FORMATS = ("json", "text")


def _timestamp(record):
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_line(service, logger, level, message, fields):
    """One JSON record the way :class:`JsonLines` writes it, built without the ``logging`` machinery:
    for the gateway's access log, written once per request (``gateway/accesslog.py``)."""
    record = {"timestamp": _timestamp_now(), "level": level, "service": service, "logger": logger,
              "message": message}
    record.update(fields)
    return json.dumps(record, ensure_ascii=True, default=str)


def _timestamp_now():
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLines(JsonFormatter):
    def __init__(self, service):
        # ASCII only: a client's path may hold U+2028 or U+0085, which many line readers (Python's
        # str.splitlines among them) take for a line break; escaped, a record stays one line
        super().__init__("%(message)s", json_ensure_ascii=True)
        self.service = service

    def add_fields(self, log_data, record, message_dict):
        log_data["timestamp"] = _timestamp(record)
        log_data["level"] = record.levelname
        log_data["service"] = self.service
        log_data["logger"] = record.name
        super().add_fields(log_data, record, message_dict)
        request_id = log_data.get("request_id") or context.request_id()
        event_id = log_data.get("event_id") or context.event_id()
        if request_id:
            log_data["request_id"] = request_id
        if event_id:
            log_data["event_id"] = event_id


class TextLines(logging.Formatter):
    def __init__(self, service):
        super().__init__("%(asctime)s %(levelname)s " + service + " %(name)s [%(request_id)s]: %(message)s")

    def format(self, record):
        record.request_id = getattr(record, "request_id", None) or context.request_id() or "-"
        return super().format(record)


def formatter(service, style):
    """The formatter for ``service`` in ``style`` (``json`` or ``text``; anything else is an error,
    so a typo in ``LOG_FORMAT`` fails at start instead of silently changing the format)."""
    style = str(style).strip().lower()
    if style not in FORMATS:
        raise ValueError(f'LOG_FORMAT must be one of {", ".join(FORMATS)}, not {style!r}')
    logging.captureWarnings(True)  # warnings become log lines in the same format, not bare stderr text
    return JsonLines(service) if style == "json" else TextLines(service)
