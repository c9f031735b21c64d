"""Request and response schemas of the HTTP API; the OpenAPI document is generated from these."""
from marshmallow import RAISE, Schema, fields, validate

from common.events import ROLES

ORG_NAME = validate.Length(min=1, max=100)


class Strict(Schema):
    class Meta:
        unknown = RAISE  # an unknown field is a client bug worth a 422, not something to ignore


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


# -- requests --------------------------------------------------------------------------------

class SignupRequest(Strict):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, validate=validate.Length(min=10, max=1024))
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    organization_name = fields.String(validate=ORG_NAME, allow_none=True)
    invite_token = fields.String(validate=validate.Length(min=1, max=200), allow_none=True)


class LoginRequest(Strict):
    email = fields.String(required=True, validate=validate.Length(min=1, max=254))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    organization_id = fields.String(validate=validate.Length(min=1, max=64), allow_none=True)


class RefreshRequest(Strict):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=200))


class RenameOrganizationRequest(Strict):
    name = fields.String(required=True, validate=ORG_NAME)


# -- responses -------------------------------------------------------------------------------

class UserSchema(Schema):
    id = fields.String(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    is_superuser = fields.Boolean(required=True)


class OrganizationMembershipSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    is_owner = fields.Boolean(required=True)


class TokenPairSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    expires_in = fields.Integer(required=True, metadata={"description": "access token lifetime, seconds"})
    token_type = fields.String(required=True)
    user = fields.Nested(UserSchema, required=True)


class SignupResponse(TokenPairSchema):
    organization = fields.Nested(OrganizationMembershipSchema, allow_none=True, required=True)


class OrganizationRefSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)


class MeSchema(Schema):
    user = fields.Nested(UserSchema, required=True)
    organization = fields.Nested(OrganizationRefSchema, allow_none=True, required=True)
    role = fields.String(allow_none=True, required=True)
    is_owner = fields.Boolean(required=True)
    organizations = fields.List(fields.Nested(OrganizationMembershipSchema), required=True)


class OwnerSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)


class PlanSchema(Schema):
    name = fields.String(required=True)
    included_users = fields.Integer(allow_none=True, required=True, metadata={"description": "null = unlimited"})
    included_storage_bytes = fields.Integer(allow_none=True, required=True,
                                            metadata={"description": "null = unlimited"})
    paid_until = fields.String(allow_none=True, required=True)


class StorageSummarySchema(Schema):
    used_bytes = fields.Integer(required=True)
    included_bytes = fields.Integer(allow_none=True, required=True)
    exceeded = fields.Boolean(required=True)


class MembersSummarySchema(Schema):
    count = fields.Integer(required=True)
    included = fields.Integer(allow_none=True, required=True)
    exceeded = fields.Boolean(required=True)


class CreditsSummarySchema(Schema):
    balance = fields.Integer(required=True, metadata={"description": "milli-credits"})


class OrganizationOverviewSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    owner = fields.Nested(OwnerSchema, required=True)
    plan = fields.Nested(PlanSchema, required=True)
    storage = fields.Nested(StorageSummarySchema, required=True)
    members = fields.Nested(MembersSummarySchema, required=True)
    credits = fields.Nested(CreditsSummarySchema, required=True)
    created_at = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("active", "deleting", "deleted")))


class LogoutResponse(Schema):
    logged_out = fields.Boolean(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True)
    checks = fields.Dict()
