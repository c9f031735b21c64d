"""The AsyncAPI 3 description of every event, generated from the schemas publishers validate with.

``common.events.SCHEMAS`` is what :func:`common.events.make_event` validates every payload against
before it leaves a service, and the envelope names come from ``common.envelope``, so the document
cannot drift from what is published. The gateway serves it at ``GET /api/v1/asyncapi.json``;
``tests/test_asyncapi.py`` validates it with the official AsyncAPI parser and checks every event of
a journey against it.

Payload schemas are AsyncAPI schemas (a JSON Schema draft 07 superset): a field that may be null is
``type: [<type>, "null"]``, a closed set an ``enum``, units and formats are in ``description`` and
``format`` (field ``metadata``). Payloads are open (``additionalProperties`` is not false):
publishers may add fields, subscribers must ignore what they do not know.
"""
from marshmallow import fields, validate

from common import envelope, events

VERSION = "1.0.0"
AMQP_BINDING_VERSION = "0.3.0"


def _field_schema(field):
    if getattr(field, "json_schema", None) is not None:  # a field that describes itself (events.Actor)
        schema = dict(field.json_schema)
    elif isinstance(field, fields.Nested):
        schema = _object_schema(field.schema)
    elif isinstance(field, fields.List):
        schema = {"type": "array", "items": _field_schema(field.inner)}
    elif isinstance(field, fields.Dict):
        schema = {"type": "object"}
        if field.value_field is not None:
            schema["additionalProperties"] = _field_schema(field.value_field)
    elif isinstance(field, fields.Boolean):
        schema = {"type": "boolean"}
    elif isinstance(field, fields.Integer):
        schema = {"type": "integer"}
    elif isinstance(field, fields.Number):
        schema = {"type": "number"}
    elif isinstance(field, fields.String):
        schema = {"type": "string"}
    else:  # a new field type must be described here before an event may use it
        raise TypeError(f"no AsyncAPI mapping for {type(field).__name__}")
    for validator in field.validators:
        if isinstance(validator, validate.OneOf):
            schema["enum"] = list(validator.choices)
    for key in ("description", "format"):
        if field.metadata.get(key):
            schema[key] = field.metadata[key]
    if field.allow_none:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"].append(None)
    return schema


def _object_schema(schema):
    properties = {name: _field_schema(field) for name, field in schema.fields.items()}
    required = sorted(name for name, field in schema.fields.items() if field.required)
    described = {"type": "object", "properties": properties}
    if required:
        described["required"] = required
    doc = (type(schema).__doc__ or "").strip()  # a class's own docstring (not inherited)
    if doc:
        described["description"] = " ".join(doc.split())
    return described


def _channel_id(source, event_type):
    return f"{source}.{event_type}"


def headers_schema():
    """The CloudEvents application properties every event carries (``common.envelope``)."""
    properties = {
        envelope.CE_PREFIX + "specversion": {"type": "string", "const": envelope.SPECVERSION},
        envelope.CE_PREFIX + "id": {"type": "string", "description": "the event id (= payload event_id)"},
        envelope.CE_PREFIX + "source": {"type": "string", "description": f"{envelope.SOURCE_PREFIX}<source service>"},
        envelope.CE_PREFIX + "type": {"type": "string", "description": "the event type (= routing key)"},
        envelope.CE_PREFIX + "time": {"type": "string", "format": "date-time",
                                      "description": "= payload occurred_at"},
    }
    return {"type": "object", "properties": properties, "required": sorted(properties)}


ENVELOPE_DESCRIPTION = (
    "AMQP properties: message_id = event id, type = event type, timestamp = occurrence (unix "
    "seconds), app_id = source service, correlation_id = the X-Request-ID of the request that "
    "caused the event (absent when none did), content_type = application/json, delivery_mode 2. "
    "Application properties: the CloudEvents 1.0 AMQP binding's (headers).")


def document():
    """The AsyncAPI 3.1 document (a dict, JSON-ready)."""
    channels, operations, messages, schemas = {}, {}, {}, {}
    for (source, event_type), schema_class in sorted(events.SCHEMAS.items()):
        schema_name = schema_class.__name__
        schemas.setdefault(schema_name, _object_schema(schema_class()))
        messages.setdefault(event_type, {
            "name": event_type,
            "title": event_type,
            "contentType": "application/json",
            "description": ENVELOPE_DESCRIPTION,
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "payload": {"$ref": f"#/components/schemas/{schema_name}"},
            "bindings": {"amqp": {"messageType": event_type, "bindingVersion": AMQP_BINDING_VERSION}},
        })
        channel_id = _channel_id(source, event_type)
        channels[channel_id] = {
            "address": event_type,
            "title": f"{event_type} on {envelope.source_uri(source)}",
            "description": f"Routing key `{event_type}` on the topic exchange `{source}.events`.",
            "messages": {event_type: {"$ref": f"#/components/messages/{event_type}"}},
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": f"{source}.events", "type": "topic", "durable": True, "autoDelete": False},
                "bindingVersion": AMQP_BINDING_VERSION,
            }},
        }
        operations[f"receive.{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{event_type}"}],
            "summary": f"Subscribe to {event_type} from {source}",
        }
    schemas["CloudEventsHeaders"] = headers_schema()
    return {
        "asyncapi": "3.1.0",
        "info": {
            "title": "Organizations platform events",
            "version": VERSION,
            "description": "Facts the services publish on RabbitMQ. Bind a durable queue of your own to "
                           "`<source>.events` with the routing keys you need; events may arrive twice "
                           "(deduplicate by event id). Payloads are open: ignore fields you do not know. "
                           "Credits are integer milli-credits (1 credit = 1000).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {"host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1",
                         "description": "The local stack's broker (each installation has its own "
                                        "host and vhost)."},
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
        },
    }


def event_types():
    """``{(source, type)}`` the document describes, for checks against other lists."""
    return set(events.SCHEMAS)
