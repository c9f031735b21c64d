"""Audit service entrypoints: the activity log of each organization, built from the public events only.

It subscribes through the documented exchanges and routing keys (``common/topology.py``), keeps its
own database, and asks no other service anything: what an entry needs, the event carries. Logic lives
in ``entries`` (event -> entries), ``chain`` (append, verify), ``log`` (reads), ``deletion`` and
``retention``; this module only wires them to nameko.
"""

from common import events, service
from common.handlers import reliable_handler
from common.mongo import StoreProvider
from common.service import domain_rpc
from common.settings_provider import SettingsProvider
from common.timers import configured_timer
from services.audit import chain, deletion, entries, log, people, retention
from services.audit.settings import AuditSettings
from services.audit.store import AuditStore


class AuditService(service.Service):
    name = "audit"

    store = StoreProvider(AuditStore)
    settings = SettingsProvider(AuditSettings)


    # -- reads ---------------------------------------------------------------------------------------
    @domain_rpc
    def list_entries(self, org_id, limit=50, cursor=None, action=None, actor=None, since=None):
        return log.list_entries(self.store, org_id, limit, cursor, action, actor, since)

    @domain_rpc
    def verify(self, org_id, cursor=None):
        return log.verify(self.store, org_id, cursor, self.settings.audit_verify_budget_seconds)

    @domain_rpc
    def export(self, org_id):
        return log.export(self.store, org_id)

    # -- events: one handler per subscription, all alike -----------------------------------------------
    def _record(self, event_type, body):
        """A late event for a purged organization is dropped, not allowed to start its log again."""
        event = events.load_event(event_type, body)
        org_id = event.get("organization_id")
        meaning = entries.of(event_type, event) if org_id is not None else None
        if not meaning:
            return
        # people become tokens only once the log knows the organization is not purged
        chain.record_event(self.store, event, lambda: people.stored(self.store, org_id, event.get("actor") or "system",
                                                                    meaning))

    @reliable_handler(events.ORGANIZATION_CREATED)
    def on_organization_created(self, event):
        self._record(events.ORGANIZATION_CREATED, event)

    @reliable_handler(events.ORGANIZATION_RENAMED)
    def on_organization_renamed(self, event):
        self._record(events.ORGANIZATION_RENAMED, event)

    @reliable_handler(events.PLAN_CHANGED)
    def on_plan_changed(self, event):
        self._record(events.PLAN_CHANGED, event)

    @reliable_handler(events.ORGANIZATION_DELETION_REQUESTED)
    def on_organization_deletion_requested(self, event):
        """The request is recorded (its count shows in ``organization_purged``), then the log goes."""
        self._record(events.ORGANIZATION_DELETION_REQUESTED, event)
        deletion.purge(self.store, events.load_event(events.ORGANIZATION_DELETION_REQUESTED, event)["organization_id"])

    @reliable_handler(events.NOTIFICATION_SETTINGS_CHANGED)
    def on_notification_settings_changed(self, event):
        self._record(events.NOTIFICATION_SETTINGS_CHANGED, event)

    @reliable_handler(events.MEMBER_JOINED)
    def on_member_joined(self, event):
        self._record(events.MEMBER_JOINED, event)

    @reliable_handler(events.MEMBER_LEFT)
    def on_member_left(self, event):
        self._record(events.MEMBER_LEFT, event)

    @reliable_handler(events.MEMBER_ROLE_CHANGED)
    def on_member_role_changed(self, event):
        self._record(events.MEMBER_ROLE_CHANGED, event)

    @reliable_handler(events.DELETION_RIGHT_CHANGED)
    def on_deletion_right_changed(self, event):
        self._record(events.DELETION_RIGHT_CHANGED, event)

    @reliable_handler(events.OWNERSHIP_TRANSFERRED)
    def on_ownership_transferred(self, event):
        self._record(events.OWNERSHIP_TRANSFERRED, event)

    @reliable_handler(events.INVITE_CREATED)
    def on_invite_created(self, event):
        self._record(events.INVITE_CREATED, event)

    @reliable_handler(events.INVITE_REVOKED)
    def on_invite_revoked(self, event):
        self._record(events.INVITE_REVOKED, event)

    @reliable_handler(events.CREDITS_CHANGED)
    def on_credits_changed(self, event):
        self._record(events.CREDITS_CHANGED, event)

    @reliable_handler(events.AI_JOB_COMPLETED)
    def on_ai_job_completed(self, event):
        self._record(events.AI_JOB_COMPLETED, event)

    @reliable_handler(events.STORAGE_UPDATED)
    def on_storage_updated(self, event):
        self._record(events.STORAGE_UPDATED, event)

    @reliable_handler(events.ACCOUNT_DELETED)
    def on_account_deleted(self, event):
        """The person deleted their account: the log forgets who they were (``people.py``)."""
        event = events.load_event(events.ACCOUNT_DELETED, event)
        people.forget(self.store, event["user_id"], event["email"])

    # -- housekeeping (every replica runs it; one claims each run) -------------------------------------
    @configured_timer("audit_retention_seconds")
    def enforce_retention(self):
        retention.run(self.store, self.settings.audit_retention_days, self.settings.audit_retention_seconds)
