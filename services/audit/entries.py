"""What each public event means in the audit log: zero, one or two entries.

Built from the event bodies alone (issue 19): every field an entry needs is in the event, including
who acted (``actor``) and the request that caused it (``request_id``), both added to every event by
``common.outbox.pending``. Details are picked field by field, never copied wholesale, so a secret a
publisher adds to an event (the invite's ``accept_url`` carries its token) can never reach the log.
"""
from common import events

#: every action the log records, in the README's order
ACTIONS = (
    "organization.created", "organization.renamed", "plan.changed", "notification_settings.changed",
    "member.joined", "member.left", "member.removed", "member.role_changed",
    "deletion_right.granted", "deletion_right.revoked", "ownership.transferred",
    "invite.created", "invite.revoked", "invite.accepted",
    "credits.granted", "credits.reserved", "credits.settled", "credits.refunded", "credits.expired",
    "storage.limit_exceeded", "organization.deletion_requested",
)
#: the part before the dot: ``?action=member`` lists every member action
KINDS = tuple(sorted({action.split(".")[0] for action in ACTIONS}))

CREDIT_ACTIONS = {"grant": "credits.granted", "reservation": "credits.reserved", "refund": "credits.refunded",
                  "expiry": "credits.expired"}


def _pick(event, *names):
    """The named fields the event has (absent ones are left out, not written as null)."""
    return {name: event[name] for name in names if name in event}


def _organization(event):
    return {"type": "organization", "id": event["organization_id"]}


def _member(user_id):
    return {"type": "member", "id": user_id}


def _plan_name(plan):
    return plan.get("name") if plan else None


def organization_created(event):
    return [("organization.created", _organization(event),
             dict(_pick(event, "name", "owner_user_id"), plan=_plan_name(event.get("plan"))))]


def organization_renamed(event):
    return [("organization.renamed", _organization(event), _pick(event, "name", "previous_name"))]


def plan_changed(event):
    return [("plan.changed", _organization(event), {"plan": event["plan"], "previous_plan": event.get("old_plan")})]


def organization_deletion_requested(event):
    return [("organization.deletion_requested", _organization(event), _pick(event, "name", "requested_by"))]


def notification_settings_changed(event):
    return [("notification_settings.changed", {"type": "notification_settings", "id": event["organization_id"]},
             _pick(event, "plan_email", "new_user_email", "ai_job_recipients"))]


def member_joined(event):
    joined = ("member.joined", _member(event["user_id"]),
              _pick(event, "email", "name", "role", "via_invite", "is_owner"))
    if event.get("via_invite") and event.get("invite_id"):
        accepted = ("invite.accepted", {"type": "invite", "id": event["invite_id"]},
                    _pick(event, "user_id", "email", "role"))
        return [accepted, joined]
    return [joined]


def member_left(event):
    action = "member.removed" if event["reason"] == "removed" else "member.left"
    return [(action, _member(event["user_id"]), _pick(event, "reason"))]


def member_role_changed(event):
    return [("member.role_changed", _member(event["user_id"]), _pick(event, "role", "previous_role"))]


def deletion_right_changed(event):
    action = "deletion_right.granted" if event["granted"] else "deletion_right.revoked"
    return [(action, _member(event["user_id"]), {})]


def ownership_transferred(event):
    return [("ownership.transferred", _member(event["to_user_id"]), _pick(event, "from_user_id", "to_user_id"))]


def invite_created(event):
    return [("invite.created", {"type": "invite", "id": event["invite_id"]},
             _pick(event, "email", "role", "expires_at"))]


def invite_revoked(event):
    return [("invite.revoked", {"type": "invite", "id": event["invite_id"]}, _pick(event, "email", "role"))]


def credits_changed(event):
    """Grants, reservations, refunds and expiries; an event from before ``kind`` was added says
    only the balance, which is no action of anyone's."""
    action = CREDIT_ACTIONS.get(event.get("kind"))
    if action is None:
        return []
    details = {key: value for key, value in _pick(event, "amount", "balance", "job_id", "job_type", "comment").items()
               if value is not None}
    return [(action, {"type": "credits", "id": event.get("entry_id")}, details)]


def ai_job_completed(event):
    return [("credits.settled", {"type": "credits", "id": event.get("reservation_id")},
             _pick(event, "job_id", "job_type", "outcome", "credits", "initiator_user_id"))]


def storage_updated(event):
    """Only a crossing of the plan's limit: a report that takes usage above it. Reports while over
    it, and reports without the limit (from before it was added), are no new fact."""
    included, before = event.get("included_bytes"), event.get("previous_used_bytes")
    if not event.get("exceeded") or included is None or before is None or before > included:
        return []
    return [("storage.limit_exceeded", {"type": "storage", "id": event["organization_id"]},
             {"used_bytes": event["used_bytes"], "included_bytes": included})]


#: the events the service subscribes to (``common.topology``) and what each becomes
MEANING = {
    events.ORGANIZATION_CREATED: organization_created,
    events.ORGANIZATION_RENAMED: organization_renamed,
    events.PLAN_CHANGED: plan_changed,
    events.ORGANIZATION_DELETION_REQUESTED: organization_deletion_requested,
    events.NOTIFICATION_SETTINGS_CHANGED: notification_settings_changed,
    events.MEMBER_JOINED: member_joined,
    events.MEMBER_LEFT: member_left,
    events.MEMBER_ROLE_CHANGED: member_role_changed,
    events.DELETION_RIGHT_CHANGED: deletion_right_changed,
    events.OWNERSHIP_TRANSFERRED: ownership_transferred,
    events.INVITE_CREATED: invite_created,
    events.INVITE_REVOKED: invite_revoked,
    events.CREDITS_CHANGED: credits_changed,
    events.AI_JOB_COMPLETED: ai_job_completed,
    events.STORAGE_UPDATED: storage_updated,
}


def of(event_type, event):
    """``[(action, target, details)]`` the event means, in the order they are written."""
    return MEANING[event_type](event)
