"""Org service entrypoints: organizations, plans and the overview read model."""

from common import events, service
from common.handlers import reliable_handler
from common.mongo import StoreProvider
from common.service import domain_rpc
from common.settings_provider import SettingsProvider
from common.timers import configured_timer
from services.org import domain
from services.org.settings import OrgSettings
from services.org.store import OrgStore


class OrgService(service.Service):
    name = "org"

    store = StoreProvider(OrgStore)
    settings = SettingsProvider(OrgSettings)


    @domain_rpc
    def create_organization(self, org_id, name, owner):
        return domain.create_organization(self.store, org_id, name, owner)

    @domain_rpc
    def get_overview(self, org_id):
        return domain.get_overview(self.store, org_id)

    @domain_rpc
    def rename(self, org_id, name):
        return domain.rename(self.store, org_id, name)

    @domain_rpc
    def set_plan(self, org_id, plan, changed_by):
        return domain.set_plan(self.store, org_id, plan, changed_by)

    @domain_rpc
    def request_deletion(self, org_id, requested_by, confirm_name):
        return domain.request_deletion(self.store, org_id, requested_by, confirm_name)

    @domain_rpc
    def get_deletion(self, org_id, actor):
        return domain.get_deletion(self.store, org_id, actor)

    @domain_rpc
    def get_deletion_by_receipt(self, receipt):
        return domain.get_deletion_by_receipt(self.store, receipt)

    def _receipt_days(self):
        return self.settings.deletion_receipt_days

    @domain_rpc
    def export(self, org_id):
        return domain.export(self.store, org_id)

    @reliable_handler(events.organization_purged("membership"))
    def on_membership_purged(self, event):
        domain.on_service_purged(self.store, events.load_event(events.organization_purged("membership"), event),
                                 self._receipt_days())

    @reliable_handler(events.organization_purged("notifications"))
    def on_notifications_purged(self, event):
        domain.on_service_purged(self.store, events.load_event(events.organization_purged("notifications"), event),
                                 self._receipt_days())

    @reliable_handler(events.organization_purged("usage"))
    def on_usage_purged(self, event):
        domain.on_service_purged(self.store, events.load_event(events.organization_purged("usage"), event),
                                 self._receipt_days())

    @reliable_handler(events.organization_purged("audit"))
    def on_audit_purged(self, event):
        domain.on_service_purged(self.store, events.load_event(events.organization_purged("audit"), event),
                                 self._receipt_days())

    @configured_timer("deletion_redrive_seconds")
    def redrive_deletions(self):
        domain.redrive_deletions(self.store, self.settings.deletion_redrive_seconds,
                                 self._receipt_days())

    @reliable_handler(events.MEMBER_JOINED)
    def on_member_joined(self, event):
        domain.on_member_count(self.store, events.load_event(events.MEMBER_JOINED, event))

    @reliable_handler(events.MEMBER_LEFT)
    def on_member_left(self, event):
        domain.on_member_count(self.store, events.load_event(events.MEMBER_LEFT, event))

    @reliable_handler(events.OWNERSHIP_TRANSFERRED)
    def on_ownership_transferred(self, event):
        domain.on_ownership_transferred(self.store, events.load_event(events.OWNERSHIP_TRANSFERRED, event))

    @reliable_handler(events.STORAGE_UPDATED)
    def on_storage_updated(self, event):
        domain.on_storage_updated(self.store, events.load_event(events.STORAGE_UPDATED, event))

    @reliable_handler(events.CREDITS_CHANGED)
    def on_credits_changed(self, event):
        domain.on_credits_changed(self.store, events.load_event(events.CREDITS_CHANGED, event))

    @configured_timer("outbox_sweep_seconds")
    def sweep_outbox(self):
        self.store.outbox.sweep(OrgStore.OUTBOX_COLLECTIONS)
