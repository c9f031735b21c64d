"""How the org service presents its documents over RPC (ISO dates, contract field names)."""
from marshmallow import Schema, fields

from common.events import isoformat


class Iso(fields.Field):
    def _serialize(self, value, attr, obj, **kwargs):
        return isoformat(value)


class PlanSchema(Schema):
    name = fields.String()
    included_users = fields.Integer(allow_none=True)
    included_storage_bytes = fields.Integer(allow_none=True)
    paid_until = Iso(allow_none=True)


class OwnerSchema(Schema):
    id = fields.String()
    name = fields.String()
    email = fields.String()


class OrganizationSummarySchema(Schema):
    id = fields.String(attribute="_id")
    name = fields.String()
    status = fields.String()
    created_at = Iso()
