"""How the usage service presents its documents over RPC (ISO dates, contract field names)."""
from marshmallow import Schema, fields

from common.events import Iso


class LedgerEntrySchema(Schema):
    id = fields.String(attribute="_id")
    sequence = fields.Integer(attribute="seq")
    kind = fields.String()
    amount = fields.Integer()
    balance_after = fields.Integer()
    actor = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    idempotency_key = fields.String(allow_none=True)
    comment = fields.String(allow_none=True)
    job_id = fields.String(allow_none=True)
    job_type = fields.String(allow_none=True)
    outcome = fields.String(allow_none=True)
    expires_at = Iso(allow_none=True)
    created_at = Iso()

