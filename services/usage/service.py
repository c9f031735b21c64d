"""Usage service entrypoints: storage reports and the credit ledger (logic in storage.py / credits.py)."""
from nameko.dependency_providers import Config
from nameko.rpc import RpcProxy, rpc

from common import bus, events
from common.errors import DomainError
from common.context import RequestContext
from common.handlers import reliable_handler
from common.liveness import Liveness
from common.metrics import Metrics
from common.mongo import StoreProvider
from common.rpc import ask
from common.timers import configured_timer
from common.validation import checked_rpc
from services.usage import credits, deletion, storage
from services.usage.store import UsageStore

bus.least_privilege()  # this process declares no exchange; its replies carry its name (common/bus.py)

domain_rpc = checked_rpc  # @rpc, DomainError expected; arguments must be Unicode text (common.validation)


class UsageService:
    name = "usage"
    context = RequestContext()  # the request and event id of each worker (common/context.py)
    liveness = Liveness()  # a heartbeat while the queue consumer consumes (common/liveness.py, common/probe.py)
    metrics = Metrics()  # /metrics on METRICS_PORT (common/metrics.py)

    store = StoreProvider(UsageStore, "usage")
    org = RpcProxy("org")
    config = Config()

    def _about(self, org_id, call):
        """Runs ``call()``, a domain call about ``org_id``. If it is a 404 because this service has not
        heard of the organization yet, learns it (``storage.learn_organization``) and runs it once more;
        the usual call pays nothing extra."""
        try:
            return call()
        except DomainError as error:
            if error.code != "not_found" or not storage.learn_organization(
                    self.store, org_id, lambda *question: ask(self.org, self.config, *question)):
                raise
        return call()

    @rpc
    def ping(self):
        return "pong"

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
    @configured_timer("USAGE_EXPIRY_SECONDS", 30)
    def expire_grants(self):
        credits.expire_due(self.store)

    @configured_timer("USAGE_REPAIR_SECONDS", 5)
    def repair(self):
        self.store.outbox.sweep(UsageStore.OUTBOX_COLLECTIONS)
        storage.repair_stale(self.store)
