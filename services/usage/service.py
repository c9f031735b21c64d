"""Usage service entrypoints: storage reports and the credit ledger (logic in storage.py / credits.py)."""
from nameko.rpc import RpcProxy

from common import events, service
from common.errors import DomainError
from common.handlers import reliable_handler
from common.mongo import StoreProvider
from common.rpc import ask
from common.service import domain_rpc
from common.settings_provider import SettingsProvider
from common.timers import configured_timer
from services.usage import credits, deletion, storage
from services.usage.faults import CrashAfterLedgerWrite
from services.usage.settings import UsageSettings
from services.usage.store import UsageStore


class UsageService(service.Service):
    name = "usage"

    store = StoreProvider(UsageStore)
    org = RpcProxy("org")
    settings = SettingsProvider(UsageSettings)
    faults = CrashAfterLedgerWrite()  # tests only: off unless USAGE_FAULT_CRASH_AFTER_LEDGER

    def _about(self, org_id, call):
        """Runs ``call()``, a domain call about ``org_id``. If it is a 404 because this service has not
        heard of the organization yet, learns it (``storage.learn_organization``) and runs it once more;
        the usual call pays nothing extra."""
        try:
            return call()
        except DomainError as error:
            if error.code != "not_found" or not storage.learn_organization(
                    self.store, org_id, lambda *question: ask(self.org, self.settings.rpc_timeout, *question)):
                raise
        return call()


    # -- storage and the usage summary --------------------------------------------------------
    @domain_rpc
    def report_storage(self, org_id, datasets, complete):
        return self._about(org_id, lambda: storage.report(self.store, org_id, datasets, complete))

    @domain_rpc
    def get_usage(self, org_id):
        return self._about(org_id, lambda: storage.usage(self.store, org_id,
                                                         credits.balance(self.store, org_id)))

    # -- credits ------------------------------------------------------------------------------
    @domain_rpc
    def grant_credits(self, org_id, actor_id, amount, idempotency_key, comment=None, expires_at=None):
        return self._about(org_id, lambda: credits.write_result(credits.grant(
            self.store, org_id, actor_id, amount, idempotency_key, comment, expires_at)))

    @domain_rpc
    def reserve_credits(self, org_id, actor_id, amount, job_id, job_type, idempotency_key):
        return self._about(org_id, lambda: credits.write_result(credits.reserve(
            self.store, org_id, actor_id, amount, job_id, job_type, idempotency_key)))

    @domain_rpc
    def settle_reservation(self, org_id, actor_id, reservation_id, outcome):
        return self._about(org_id, lambda: credits.write_result(credits.settle(
            self.store, org_id, actor_id, reservation_id, outcome)))

    @domain_rpc
    def get_ledger(self, org_id, limit=50, cursor=None):
        return self._about(org_id, lambda: credits.ledger(self.store, org_id, limit, cursor))

    # -- events -------------------------------------------------------------------------------
    def _apply(self, event_type, handler, body):
        """A late event for a purged organization is dropped, not allowed to recreate it."""
        event = events.load_event(event_type, body)
        if not self.store.was_purged(event.get("organization_id")):
            handler(self.store, event)

    @reliable_handler(events.ORGANIZATION_CREATED)
    def on_organization_created(self, event):
        self._apply(events.ORGANIZATION_CREATED, storage.on_organization_created, event)

    @reliable_handler(events.PLAN_CHANGED)
    def on_plan_changed(self, event):
        self._apply(events.PLAN_CHANGED, storage.on_plan_changed, event)

    @reliable_handler(events.MEMBER_JOINED)
    def on_member_joined(self, event):
        self._apply(events.MEMBER_JOINED, storage.on_member_count, event)

    @reliable_handler(events.MEMBER_LEFT)
    def on_member_left(self, event):
        self._apply(events.MEMBER_LEFT, storage.on_member_count, event)

    @reliable_handler(events.ORGANIZATION_DELETION_REQUESTED)
    def on_organization_deletion_requested(self, event):
        deletion.purge(self.store, events.load_event(events.ORGANIZATION_DELETION_REQUESTED, event)["organization_id"])

    @domain_rpc
    def export(self, org_id):
        return self._about(org_id, lambda: deletion.export(self.store, org_id))

    # -- housekeeping (every replica runs these; each step is idempotent) ---------------------
    @configured_timer("usage_expiry_seconds")
    def expire_grants(self):
        credits.expire_due(self.store)

    @configured_timer("usage_repair_seconds")
    def repair(self):
        self.store.outbox.sweep(UsageStore.OUTBOX_COLLECTIONS)
        storage.repair_stale(self.store)
