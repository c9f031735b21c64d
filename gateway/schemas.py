"""Request and response schemas of the HTTP API; the OpenAPI document is generated from these."""
import re

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from common.errors import DomainError
from common.events import AI_JOB_RECIPIENTS, PLAN_NAMES, ROLES
from common.validation import EARLIEST, LATEST, bounded_moment

INVITE_STATUSES = ("pending", "accepted", "revoked")
#: mail kinds of the delivery log (one template each in services/notifications/templates)
DELIVERY_KINDS = ("invite", "member_joined", "plan_changed", "plan_expiring", "plan_expired",
                  "storage_limit_exceeded", "member_limit_exceeded", "ai_job_completed",
                  "organization_deletion_requested", "organization_deleted")
ORG_NAME = validate.Length(min=1, max=100)
# Cursors are opaque, but their alphabet is not: urlsafe base64 (member and delivery lists), a
# ledger position (credits; 18 digits stay far below BSON's int64). The services check the rest.
POSITION_CURSOR = [validate.Length(max=500), validate.Regexp(r"^[A-Za-z0-9_-]*$", error="Not a valid cursor.")]
SEQUENCE_CURSOR = validate.Regexp(r"^[1-9][0-9]{0,17}$", error="Not a valid cursor.")


class Strict(Schema):
    """Requests are closed: an unknown field is a client bug worth a 422, not something to ignore."""

    class Meta:
        unknown = RAISE


class Open(Schema):
    """Responses are open (no ``additionalProperties: false`` in the OpenAPI document): answers may
    gain fields, and a client generated from the document must keep working when they do. Response
    schemas are only ever dumped, so ``unknown`` matters for the document alone."""

    class Meta:
        unknown = EXCLUDE


def Timestamp(**kwargs):
    """An ISO 8601 UTC moment as the services write it (``2026-01-31T12:00:00.000Z``)."""
    return fields.String(metadata=dict(kwargs.pop("metadata", {}), format="date-time"), **kwargs)


def EmailAddress(**kwargs):
    return fields.String(metadata=dict(kwargs.pop("metadata", {}), format="email"), **kwargs)


class StrictBoolean(fields.Boolean):
    """JSON true or false only (marshmallow's Boolean also takes 1, 0, "yes", "off", ...)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class BoundedDateTime(fields.AwareDateTime):
    """An ISO 8601 moment with a timezone, within 1970-01-01 .. 9000-01-01 once converted to UTC
    (deserialized as that UTC moment). Without the bound, ``0001-01-01T00:00:00+14:00`` overflowed
    on conversion (a 500) and year 1 broke later date arithmetic; no plan or grant needs more."""

    def __init__(self, **kwargs):
        metadata = dict(kwargs.pop("metadata", {}))
        bound = f"between {EARLIEST.date()} and {LATEST.date()} UTC"
        metadata["description"] = (f'{metadata["description"]}; ' if "description" in metadata else "") + bound
        super().__init__(format="iso", metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return bounded_moment(moment, attr or "value")
        except DomainError as error:
            raise ValidationError(next(iter(error.details.values()))[0]) from error


class ErrorBodySchema(Open):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Open):
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
    cursor = fields.String(load_default=None, validate=POSITION_CURSOR)
    q = fields.String(load_default=None, validate=validate.Length(max=100))


class MemberUpdateRequest(Strict):
    role = fields.String(validate=validate.OneOf(ROLES))
    can_delete_organization = StrictBoolean()

    @validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Give role and/or can_delete_organization.", "_schema")


class OwnershipRequest(Strict):
    user_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


class PlanRequest(Strict):
    name = fields.String(required=True, validate=validate.OneOf(PLAN_NAMES))
    # bounded: every stored integer must fit BSON's int64
    included_users = fields.Integer(required=True, allow_none=True, strict=True,
                                    validate=validate.Range(min=0, max=10 ** 9),
                                    metadata={"description": "null = unlimited"})
    included_storage_bytes = fields.Integer(required=True, allow_none=True, strict=True,
                                            validate=validate.Range(min=0, max=2 ** 62),
                                            metadata={"description": "null = unlimited"})
    paid_until = BoundedDateTime(required=True, allow_none=True)


class InviteRequest(Strict):
    # trimmed, lower-cased and checked by the membership service (details name the bad index)
    emails = fields.List(fields.String(validate=validate.Length(min=3, max=254)), required=True,
                         validate=validate.Length(min=1, max=100))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


# -- responses -------------------------------------------------------------------------------

class UserSchema(Open):
    id = fields.String(required=True)
    email = EmailAddress(required=True)
    name = fields.String(required=True)
    is_superuser = fields.Boolean(required=True)


class OrganizationMembershipSchema(Open):
    id = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    is_owner = fields.Boolean(required=True)


class TokenPairSchema(Open):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    expires_in = fields.Integer(required=True, metadata={"description": "access token lifetime, seconds"})
    token_type = fields.String(required=True)
    user = fields.Nested(UserSchema, required=True)


class SignupResponse(TokenPairSchema):
    organization = fields.Nested(OrganizationMembershipSchema, allow_none=True, required=True, metadata={
        "description": "the organization the access token is scoped to; null: none"})


class ScopedTokenPairSchema(SignupResponse):
    """Login and refresh: the token pair and the organization it is scoped to."""


class OrganizationRefSchema(Open):
    id = fields.String(required=True)
    name = fields.String(required=True)


class MeSchema(Open):
    user = fields.Nested(UserSchema, required=True)
    organization = fields.Nested(OrganizationRefSchema, allow_none=True, required=True)
    role = fields.String(allow_none=True, required=True, validate=validate.OneOf(ROLES),
                         metadata={"description": "null when the token is scoped to no organization"})
    is_owner = fields.Boolean(required=True)
    organizations = fields.List(fields.Nested(OrganizationMembershipSchema), required=True)


class OwnerSchema(Open):
    id = fields.String(required=True)
    name = fields.String(required=True)
    email = EmailAddress(required=True)


class PlanSchema(Open):
    name = fields.String(required=True, validate=validate.OneOf(PLAN_NAMES))
    included_users = fields.Integer(allow_none=True, required=True, metadata={"description": "null = unlimited"})
    included_storage_bytes = fields.Integer(allow_none=True, required=True,
                                            metadata={"description": "null = unlimited"})
    paid_until = Timestamp(allow_none=True, required=True)


class StorageSummarySchema(Open):
    used_bytes = fields.Integer(required=True)
    included_bytes = fields.Integer(allow_none=True, required=True)
    exceeded = fields.Boolean(required=True)


class MembersSummarySchema(Open):
    count = fields.Integer(required=True)
    included = fields.Integer(allow_none=True, required=True)
    exceeded = fields.Boolean(required=True)


class CreditsSummarySchema(Open):
    balance = fields.Integer(required=True, metadata={"description": "milli-credits"})


class OrganizationOverviewSchema(Open):
    id = fields.String(required=True)
    name = fields.String(required=True)
    owner = fields.Nested(OwnerSchema, required=True)
    plan = fields.Nested(PlanSchema, required=True)
    storage = fields.Nested(StorageSummarySchema, required=True)
    members = fields.Nested(MembersSummarySchema, required=True)
    credits = fields.Nested(CreditsSummarySchema, required=True)
    created_at = Timestamp(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("active", "deleting", "deleted")))


class OrganizationListSchema(Open):
    items = fields.List(fields.Nested(OrganizationMembershipSchema), required=True)


class SwitchResponse(TokenPairSchema):
    organization = fields.Nested(OrganizationMembershipSchema, required=True)


class MemberSchema(Open):
    user_id = fields.String(required=True)
    email = EmailAddress(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    is_owner = fields.Boolean(required=True)
    can_delete_organization = fields.Boolean(required=True)
    joined_at = Timestamp(required=True)


class MemberPageSchema(Open):
    items = fields.List(fields.Nested(MemberSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class RemovedSchema(Open):
    removed = fields.Boolean(required=True)
    reason = fields.String(required=True, validate=validate.OneOf(("left", "removed")))


class OwnershipSchema(Open):
    owner_user_id = fields.String(required=True)
    previous_owner_user_id = fields.String(required=True)


class InviteSchema(Open):
    id = fields.String(required=True)
    email = EmailAddress(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    status = fields.String(required=True, validate=validate.OneOf(INVITE_STATUSES),
                           metadata={"description": "lists show pending invites; a revoke answers revoked"})
    invited_by = fields.String(required=True)
    created_at = Timestamp(required=True)
    expires_at = Timestamp(required=True)


class SkippedInviteSchema(Open):
    email = EmailAddress(required=True)
    reason = fields.String(required=True, validate=validate.OneOf(("already_member",)))


class InvitesCreatedSchema(Open):
    items = fields.List(fields.Nested(InviteSchema), required=True)
    skipped = fields.List(fields.Nested(SkippedInviteSchema), required=True)


class InviteListSchema(Open):
    items = fields.List(fields.Nested(InviteSchema), required=True)


class InvitePreviewSchema(Open):
    organization = fields.Nested(OrganizationRefSchema, required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    expires_at = Timestamp(required=True)
    inviter_name = fields.String(allow_none=True, metadata={"description": "null: the inviter's account is gone"})


class DeleteOrganizationRequest(Strict):
    confirm_name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class DeletionServicesSchema(Open):
    org = fields.String(required=True, validate=validate.OneOf(("pending", "purged")))
    membership = fields.String(required=True, validate=validate.OneOf(("pending", "purged")))
    notifications = fields.String(required=True, validate=validate.OneOf(("pending", "purged")))
    usage = fields.String(required=True, validate=validate.OneOf(("pending", "purged")))
    audit = fields.String(required=True, validate=validate.OneOf(("pending", "purged")))


class DeletionStatusSchema(Open):
    organization_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("deleting", "deleted")))
    requested_at = Timestamp(required=True)
    completed_at = Timestamp(allow_none=True, required=True)
    services = fields.Nested(DeletionServicesSchema, required=True)


class DeletionAcceptedSchema(DeletionStatusSchema):
    receipt_url = fields.String(required=True, metadata={
        "description": "the deletion status without a token (the deletion revokes the requester's): "
                       "a single-purpose bearer link, also the Location header; it works until some "
                       "days after completion (DELETION_RECEIPT_DAYS)"})


class ExportSchema(Open):
    organization_id = fields.String(required=True)
    exported_at = Timestamp(required=True)
    org = fields.Dict(required=True, metadata={"description": "organization and plan history"})
    membership = fields.Dict(required=True, metadata={"description": "members and invites (no tokens)"})
    notifications = fields.Dict(required=True, metadata={"description": "settings and delivery log"})
    usage = fields.Dict(required=True, metadata={"description": "storage report, credit ledger, reservations"})
    audit = fields.Dict(required=True, metadata={"description": "the activity log, oldest first, with its chain's "
                                                                "anchor and head hash"})


class DeleteAccountRequest(Strict):
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class AccountDeletedSchema(Open):
    deleted = fields.Boolean(required=True)
    user_id = fields.String(required=True)
    organizations_left = fields.List(fields.String(), required=True)


class LogoutResponse(Open):
    logged_out = fields.Boolean(required=True)


# -- notifications ---------------------------------------------------------------------------

def _one_address(value):
    from common.addresses import is_address
    if value is not None and not is_address(value):
        raise ValidationError("Must be one plain email address (no display name, no list), or null.")




class NotificationSettingsRequest(Strict):
    plan_email = fields.String(required=True, allow_none=True, validate=_one_address,
                               metadata={"description": "null = the owner's email"})
    new_user_email = fields.String(required=True, allow_none=True, validate=_one_address,
                                   metadata={"description": "null = the owner's email"})
    ai_job_recipients = fields.String(required=True, validate=validate.OneOf(AI_JOB_RECIPIENTS))


class NotificationSettingsSchema(Open):
    plan_email = EmailAddress(allow_none=True, required=True)
    new_user_email = EmailAddress(allow_none=True, required=True)
    ai_job_recipients = fields.String(required=True, validate=validate.OneOf(AI_JOB_RECIPIENTS))


class DeliveryQuery(Strict):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, validate=POSITION_CURSOR)


class DeliveryAttemptSchema(Open):
    at = Timestamp(required=True)
    outcome = fields.String(required=True,
                            validate=validate.OneOf(("sent", "temporary_failure", "permanent_failure")))
    error = fields.String(allow_none=True, required=True)


class DeliverySchema(Open):
    id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(DELIVERY_KINDS))
    to = EmailAddress(required=True)
    subject = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("queued", "sent", "failed")))
    attempts = fields.Integer(required=True, metadata={"description": "number of attempts so far"})
    attempt_log = fields.List(fields.Nested(DeliveryAttemptSchema), required=True,
                              metadata={"description": "every attempt, oldest first"})
    last_error = fields.String(allow_none=True, required=True)
    created_at = Timestamp(required=True)
    sent_at = Timestamp(allow_none=True, required=True)
    request_id = fields.String(allow_none=True, metadata={
        "description": "X-Request-ID of the request that caused this mail (null: a timer, or recorded "
                       "before request ids were kept)"})
    event_id = fields.String(allow_none=True, metadata={"description": "the event this mail answers, if any"})


class DeliveryPageSchema(Open):
    items = fields.List(fields.Nested(DeliverySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


# -- usage: storage reports and credits (amounts are integer milli-credits) ---------------------

MILLI = "integer milli-credits (1 credit = 1000)"


class DatasetBytes(Strict):
    dataset_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    bytes = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=2 ** 49),
                           metadata={"description": "bytes the dataset occupies"})


class StorageReportRequest(Strict):
    datasets = fields.List(fields.Nested(DatasetBytes), required=True, validate=validate.Length(max=10_000),
                           metadata={"description": "at most 10,000 datasets, unique ids"})
    complete = StrictBoolean(required=True, metadata={
        "description": "true: this is the organization's whole report (datasets not listed are gone); "
                       "false: upsert the listed datasets"})

    @validates_schema
    def unique_ids(self, data, **kwargs):
        seen, duplicates = set(), set()
        for item in data.get("datasets") or []:
            (duplicates if item["dataset_id"] in seen else seen).add(item["dataset_id"])
        if duplicates:
            raise ValidationError(f'Duplicate dataset ids: {", ".join(sorted(duplicates)[:10])}', "datasets")


class StorageTotalsSchema(Open):
    used_bytes = fields.Integer(required=True)
    datasets = fields.Integer(required=True)
    last_report_at = Timestamp(allow_none=True, required=True)
    sequence = fields.Integer(required=True, metadata={"description": "position in the organization's reports"})


class UsageStorageSchema(Open):
    used_bytes = fields.Integer(required=True)
    included_bytes = fields.Integer(allow_none=True, required=True, metadata={"description": "null = unlimited"})
    datasets = fields.Integer(required=True)
    last_report_at = Timestamp(allow_none=True, required=True)
    exceeded = fields.Boolean(required=True)


class UsageMembersSchema(Open):
    count = fields.Integer(required=True)
    included = fields.Integer(allow_none=True, required=True, metadata={"description": "null = unlimited"})


class UsageSchema(Open):
    storage = fields.Nested(UsageStorageSchema, required=True)
    members = fields.Nested(UsageMembersSchema, required=True)
    credits = fields.Nested(CreditsSummarySchema, required=True)


IDEMPOTENCY_KEY = fields.String(validate=validate.Length(min=1, max=200), metadata={
    "description": "the same as the Idempotency-Key header (one of the two is required): repeating "
                   "a key returns the first result and writes nothing; the same key with different "
                   "parameters is a 409"})


class GrantRequest(Strict):
    amount = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=10 ** 15),
                            metadata={"description": MILLI})
    comment = fields.String(validate=validate.Length(max=500), allow_none=True)
    expires_at = BoundedDateTime(allow_none=True, metadata={
        "description": "when set, the unspent remainder of this grant is revoked then (an expiry entry)"})
    idempotency_key = IDEMPOTENCY_KEY


class OneLine(validate.Regexp):
    """No control characters or line separators: job fields end up in mail subjects and bodies.

    A ``Regexp`` so the OpenAPI document carries the rule as a ``pattern``; checked with a search
    for a bad character, since ``$`` would also match before a trailing newline."""

    BAD = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

    def __init__(self):
        super().__init__(r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$",
                         error="Must be one line without control characters.")

    def __call__(self, value):
        if self.BAD.search(value):
            raise ValidationError(self._format_error(value))
        return value


class ReservationRequest(Strict):
    amount = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=10 ** 15),
                            metadata={"description": MILLI})
    job_id = fields.String(required=True, validate=[validate.Length(min=1, max=200), OneLine()])
    job_type = fields.String(required=True, validate=[validate.Length(min=1, max=100), OneLine()])
    idempotency_key = IDEMPOTENCY_KEY


class SettleRequest(Strict):
    outcome = fields.String(required=True, validate=validate.OneOf(("succeeded", "failed")), metadata={
        "description": "succeeded: the reserved credits stay spent; failed: they are refunded"})


class CreditsQuery(Strict):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, validate=SEQUENCE_CURSOR)


class LedgerEntrySchema(Open):
    id = fields.String(required=True, metadata={"description": "for a reservation: the reservation id"})
    sequence = fields.Integer(required=True, metadata={"description": "position in the organization's ledger"})
    kind = fields.String(required=True, validate=validate.OneOf(
        ("grant", "reservation", "settlement", "refund", "expiry")))
    amount = fields.Integer(required=True, metadata={"description": "signed, " + MILLI})
    balance_after = fields.Integer(required=True, metadata={"description": MILLI})
    actor = fields.String(allow_none=True, required=True, metadata={"description": "user id; null = system"})
    reference = fields.String(allow_none=True, required=True, metadata={
        "description": "reservation: job id; settlement/refund: reservation id; expiry: grant id"})
    idempotency_key = fields.String(allow_none=True, required=True)
    comment = fields.String(allow_none=True, required=True)
    job_id = fields.String(allow_none=True, required=True)
    job_type = fields.String(allow_none=True, required=True)
    outcome = fields.String(allow_none=True, required=True, validate=validate.OneOf(("succeeded", "failed")),
                            metadata={"description": "settlement and refund entries: the job's outcome"})
    expires_at = Timestamp(allow_none=True, required=True)
    created_at = Timestamp(required=True)


class CreditWriteSchema(Open):
    entry = fields.Nested(LedgerEntrySchema, required=True)
    balance = fields.Integer(required=True, metadata={"description": "balance right after this entry, " + MILLI})


class LedgerPageSchema(Open):
    balance = fields.Integer(required=True, metadata={"description": MILLI})
    items = fields.List(fields.Nested(LedgerEntrySchema), required=True, metadata={"description": "newest first"})
    next_cursor = fields.String(allow_none=True, required=True)


# -- audit: the organization's activity log (services/audit) ------------------------------------

ACTOR_SCHEMA = {"oneOf": [
    {"type": "string", "enum": ["system"], "description": "no person: a timer, a sweep, a reaction to another event"},
    {"type": "object", "required": ["user_id", "is_superuser"],
     "properties": {"user_id": {"type": "string", "nullable": True,
                                "description": "null: the person deleted their account since"},
                    "is_superuser": {"type": "boolean"}}}]}


class AuditLogQuery(Strict):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, validate=SEQUENCE_CURSOR)
    action = fields.String(load_default=None, validate=[validate.Length(max=64), validate.Regexp(
        r"^[a-z_]+(\.[a-z_]+)?$", error="Not an action name.")], metadata={
        "description": "only entries of this action (`member.joined`) or of this kind (`member`)"})
    actor = fields.String(load_default=None, validate=validate.Length(min=1, max=100), metadata={
        "description": "only entries of this user id, or `system`"})
    since = BoundedDateTime(load_default=None, metadata={"description": "only entries at or after this moment"})


class AuditTargetSchema(Open):
    type = fields.String(required=True, metadata={
        "description": "organization, member, invite, credits, storage or notification_settings"})
    id = fields.String(allow_none=True, required=True)


class AuditEntrySchema(Open):
    id = fields.String(required=True)
    sequence = fields.Integer(required=True, metadata={"description": "position in the organization's log (its hash "
                                                                      "chain)"})
    organization_id = fields.String(required=True)
    at = Timestamp(required=True, metadata={"description": "when it happened (the event's occurred_at)"})
    actor = fields.Raw(required=True, metadata=dict(ACTOR_SCHEMA, description="who did it"))
    action = fields.String(required=True, metadata={"description": "what happened, e.g. `member.role_changed`"})
    target = fields.Nested(AuditTargetSchema, required=True)
    details = fields.Dict(required=True, metadata={
        "description": "what the action changed; never a secret; a person's id, address or name is null "
                       "once they deleted their account"})
    request_id = fields.String(allow_none=True, required=True, metadata={
        "description": "the X-Request-ID of the request that caused it; null for system work"})
    hash = fields.String(required=True, metadata={
        "description": "SHA-256 (hex) over this entry and the previous entry's hash"})


class AuditLogPageSchema(Open):
    items = fields.List(fields.Nested(AuditEntrySchema), required=True, metadata={"description": "newest first"})
    next_cursor = fields.String(allow_none=True, required=True)


class AuditBreakSchema(Open):
    sequence = fields.Integer(required=True)
    id = fields.String(allow_none=True, required=True, metadata={"description": "null: the entry is missing"})
    reason = fields.String(required=True, validate=validate.OneOf(("hash_mismatch", "missing", "link_mismatch")))


class AuditVerifyQuery(Strict):
    cursor = fields.String(load_default=None, validate=SEQUENCE_CURSOR, metadata={
        "description": "the `next_cursor` of the previous call: go on after that entry"})


class AuditVerificationSchema(Open):
    organization_id = fields.String(required=True)
    ok = fields.Boolean(required=True, metadata={"description": "no entry of the checked range failed"})
    entries = fields.Integer(required=True, metadata={"description": "entries checked by this call"})
    checked_from = fields.Integer(allow_none=True, required=True)
    checked_to = fields.Integer(allow_none=True, required=True)
    next_cursor = fields.String(allow_none=True, required=True, metadata={
        "description": "null: checked up to the newest entry; else call again with it (a big log is "
                       "checked over several calls, each within the service's time budget)"})
    first_sequence = fields.Integer(allow_none=True, required=True, metadata={
        "description": "the oldest entry kept (older ones left by retention; the chain starts from its anchor)"})
    last_sequence = fields.Integer(allow_none=True, required=True)
    head_hash = fields.String(allow_none=True, required=True)
    broken_at = fields.Nested(AuditBreakSchema, allow_none=True, required=True, metadata={
        "description": "the first entry whose hash or link does not match; null when ok"})
