"""The AMQP envelope of every event: what a subscriber can know without reading the body.

Bodies keep their fields (``event_id``, ``occurred_at``, ``organization_id``, ...); the envelope
restates the event's identity in the places generic tooling looks: AMQP properties (``message_id``
= event id, ``type`` = event type, ``timestamp`` = occurrence in unix seconds, ``app_id`` = source
service, ``correlation_id`` = the request id that caused it when one is known, ``content_type``)
and the CloudEvents 1.0 AMQP protocol binding's application properties (``cloudEvents:id``,
``:specversion``, ``:source``, ``:type``, ``:time``), so a consumer that stores or forwards a body
still has its type, and a CloudEvents SDK reads the message as a binary-mode event.

One function builds it (the outbox publishes every event through it) and the AsyncAPI document
(``common.asyncapi``) describes the same names, so the two cannot disagree.
"""
from datetime import datetime

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
CE_PREFIX = "cloudEvents:"
#: ``cloudEvents:source`` of each service: a URI reference naming the publisher
SOURCE_PREFIX = "/orgplatform/"
#: the AMQP properties every event carries (``correlation_id`` only when a request caused it)
PROPERTIES = ("message_id", "type", "timestamp", "app_id", "content_type", "correlation_id")
#: the application properties (headers) every event carries
HEADERS = tuple(CE_PREFIX + name for name in ("specversion", "id", "source", "type", "time"))


def source_uri(source):
    return SOURCE_PREFIX + source


def unix_seconds(occurred_at):
    """``occurred_at`` (ISO 8601 UTC with a ``Z``) as whole unix seconds (AMQP's timestamp)."""
    return int(datetime.fromisoformat(occurred_at.replace("Z", "+00:00")).timestamp())


def envelope(source, event_type, body, correlation_id=None):
    """Keyword arguments for ``Publisher.publish``: the AMQP properties and CloudEvents headers.

    ``content_type`` is not among them: kombu sets it (``application/json``) when it serialises
    the body, and a ``content_type`` passed in would make it skip serialising."""
    properties = {
        "message_id": body["event_id"],
        "type": event_type,
        "timestamp": unix_seconds(body["occurred_at"]),
        "app_id": source,
        "headers": {
            CE_PREFIX + "specversion": SPECVERSION,
            CE_PREFIX + "id": body["event_id"],
            CE_PREFIX + "source": source_uri(source),
            CE_PREFIX + "type": event_type,
            CE_PREFIX + "time": body["occurred_at"],
        },
    }
    if correlation_id:
        properties["correlation_id"] = correlation_id
    return properties
