"""How the notifications service presents its documents over RPC (ISO dates, contract names)."""
from marshmallow import Schema, fields

from common.events import Iso


class SettingsSchema(Schema):
    plan_email = fields.String(allow_none=True)
    new_user_email = fields.String(allow_none=True)
    ai_job_recipients = fields.String()


class AttemptSchema(Schema):
    at = Iso()
    outcome = fields.String()
    error = fields.String(allow_none=True)


class DeliverySchema(Schema):
    id = fields.String(attribute="_id")
    kind = fields.String()
    to = fields.String()
    subject = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    attempt_log = fields.List(fields.Nested(AttemptSchema))
    last_error = fields.String(allow_none=True)
    created_at = Iso()
    sent_at = Iso(allow_none=True)
    request_id = fields.String(allow_none=True)
    event_id = fields.String(allow_none=True)
