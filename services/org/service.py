"""Org service entrypoints: organizations, plans and the overview read model."""
from nameko.rpc import rpc
from nameko.timer import timer

from common.errors import DomainError
from common.mongo import StoreProvider
from services.org import domain
from services.org.store import OrgStore

domain_rpc = rpc(expected_exceptions=DomainError)


class OrgService:
    name = "org"

    store = StoreProvider(OrgStore, "org")

    @rpc
    def ping(self):
        return "pong"

    @domain_rpc
    def create_organization(self, org_id, name, owner):
        return domain.create_organization(self.store, org_id, name, owner)

    @domain_rpc
    def get_overview(self, org_id):
        return domain.get_overview(self.store, org_id)

    @domain_rpc
    def rename(self, org_id, name):
        return domain.rename(self.store, org_id, name)

    @timer(interval=5)
    def sweep_outbox(self):
        self.store.outbox.sweep(OrgStore.OUTBOX_COLLECTIONS)
