"""How the audit service presents an entry over RPC (the API's names; the chain's own fields)."""
from marshmallow import Schema, fields


class EntrySchema(Schema):
    id = fields.String(attribute="_id")
    sequence = fields.Integer(attribute="seq")
    organization_id = fields.String(attribute="org_id")
    at = fields.String()
    actor = fields.Raw()
    action = fields.String()
    target = fields.Dict()
    details = fields.Dict()
    request_id = fields.String(allow_none=True)
    hash = fields.String()


_ENTRY = EntrySchema()  # one instance: building a marshmallow schema costs more than a dump


def present(doc):
    data = _ENTRY.dump(doc)
    data.setdefault("request_id", None)
    return data
