"""What the notifications service does with each event: keep its own copy of what it needs to
address mail (organization name, owner, plan, counts, members with role and email) and queue the
mail CONTRACT §4 asks for.

Every handler is idempotent: facts are applied only if newer (``*_as_of`` = the event's
``occurred_at``), and mail is queued under a key made of the event id and the mail kind, so a
redelivered event finds its mail already recorded. The mail a Notifier records is leased to it
and collected in ``recorded`` -- its one output, which the service sends right away, also when the
handler fails after recording (the dispatcher timer would send it only once the lease expires).
:data:`HANDLERS` says which method applies which event.
"""
import logging
from datetime import datetime, timedelta

from common import events
from common.addresses import normalize_address, single_line
from common.events import isoformat, utcnow
from services.notifications import dispatch, preferences

log = logging.getLogger(__name__)

REMINDER_LEAD = timedelta(weeks=6)


class NotReady(Exception):
    """The event needs a fact not received yet (its organization); the handler retries later."""


def parse_time(value):
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class Notifier:
    def __init__(self, store, base_url, lease_seconds, cipher):
        self.store = store
        self.base_url = str(base_url).rstrip("/")
        self.lease_seconds = lease_seconds
        self.cipher = cipher
        self.recorded = []  # the mail this notifier recorded, leased to it

    # -- addressing ----------------------------------------------------------------------------
    def _org(self, org_id, required=True):
        doc = self.store.organization(org_id)
        if required and (doc is None or not doc.get("owner_email")):
            raise NotReady(f"organization {org_id} not known yet")
        return doc or {"_id": org_id}

    def _context(self, org, **extra):
        org_id = org["_id"]
        # names and other free text are one line each (they may appear in a subject)
        extra = {key: single_line(value, limit=300) if isinstance(value, str) else value
                 for key, value in extra.items()}
        return dict(extra, org_id=org_id, org_name=single_line(org.get("name") or "your organization", limit=300),
                    org_url=f"{self.base_url}/organizations/{org_id}",
                    settings_url=f"{self.base_url}/organizations/{org_id}/settings/notifications")

    @staticmethod
    def _addresses(*candidates):
        seen = []
        for candidate in candidates:
            address = normalize_address(candidate)
            if address is None:
                if candidate:
                    log.warning("not mailing unusable address %r", candidate)
                continue
            if address not in seen:
                seen.append(address)
        return seen

    def _admin_emails(self, org_id):
        return [doc.get("email") for doc in self.store.admins(org_id) if doc.get("email")]

    def _queue(self, org_id, kind, key, recipients, context, secret=False):
        created = dispatch.enqueue(self.store, org_id, kind, key, recipients, context, self.lease_seconds,
                                   self.cipher if secret else None)
        self.recorded += created

    # -- organization facts ----------------------------------------------------------------------
    def organization_created(self, event):
        org_id, as_of = event["organization_id"], event["occurred_at"]
        self.store.set_if_newer(org_id, "name", {"name": event["name"]}, as_of)
        if event.get("owner_email"):
            self.store.set_if_newer(org_id, "owner", {"owner_user_id": event["owner_user_id"],
                                                      "owner_email": event["owner_email"],
                                                      "owner_name": event.get("owner_name")}, as_of)
        if event.get("plan"):
            self._apply_plan(org_id, event["plan"], as_of)

    def organization_renamed(self, event):
        self.store.set_if_newer(event["organization_id"], "name", {"name": event["name"]}, event["occurred_at"])

    def _apply_plan(self, org_id, plan, as_of):
        plan = dict(plan, paid_until=parse_time(plan.get("paid_until")))
        self.store.set_if_newer(org_id, "plan", {"plan": plan}, as_of)
        self.store.schedule_reminder(org_id, REMINDER_LEAD)

    def plan_changed(self, event):
        org_id = event["organization_id"]
        before = self.store.organization(org_id) or {}
        self._apply_plan(org_id, event["plan"], event["occurred_at"])
        org = self._org(org_id)
        old_plan = event.get("old_plan") or before.get("plan")
        new_plan = event["plan"]
        recipients = self._addresses(self._settings(org_id)["plan_email"] or org["owner_email"])
        self._queue(org_id, "plan_changed", f'{event["event_id"]}:plan_changed', recipients,
                             self._context(org, old_plan=_plan_view(old_plan), new_plan=_plan_view(new_plan)))
        self._check_limits(org_id, event["event_id"])

    def organization_deletion_requested(self, event):
        org_id = event["organization_id"]
        org = self._org(org_id, required=False)
        org.setdefault("name", event["name"])
        recipients = self._addresses(org.get("owner_email") or event.get("owner_email"))
        self._queue(org_id, "organization_deletion_requested",
                           f'{event["event_id"]}:organization_deletion_requested', recipients,
                           self._context(org, org_name=event["name"]))

    # -- membership facts --------------------------------------------------------------------------
    def member_joined(self, event):
        org_id, as_of, user_id = event["organization_id"], event["occurred_at"], event["user_id"]
        self.store.put_member(org_id, user_id, {"email": event["email"], "name": event["name"],
                                                "role": event["role"], "left": False}, as_of)
        if event.get("is_owner"):
            self.store.set_if_newer(org_id, "owner", {"owner_user_id": user_id, "owner_email": event["email"],
                                                      "owner_name": event["name"]}, as_of)
        if event.get("member_count") is not None:
            self.store.set_if_newer(org_id, "members", {"member_count": event["member_count"]}, as_of)
        org = None
        if not event.get("is_owner"):  # the founder joining their own new organization is no news
            org = self._org(org_id)  # read after the facts above were applied
            recipients = self._addresses(self._settings(org_id)["new_user_email"] or org["owner_email"])
            self._queue(org_id, "member_joined", f'{event["event_id"]}:member_joined', recipients,
                                 self._context(org, member_name=event["name"], member_email=event["email"],
                                               role=event["role"], via_invite=event["via_invite"]))
        self._check_limits(org_id, event["event_id"], org)

    def member_left(self, event):
        org_id, as_of = event["organization_id"], event["occurred_at"]
        self.store.put_member(org_id, event["user_id"], {"left": True}, as_of)
        if event.get("member_count") is not None:
            self.store.set_if_newer(org_id, "members", {"member_count": event["member_count"]}, as_of)
        self._check_limits(org_id, event["event_id"])

    def member_role_changed(self, event):
        self.store.put_member(event["organization_id"], event["user_id"], {"role": event["role"]},
                              event["occurred_at"])

    def ownership_transferred(self, event):
        fields = {"owner_user_id": event["to_user_id"]}
        if event.get("to_user_email"):
            fields.update(owner_email=event["to_user_email"], owner_name=event.get("to_user_name"))
        self.store.set_if_newer(event["organization_id"], "owner", fields, event["occurred_at"])

    def invite_created(self, event):
        org_id = event["organization_id"]
        org = self._org(org_id, required=False)
        if event.get("organization_name"):
            org = dict(org, name=event["organization_name"])
        recipients = self._addresses(event["email"])
        expires_at = parse_time(event["expires_at"])
        self._queue(org_id, "invite", f'{event["event_id"]}:invite', recipients,
                           self._context(org, inviter_name=event["inviter_name"], role=event["role"],
                                         accept_url=event["accept_url"], expires_at=_human(expires_at)),
                           secret=True)  # the accept link is a bearer secret: stored encrypted

    # -- usage facts -----------------------------------------------------------------------------
    def storage_updated(self, event):
        org_id = event["organization_id"]
        self.store.set_if_newer(org_id, "storage", {"storage_used": event["used_bytes"]}, event["occurred_at"])
        self._check_limits(org_id, event["event_id"])

    def ai_job_completed(self, event):
        org_id = event["organization_id"]
        org = self._org(org_id, required=False)
        mode = self._settings(org_id)["ai_job_recipients"]
        initiator = self.store.member(org_id, event["initiator_user_id"])
        candidates = []
        if mode in ("initiator", "initiator_and_admins"):
            if initiator is None or not initiator.get("email"):
                log.warning("ai job %s: initiator %s is not a known member", event["job_id"],
                            event["initiator_user_id"])
            else:
                candidates.append(initiator["email"])
        if mode in ("admins", "initiator_and_admins"):
            candidates += self._admin_emails(org_id)
        self._queue(org_id, "ai_job_completed", f'{event["event_id"]}:ai_job_completed',
                           self._addresses(*candidates),
                           self._context(org, job_id=event["job_id"], job_type=event["job_type"],
                                         outcome=event["outcome"], credits=event["credits"],
                                         initiator_name=(initiator or {}).get("name") or "a member"))

    # -- limits: mail once per crossing ----------------------------------------------------------
    def _check_limits(self, org_id, event_id, org=None):
        """Mail when a limit is exceeded, once per crossing.

        Each time usage is seen back under a limit, the limit is re-armed with that event's id
        (``<flag>_armed_by``). The mail for being over the limit is queued under a key made of the
        arming, so every report while over the limit -- redeliveries, later reports, concurrent
        handlers on other replicas -- names the same mail and the unique delivery id lets only the
        first one through. No conditional update decides it (they are not atomic on FerretDB).
        ``org``: the organization as read after this event's facts were applied, if the caller has it."""
        org = org or self.store.organization(org_id)
        if org is None:
            return
        plan = org.get("plan") or {}
        for kind, flag, used, included, unit in (
                ("storage_limit_exceeded", "storage_exceeded", org.get("storage_used"),
                 plan.get("included_storage_bytes"), "bytes"),
                ("member_limit_exceeded", "members_exceeded", org.get("member_count"),
                 plan.get("included_users"), "members")):
            exceeded = used is not None and included is not None and used > included
            armed_by = flag + "_armed_by"
            if not exceeded:
                if org.get(flag) is not False:
                    self.store.set_fields(org_id, {flag: False, armed_by: event_id})
                continue
            if org.get(flag) is not True:
                self.store.set_fields(org_id, {flag: True})
            if not org.get("owner_email"):
                raise NotReady(f"owner of {org_id} not known yet")
            recipients = self._addresses(self._settings(org_id)["plan_email"] or org["owner_email"])
            key = f'{org_id}:{kind}:{org.get(armed_by) or "first"}'
            recipients = self.store.decide_once(key, recipients)  # a settings change meanwhile: no new mail
            self._queue(org_id, kind, key, recipients,
                                  self._context(org, used=used, included=included, over=used - included,
                                                unit=unit, used_text=_amount(used, unit),
                                                included_text=_amount(included, unit),
                                                over_text=_amount(used - included, unit)))

    # -- plan reminders --------------------------------------------------------------------------
    def send_reminders(self, now=None):
        """What the reminder timer runs: 6 weeks before ``paid_until``, and once it has passed."""
        now = now or utcnow()
        for org in self.store.reminders_due(now):
            paid_until = (org.get("plan") or {}).get("paid_until")
            if paid_until is None or org.get("reminder_for") != paid_until:
                continue
            try:
                self._remind(org, paid_until, now)
            except Exception:
                log.exception("plan reminder for %s failed; next tick retries", org["_id"])

    def _remind(self, org, paid_until, now):
        org_id = org["_id"]
        stage = "plan_expired" if now >= paid_until else "plan_expiring"
        if not org.get("owner_email"):
            return
        plan_email = self._settings(org_id)["plan_email"]
        recipients = self._addresses(plan_email) if plan_email else self._addresses(
            org["owner_email"], *self._admin_emails(org_id))
        # The delivery ids (org, stage, paid_until, recipient) make this idempotent across replicas
        # and restarts; the conditional update then moves the schedule on exactly once.
        key = f"{org_id}:{stage}:{isoformat(paid_until)}"
        plan = dict(org["plan"], paid_until=isoformat(paid_until))
        self._queue(org_id, stage, key, recipients,
                             self._context(org, plan=_plan_view(plan), paid_until_date=_human(paid_until),
                                           expired=stage == "plan_expired"))
        next_due = paid_until if stage == "plan_expiring" else None
        self.store.advance_reminder(org_id, paid_until, org["reminder_due_at"], next_due)

    def _settings(self, org_id):
        return preferences.current(self.store, org_id)



#: which Notifier method applies which event; the service's handlers dispatch through this table
HANDLERS = {
    events.ORGANIZATION_CREATED: Notifier.organization_created,
    events.ORGANIZATION_RENAMED: Notifier.organization_renamed,
    events.PLAN_CHANGED: Notifier.plan_changed,
    events.ORGANIZATION_DELETION_REQUESTED: Notifier.organization_deletion_requested,
    events.MEMBER_JOINED: Notifier.member_joined,
    events.MEMBER_LEFT: Notifier.member_left,
    events.MEMBER_ROLE_CHANGED: Notifier.member_role_changed,
    events.OWNERSHIP_TRANSFERRED: Notifier.ownership_transferred,
    events.INVITE_CREATED: Notifier.invite_created,
    events.STORAGE_UPDATED: Notifier.storage_updated,
    events.AI_JOB_COMPLETED: Notifier.ai_job_completed,
}

def _plan_view(plan):
    plan = dict(plan or {})
    plan.setdefault("name", "none")
    return plan


def _human(moment):
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def _amount(value, unit):
    if unit != "bytes":
        return f"{value} {unit}"
    size = float(value)
    for suffix in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or suffix == "TB":
            return (f"{int(size)} {suffix}") if suffix == "bytes" else (f"{size:.1f} {suffix}")
        size /= 1000.0

