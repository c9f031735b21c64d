"""Event names and payload schemas: the bus contract every publisher and subscriber shares.

Every event carries ``event_id`` (a hyphenated uuid4; events published before the envelope change
carried 32 hex digits, see the README's Events section), ``occurred_at`` (ISO 8601 UTC) and, where one
applies, ``organization_id``. Publishers build payloads with :func:`make_event`, which validates
against the schema below, so a malformed event never leaves a service.
"""
import functools
import uuid
from datetime import UTC, datetime

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

ROLES = ("member", "dataset_manager", "admin")
#: what a role may do grows with its rank (the gateway's route check, the membership service's)
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
PLAN_NAMES = ("personal", "team", "power", "team_trial", "power_trial", "custom")
#: the plan of an organization nobody has set one for (every limit open)
DEFAULT_PLAN = {"name": "custom", "included_users": None, "included_storage_bytes": None, "paid_until": None}
#: who is mailed when an AI job completes (an organization's notification setting)
AI_JOB_RECIPIENTS = ("initiator", "initiator_and_admins", "admins")

# (source service, event type) -- the exchange is "<source>.events", the routing key the type.
ORGANIZATION_CREATED = ("org", "organization_created")
ORGANIZATION_RENAMED = ("org", "organization_renamed")
PLAN_CHANGED = ("org", "plan_changed")
ORGANIZATION_DELETION_REQUESTED = ("org", "organization_deletion_requested")
ORGANIZATION_DELETED = ("org", "organization_deleted")
MEMBER_JOINED = ("membership", "member_joined")
MEMBER_LEFT = ("membership", "member_left")
MEMBER_ROLE_CHANGED = ("membership", "member_role_changed")
OWNERSHIP_TRANSFERRED = ("membership", "ownership_transferred")
INVITE_CREATED = ("membership", "invite_created")
INVITE_REVOKED = ("membership", "invite_revoked")
DELETION_RIGHT_CHANGED = ("membership", "deletion_right_changed")
ACCESS_REVOKED = ("membership", "access_revoked")
ACCOUNT_DELETED = ("membership", "account_deleted")
STORAGE_UPDATED = ("usage", "storage_updated")
CREDITS_CHANGED = ("usage", "credits_changed")
AI_JOB_COMPLETED = ("usage", "ai_job_completed")
NOTIFICATION_SETTINGS_CHANGED = ("notifications", "notification_settings_changed")


def organization_purged(service):
    return (service, "organization_purged")


class Actor(fields.Field):
    """Who caused the event: ``{"user_id", "is_superuser"}`` (a person, as the gateway verified their
    token) or the string ``"system"`` (a timer, a sweep, a reaction to another event)."""

    #: what the AsyncAPI document says of it (``common.asyncapi``)
    json_schema = {"oneOf": [
        {"type": "string", "enum": ["system"]},
        {"type": "object", "required": ["user_id", "is_superuser"],
         "properties": {"user_id": {"type": "string"}, "is_superuser": {"type": "boolean"}}}]}

    def _validate_actor(self, value):
        if value == "system":
            return value
        if (isinstance(value, dict) and set(value) == {"user_id", "is_superuser"}
                and isinstance(value["user_id"], str) and value["user_id"] and isinstance(value["is_superuser"], bool)):
            return value
        raise ValidationError('Must be "system" or {"user_id": <string>, "is_superuser": <boolean>}.')

    def _serialize(self, value, attr, obj, **kwargs):
        return value

    def _deserialize(self, value, attr, data, **kwargs):
        return self._validate_actor(value)


class EventSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # subscribers tolerate fields added by newer publishers

    event_id = fields.String(required=True, metadata={
        "description": "unique per event; a hyphenated uuid4 (32 hex digits for events from before "
                       "the envelope change); equals the AMQP message_id"})
    occurred_at = fields.String(required=True, metadata={
        "description": "ISO 8601 UTC with milliseconds and a Z", "format": "date-time"})
    organization_id = fields.String(allow_none=True, metadata={
        "description": "null only for account_deleted"})
    # Extensions (issue 19): every event says who caused it and in answer to which request, so a
    # subscriber (the audit service) never has to ask back. Filled in by ``common.outbox.pending``.
    actor = Actor(metadata={"description": "who caused the event: a person or \"system\""})
    request_id = fields.String(allow_none=True, metadata={
        "description": "the request that caused the event (also the AMQP correlation_id); null for "
                       "work no request caused"})


class Iso(fields.String):
    """A moment as ISO 8601 UTC text: a datetime is written with :func:`isoformat`, text (a moment
    that arrived in an event) is kept as it is; loading validates text like any string field."""

    def _serialize(self, value, attr, obj, **kwargs):
        return isoformat(value) if isinstance(value, datetime) else value


class PlanSchema(Schema):
    """A plan: validates it in events, and is how every service presents one (org, usage)."""
    name = fields.String(required=True, validate=validate.OneOf(PLAN_NAMES))
    included_users = fields.Integer(allow_none=True, required=True)
    included_storage_bytes = fields.Integer(allow_none=True, required=True)
    paid_until = Iso(allow_none=True, required=True)


class OrganizationCreated(EventSchema):
    name = fields.String(required=True)
    owner_user_id = fields.String(required=True)
    # Extensions beyond the contract's minimum, so subscribers need not ask back.
    owner_email = fields.String()
    owner_name = fields.String()
    plan = fields.Nested(PlanSchema)
    created_at = fields.String()


class OrganizationRenamed(EventSchema):
    name = fields.String(required=True)
    previous_name = fields.String()  # extension: the name before


class PlanChanged(EventSchema):
    plan = fields.Nested(PlanSchema, required=True)
    old_plan = fields.Nested(PlanSchema, allow_none=True)


class OrganizationDeletionRequested(EventSchema):
    name = fields.String(required=True)
    requested_by = fields.String(required=True)
    owner_email = fields.String(allow_none=True)


class OrganizationDeleted(EventSchema):
    # Extensions: what the completion mail needs once every service has purged the organization
    # (nothing else of it is left to address the owner with).
    name = fields.String()
    owner_email = fields.String(allow_none=True)
    requested_at = fields.String(allow_none=True)
    completed_at = fields.String(allow_none=True)


class MemberJoined(EventSchema):
    user_id = fields.String(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    via_invite = fields.Boolean(required=True)
    invite_id = fields.String()  # extension: the invite accepted, when via_invite
    is_owner = fields.Boolean()
    member_count = fields.Integer()  # seats taken after this join


class MemberLeft(EventSchema):
    user_id = fields.String(required=True)
    reason = fields.String(required=True, validate=validate.OneOf(("left", "removed")))
    member_count = fields.Integer()  # seats taken after this departure


class MemberRoleChanged(EventSchema):
    user_id = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    previous_role = fields.String(validate=validate.OneOf(ROLES))  # extension


class DeletionRightChanged(EventSchema):
    """An admin was given (or lost) the right to delete the organization: by the owner, or by a
    demotion, which clears it."""
    user_id = fields.String(required=True)
    granted = fields.Boolean(required=True)


class OwnershipTransferred(EventSchema):
    from_user_id = fields.String(required=True)
    to_user_id = fields.String(required=True)
    to_user_email = fields.String()
    to_user_name = fields.String()


class InviteCreated(EventSchema):
    invite_id = fields.String(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    inviter_name = fields.String(required=True)
    accept_url = fields.String(required=True)
    expires_at = fields.String(required=True)
    organization_name = fields.String()


class InviteRevoked(EventSchema):
    """An admin revoked a pending invite (its link no longer works). No token, ever."""
    invite_id = fields.String(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class NotificationSettingsChanged(EventSchema):
    """Who gets which mail changed (``PUT .../notifications``): the settings after the change."""
    plan_email = fields.String(allow_none=True, required=True)
    new_user_email = fields.String(allow_none=True, required=True)
    ai_job_recipients = fields.String(required=True)


class AccessRevoked(EventSchema):
    user_id = fields.String(allow_none=True)
    session_id = fields.String(allow_none=True)
    # unix seconds (millisecond precision): matching tokens with an earlier ``iat`` are void
    not_before = fields.Float(required=True, metadata={
        "description": "unix seconds (millisecond precision): tokens of the user or session signed "
                       "under an earlier cut-off are void"})


class AccountDeleted(EventSchema):
    """A person deleted their account (``DELETE /me``): no ``organization_id``; subscribers purge
    what they hold of the person (the address is here for that, and only for that)."""
    user_id = fields.String(required=True)
    email = fields.String(required=True)
    organizations_left = fields.List(fields.String(), required=True)


class StorageUpdated(EventSchema):
    used_bytes = fields.Integer(required=True, metadata={"description": "bytes"})
    datasets = fields.Integer(required=True)
    # Extension: position in the organization's report chain; read models keep the highest.
    sequence = fields.Integer()
    # Extensions: the plan's limit as the usage service knew it, and the total before this report
    # (a subscriber tells a crossing of the limit from a report while over it)
    included_bytes = fields.Integer(allow_none=True, metadata={"description": "bytes; null = unlimited"})
    exceeded = fields.Boolean()
    previous_used_bytes = fields.Integer(metadata={"description": "bytes"})


class CreditsChanged(EventSchema):
    balance = fields.Integer(required=True, metadata={"description": "milli-credits (1 credit = 1000)"})
    # Extension: the ledger entry's position (``seq``); read models keep the highest.
    sequence = fields.Integer()
    # Extensions: the ledger entry that changed the balance
    kind = fields.String(validate=validate.OneOf(("grant", "reservation", "settlement", "refund", "expiry")))
    amount = fields.Integer(metadata={"description": "milli-credits, negative for a debit"})
    entry_id = fields.String()
    job_id = fields.String(allow_none=True)
    job_type = fields.String(allow_none=True)
    comment = fields.String(allow_none=True)


class AiJobCompleted(EventSchema):
    job_id = fields.String(required=True)
    job_type = fields.String(required=True)
    initiator_user_id = fields.String(required=True)
    outcome = fields.String(required=True, validate=validate.OneOf(("succeeded", "failed")))
    credits = fields.Integer(required=True, metadata={
        "description": "milli-credits (1 credit = 1000) reserved for the job: spent if it succeeded, refunded if it "
                       "failed"})
    reservation_id = fields.String()  # extension: the ledger entry settled


class OrganizationPurged(EventSchema):
    service = fields.String(required=True)
    removed = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


SCHEMAS = {
    ORGANIZATION_CREATED: OrganizationCreated,
    ORGANIZATION_RENAMED: OrganizationRenamed,
    PLAN_CHANGED: PlanChanged,
    ORGANIZATION_DELETION_REQUESTED: OrganizationDeletionRequested,
    ORGANIZATION_DELETED: OrganizationDeleted,
    MEMBER_JOINED: MemberJoined,
    MEMBER_LEFT: MemberLeft,
    MEMBER_ROLE_CHANGED: MemberRoleChanged,
    OWNERSHIP_TRANSFERRED: OwnershipTransferred,
    INVITE_CREATED: InviteCreated,
    INVITE_REVOKED: InviteRevoked,
    DELETION_RIGHT_CHANGED: DeletionRightChanged,
    NOTIFICATION_SETTINGS_CHANGED: NotificationSettingsChanged,
    ACCESS_REVOKED: AccessRevoked,
    ACCOUNT_DELETED: AccountDeleted,
    STORAGE_UPDATED: StorageUpdated,
    CREDITS_CHANGED: CreditsChanged,
    AI_JOB_COMPLETED: AiJobCompleted,
}
for _service in ("org", "membership", "notifications", "usage", "audit"):
    SCHEMAS[organization_purged(_service)] = OrganizationPurged


def utcnow():
    return datetime.now(UTC)


def isoformat(moment):
    """ISO 8601 UTC with a 'Z', millisecond precision (what Mongo stores)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(event, organization_id=None, **payload):
    """Build and validate an event body; returns ``(source, type, body)``."""
    source, event_type = event
    body = dict(payload, event_id=str(uuid.uuid4()), occurred_at=isoformat(utcnow()),
                organization_id=organization_id)
    errors = _schema(event).validate(body)
    if errors:
        raise ValidationError({"event": event_type, "errors": errors})
    return source, event_type, body


def load_event(event, body):
    """Validate an incoming event; unknown extra fields are dropped."""
    return _schema(event).load(body)


@functools.cache
def _schema(event):
    """One schema instance per event type: marshmallow schemas are reusable, and building one per
    event was most of the cost of reading an event (profiled in the mail fan-out benchmark)."""
    return SCHEMAS[event]()
