"""Request and response schemas of the HTTP API; the OpenAPI document is generated from these."""
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from common.events import PLAN_NAMES, ROLES

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


class CreateOrganizationRequest(Strict):
    name = fields.String(required=True, validate=ORG_NAME)


class SwitchRequest(Strict):
    organization_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


class PasswordChangeRequest(Strict):
    current_password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    new_password = fields.String(required=True, validate=validate.Length(min=10, max=1024))


class MemberQuery(Strict):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, validate=validate.Length(max=500))
    q = fields.String(load_default=None, validate=validate.Length(max=100))


class MemberUpdateRequest(Strict):
    role = fields.String(validate=validate.OneOf(ROLES))
    can_delete_organization = fields.Boolean()

    @validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Give role and/or can_delete_organization.", "_schema")


class OwnershipRequest(Strict):
    user_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


class PlanRequest(Strict):
    name = fields.String(required=True, validate=validate.OneOf(PLAN_NAMES))
    included_users = fields.Integer(required=True, allow_none=True, strict=True, validate=validate.Range(min=0),
                                    metadata={"description": "null = unlimited"})
    included_storage_bytes = fields.Integer(required=True, allow_none=True, strict=True,
                                            validate=validate.Range(min=0), metadata={"description": "null = unlimited"})
    paid_until = fields.AwareDateTime(required=True, allow_none=True, format="iso")


class InviteRequest(Strict):
    # trimmed, lower-cased and checked by the membership service (details name the bad index)
    emails = fields.List(fields.String(validate=validate.Length(min=3, max=254)), required=True,
                         validate=validate.Length(min=1, max=100))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


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


class OrganizationListSchema(Schema):
    items = fields.List(fields.Nested(OrganizationMembershipSchema), required=True)


class SwitchResponse(TokenPairSchema):
    organization = fields.Nested(OrganizationMembershipSchema, required=True)


class MemberSchema(Schema):
    user_id = fields.String(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    is_owner = fields.Boolean(required=True)
    can_delete_organization = fields.Boolean(required=True)
    joined_at = fields.String(required=True)


class MemberPageSchema(Schema):
    items = fields.List(fields.Nested(MemberSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class RemovedSchema(Schema):
    removed = fields.Boolean(required=True)
    reason = fields.String(required=True, validate=validate.OneOf(("left", "removed")))


class OwnershipSchema(Schema):
    owner_user_id = fields.String(required=True)
    previous_owner_user_id = fields.String(required=True)


class InviteSchema(Schema):
    id = fields.String(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    status = fields.String(required=True)
    invited_by = fields.String(required=True)
    created_at = fields.String(required=True)
    expires_at = fields.String(required=True)


class SkippedInviteSchema(Schema):
    email = fields.String(required=True)
    reason = fields.String(required=True)


class InvitesCreatedSchema(Schema):
    items = fields.List(fields.Nested(InviteSchema), required=True)
    skipped = fields.List(fields.Nested(SkippedInviteSchema), required=True)


class InviteListSchema(Schema):
    items = fields.List(fields.Nested(InviteSchema), required=True)


class InvitePreviewSchema(Schema):
    organization = fields.Nested(OrganizationRefSchema, required=True)
    role = fields.String(required=True)
    expires_at = fields.String(required=True)


class LogoutResponse(Schema):
    logged_out = fields.Boolean(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True)
    checks = fields.Dict()
