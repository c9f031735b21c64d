"""Notifications service entrypoints: settings, the delivery log, event handlers, timers.

Domain logic lives in ``notify`` (events -> mail), ``settings`` (settings, delivery log) and
``dispatch`` (the mail outbox); this module only wires them to nameko.
"""
from datetime import timedelta

from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc

from common import bus, events
from common.events import utcnow
from common.context import RequestContext
from common.handlers import reliable_handler
from common.liveness import Liveness
from common.metrics import Metrics
from common.mongo import StoreProvider
from common.rpc import ask
from common.timers import configured_timer
from common.validation import checked_rpc
from services.notifications import deletion, dispatch, notify, settings
from services.notifications.mail import SmtpSender
from services.notifications.store import NotificationsStore

bus.least_privilege()  # this process declares no exchange; its replies carry its name (common/bus.py)

domain_rpc = checked_rpc  # @rpc, DomainError expected; arguments must be Unicode text (common.validation)


class Mailer(DependencyProvider):
    """The SMTP sender and the retry policy, built once from the config."""

    def setup(self):
        config = self.container.config
        self.sender = SmtpSender.from_config(config)
        self.policy = dispatch.DispatchPolicy.from_config(config)

    def get_dependency(self, worker_ctx):
        return self


class NotificationsService:
    name = "notifications"
    context = RequestContext()  # the request and event id of each worker (common/context.py)
    liveness = Liveness()  # a heartbeat while the queue consumer consumes (common/liveness.py, common/probe.py)
    metrics = Metrics()  # /metrics on METRICS_PORT (common/metrics.py)

    store = StoreProvider(NotificationsStore, "notifications")
    mailer = Mailer()
    config = Config()
    org = RpcProxy("org")

    def _require_live(self, org_id):
        deletion.require_live(self.store, org_id, lambda *question: ask(self.org, self.config, *question))

    def _notifier(self):
        return notify.Notifier(self.store, self.config.get("PUBLIC_BASE_URL") or "http://127.0.0.1:8080",
                               self.mailer.policy.lease_seconds)

    def _handle(self, event_type, method, body):
        """Apply the event (recording its mail first, leased to us), then send that mail right away."""
        event = events.load_event(event_type, body)
        if self.store.was_purged(event.get("organization_id")):
            return  # a late event for a deleted organization must not bring it back
        notifier = self._notifier()
        try:
            getattr(notifier, method)(event)
        finally:  # what was recorded is sent even if the handler fails afterwards (and is retried)
            dispatch.send_recorded(self.store, self.mailer.sender, self.mailer.policy, notifier.recorded)
            # the purge may have run while this event was handled: what it missed goes now
            deletion.scrub_if_purged(self.store, event.get("organization_id"))

    @rpc
    def ping(self):
        return "pong"

    # -- settings and the delivery log -----------------------------------------------------------
    @domain_rpc
    def get_settings(self, org_id):
        self._require_live(org_id)
        return settings.get_settings(self.store, org_id)

    @domain_rpc
    def put_settings(self, org_id, values):
        self._require_live(org_id)
        return settings.put_settings(self.store, org_id, values)

    @domain_rpc
    def list_deliveries(self, org_id, limit=50, cursor=None):
        self._require_live(org_id)
        return settings.list_deliveries(self.store, org_id, limit, cursor)

    # -- events ----------------------------------------------------------------------------------
    @reliable_handler(events.ORGANIZATION_CREATED)
    def on_organization_created(self, event):
        self._handle(events.ORGANIZATION_CREATED, "organization_created", event)

    @reliable_handler(events.ORGANIZATION_RENAMED)
    def on_organization_renamed(self, event):
        self._handle(events.ORGANIZATION_RENAMED, "organization_renamed", event)

    @reliable_handler(events.PLAN_CHANGED)
    def on_plan_changed(self, event):
        self._handle(events.PLAN_CHANGED, "plan_changed", event)

    @reliable_handler(events.ORGANIZATION_DELETION_REQUESTED)
    def on_organization_deletion_requested(self, event):
        """Confirm to the owner first; purge once that mail is final (maybe on a later timer tick)."""
        deletion.mark_deleting(self.store, event["organization_id"])
        self._handle(events.ORGANIZATION_DELETION_REQUESTED, "organization_deletion_requested", event)
        deletion.purge_when_mailed(self.store, event["organization_id"])

    @reliable_handler(events.ORGANIZATION_DELETED)
    def on_organization_deleted(self, event):
        """The owner learns that the deletion completed; the mail is the organization's last trace
        here and goes once it is final (see ``dispatch.EPHEMERAL_KINDS``)."""
        event = events.load_event(events.ORGANIZATION_DELETED, event)
        recorded = deletion.completion_mail(self.store, event, self.mailer.policy.lease_seconds)
        dispatch.send_recorded(self.store, self.mailer.sender, self.mailer.policy, recorded)

    @domain_rpc
    def export(self, org_id):
        self._require_live(org_id)
        return deletion.export(self.store, org_id)

    @reliable_handler(events.MEMBER_JOINED)
    def on_member_joined(self, event):
        self._handle(events.MEMBER_JOINED, "member_joined", event)

    @reliable_handler(events.MEMBER_LEFT)
    def on_member_left(self, event):
        self._handle(events.MEMBER_LEFT, "member_left", event)

    @reliable_handler(events.ACCOUNT_DELETED)
    def on_account_deleted(self, event):
        """The person deleted their account: their copies as a member of any organization (with the
        address and name they carried) and the log of mail sent to them go. Idempotent."""
        event = events.load_event(events.ACCOUNT_DELETED, event)
        self.store.forget_person(event["user_id"], event["email"])

    @reliable_handler(events.MEMBER_ROLE_CHANGED)
    def on_member_role_changed(self, event):
        self._handle(events.MEMBER_ROLE_CHANGED, "member_role_changed", event)

    @reliable_handler(events.OWNERSHIP_TRANSFERRED)
    def on_ownership_transferred(self, event):
        self._handle(events.OWNERSHIP_TRANSFERRED, "ownership_transferred", event)

    @reliable_handler(events.INVITE_CREATED)
    def on_invite_created(self, event):
        self._handle(events.INVITE_CREATED, "invite_created", event)

    @reliable_handler(events.STORAGE_UPDATED)
    def on_storage_updated(self, event):
        self._handle(events.STORAGE_UPDATED, "storage_updated", event)

    @reliable_handler(events.AI_JOB_COMPLETED)
    def on_ai_job_completed(self, event):
        self._handle(events.AI_JOB_COMPLETED, "ai_job_completed", event)

    # -- timers ----------------------------------------------------------------------------------
    @configured_timer("MAIL_DISPATCH_INTERVAL_SECONDS", 5)
    def dispatch_mail(self):
        """Sends what is due: retries after backoff, and mail a crash left recorded but unsent."""
        dispatch.dispatch_due(self.store, self.mailer.sender, self.mailer.policy)
        deletion.purge_ready(self.store)
        self.store.outbox.sweep(NotificationsStore.OUTBOX_COLLECTIONS)  # settings changes a crash left unannounced

    @configured_timer("REMINDER_INTERVAL_SECONDS", 60)
    def plan_reminders(self):
        self.store.forget_claims(utcnow() - timedelta(days=1))
        notifier = self._notifier()
        try:
            notifier.send_reminders()
        finally:
            dispatch.send_recorded(self.store, self.mailer.sender, self.mailer.policy, notifier.recorded)
            for org_id in {entry["org_id"] for entry in notifier.recorded}:  # a reminder that raced a purge
                deletion.scrub_if_purged(self.store, org_id)
