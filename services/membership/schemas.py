"""How the membership service presents its documents over RPC (ISO dates, contract field names)."""
from marshmallow import Schema, fields

from common.events import Iso


class MemberSchema(Schema):
    user_id = fields.String()
    email = fields.String()
    name = fields.String()
    role = fields.String()
    is_owner = fields.Boolean()
    can_delete_organization = fields.Boolean()
    joined_at = Iso()


class InviteSchema(Schema):
    id = fields.String(attribute="_id")
    email = fields.String()
    role = fields.String()
    status = fields.String()
    invited_by = fields.String(allow_none=True)
    created_at = Iso()
    expires_at = Iso()
