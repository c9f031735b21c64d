"""How the org service presents its documents over RPC (ISO dates, contract field names)."""
from marshmallow import Schema, fields


class OwnerSchema(Schema):
    id = fields.String()
    name = fields.String()
    email = fields.String()

