"""Notifications service entrypoints: settings, the delivery log, event handlers, timers.

Domain logic lives in ``notify`` (events -> mail), ``preferences`` (an organization's notification settings, the
delivery log) and
``dispatch`` (the mail outbox); this module only wires them to nameko.
"""
from datetime import timedelta

from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy

from common import events, service
from common.events import utcnow
from common.handlers import reliable_handler
from common.mongo import StoreProvider
from common.rpc import ask
from common.service import domain_rpc
from common.settings_provider import SettingsProvider, settings_of
from common.timers import configured_timer
from services.notifications import deletion, dispatch, notify, preferences
from services.notifications.cipher import mail_cipher
from services.notifications.mail import SmtpSender
from services.notifications.settings import NotificationsSettings
from services.notifications.store import NotificationsStore


class Mailer(DependencyProvider):
    """The SMTP sender, the retry policy and the body cipher (``dispatch.Outgoing``), built once
    from the service's settings."""

    def setup(self):
        settings = settings_of(self.container)
        self.outgoing = dispatch.Outgoing(SmtpSender.from_settings(settings),
                                          dispatch.DispatchPolicy.from_settings(settings), mail_cipher(settings))

    def get_dependency(self, worker_ctx):
        return self.outgoing


class NotificationsService(service.Service):
    name = "notifications"

    store = StoreProvider(NotificationsStore)
    mailer = Mailer()
    settings = SettingsProvider(NotificationsSettings)
    org = RpcProxy("org")

    def _require_live(self, org_id):
        deletion.require_live(self.store, org_id, lambda *question: ask(self.org, self.settings.rpc_timeout, *question))

    def _notifier(self):
        return notify.Notifier(self.store, self.settings.public_base_url,
                               self.mailer.policy.lease_seconds, self.mailer.cipher)

    def _handle(self, event_type, body):
        """Apply the event (``notify.HANDLERS``; its mail recorded first, leased to us), then send
        what the notifier recorded right away."""
        event = events.load_event(event_type, body)
        if self.store.was_purged(event.get("organization_id")):
            return  # a late event for a deleted organization must not bring it back
        notifier = self._notifier()
        try:
            notify.HANDLERS[event_type](notifier, event)
        finally:  # what was recorded is sent even if the handler fails afterwards (and is retried)
            dispatch.send_recorded(self.store, self.mailer, notifier.recorded)
            # the purge may have run while this event was handled: what it missed goes now
            deletion.scrub_if_purged(self.store, event.get("organization_id"))


    # -- settings and the delivery log -----------------------------------------------------------
    @domain_rpc
    def get_settings(self, org_id):
        self._require_live(org_id)
        return preferences.get_settings(self.store, org_id)

    @domain_rpc
    def put_settings(self, org_id, values):
        self._require_live(org_id)
        return preferences.put_settings(self.store, org_id, values)

    @domain_rpc
    def list_deliveries(self, org_id, limit=50, cursor=None):
        self._require_live(org_id)
        return preferences.list_deliveries(self.store, org_id, limit, cursor)

    # -- events ----------------------------------------------------------------------------------
    @reliable_handler(events.ORGANIZATION_CREATED)
    def on_organization_created(self, event):
        self._handle(events.ORGANIZATION_CREATED, event)

    @reliable_handler(events.ORGANIZATION_RENAMED)
    def on_organization_renamed(self, event):
        self._handle(events.ORGANIZATION_RENAMED, event)

    @reliable_handler(events.PLAN_CHANGED)
    def on_plan_changed(self, event):
        self._handle(events.PLAN_CHANGED, event)

    @reliable_handler(events.ORGANIZATION_DELETION_REQUESTED)
    def on_organization_deletion_requested(self, event):
        """Confirm to the owner first; purge once that mail is final (maybe on a later timer tick)."""
        deletion.mark_deleting(self.store, event["organization_id"])
        self._handle(events.ORGANIZATION_DELETION_REQUESTED, event)
        deletion.purge_when_mailed(self.store, event["organization_id"])

    @reliable_handler(events.ORGANIZATION_DELETED)
    def on_organization_deleted(self, event):
        """The owner learns that the deletion completed; the mail is the organization's last trace
        here and goes once it is final (see ``dispatch.EPHEMERAL_KINDS``)."""
        event = events.load_event(events.ORGANIZATION_DELETED, event)
        recorded = deletion.completion_mail(self.store, event, self.mailer.policy.lease_seconds)
        dispatch.send_recorded(self.store, self.mailer, recorded)

    @domain_rpc
    def export(self, org_id):
        self._require_live(org_id)
        return deletion.export(self.store, org_id)

    @reliable_handler(events.MEMBER_JOINED)
    def on_member_joined(self, event):
        self._handle(events.MEMBER_JOINED, event)

    @reliable_handler(events.MEMBER_LEFT)
    def on_member_left(self, event):
        self._handle(events.MEMBER_LEFT, event)

    @reliable_handler(events.ACCOUNT_DELETED)
    def on_account_deleted(self, event):
        """The person deleted their account: their copies as a member of any organization (with the
        address and name they carried) and the log of mail sent to them go. Idempotent."""
        event = events.load_event(events.ACCOUNT_DELETED, event)
        self.store.forget_person(event["user_id"], event["email"])

    @reliable_handler(events.MEMBER_ROLE_CHANGED)
    def on_member_role_changed(self, event):
        self._handle(events.MEMBER_ROLE_CHANGED, event)

    @reliable_handler(events.OWNERSHIP_TRANSFERRED)
    def on_ownership_transferred(self, event):
        self._handle(events.OWNERSHIP_TRANSFERRED, event)

    @reliable_handler(events.INVITE_CREATED)
    def on_invite_created(self, event):
        self._handle(events.INVITE_CREATED, event)

    @reliable_handler(events.STORAGE_UPDATED)
    def on_storage_updated(self, event):
        self._handle(events.STORAGE_UPDATED, event)

    @reliable_handler(events.AI_JOB_COMPLETED)
    def on_ai_job_completed(self, event):
        self._handle(events.AI_JOB_COMPLETED, event)

    # -- timers ----------------------------------------------------------------------------------
    @configured_timer("mail_dispatch_interval_seconds")
    def dispatch_mail(self):
        """Sends what is due: retries after backoff, and mail a crash left recorded but unsent."""
        dispatch.dispatch_due(self.store, self.mailer)
        deletion.purge_ready(self.store)
        self.store.outbox.sweep(NotificationsStore.OUTBOX_COLLECTIONS)  # settings changes a crash left unannounced

    @configured_timer("reminder_interval_seconds")
    def plan_reminders(self):
        self.store.forget_claims(utcnow() - timedelta(days=1))
        notifier = self._notifier()
        try:
            notifier.send_reminders()
        finally:
            dispatch.send_recorded(self.store, self.mailer, notifier.recorded)
            for org_id in {entry["org_id"] for entry in notifier.recorded}:  # a reminder that raced a purge
                deletion.scrub_if_purged(self.store, org_id)
