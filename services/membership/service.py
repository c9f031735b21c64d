"""Membership service entrypoints: accounts, sessions and tokens, memberships."""
import eventlet
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc
from nameko.timer import timer

from common import events
from common.errors import DomainError
from common.handlers import reliable_handler
from common.mongo import StoreProvider
from services.membership import domain
from services.membership.security import SecurityProvider
from services.membership.store import MembershipStore

domain_rpc = rpc(expected_exceptions=DomainError)


class SuperuserBootstrap(DependencyProvider):
    """Creates the operator account from SUPERUSER_EMAIL/SUPERUSER_PASSWORD when the service starts."""

    def _provider(self, cls):
        return next(dep for dep in self.container.dependencies if isinstance(dep, cls))

    def start(self):
        config = self.container.config
        if config.get("SUPERUSER_EMAIL") and config.get("SUPERUSER_PASSWORD"):
            domain.ensure_superuser(self._provider(StoreProvider).store,
                                    self._provider(SecurityProvider).security,
                                    str(config["SUPERUSER_EMAIL"]), str(config["SUPERUSER_PASSWORD"]),
                                    config.get("SUPERUSER_NAME") or "Operator")


class MembershipService:
    name = "membership"

    store = StoreProvider(MembershipStore, "membership")
    security = SecurityProvider()
    org = RpcProxy("org")
    bootstrap = SuperuserBootstrap()

    config = Config()

    def _create_org(self, org_id, name, owner):
        """The org service must answer within RPC_TIMEOUT; create_organization is idempotent."""
        timeout = float(self.config.get("RPC_TIMEOUT") or 5)
        with eventlet.Timeout(timeout, DomainError("service_unavailable", "org service did not answer")):
            return self.org.create_organization(org_id, name, owner)

    @rpc
    def ping(self):
        return "pong"

    @rpc
    def public_keys(self):
        """``{kid: public key PEM}`` for gateways that do not have the keys configured."""
        return dict(self.security.tokens.published)

    @domain_rpc
    def signup(self, email, password, name, organization_name=None):
        return domain.signup(self.store, self.security, self._create_org, email, password, name,
                             organization_name)

    @domain_rpc
    def signup_with_invite(self, email, password, name, invite_token):
        return domain.signup_with_invite(self.store, self.security, email, password, name, invite_token)

    @domain_rpc
    def login(self, email, password, organization_id=None):
        return domain.login(self.store, self.security, email, password, organization_id)

    @domain_rpc
    def refresh(self, refresh_token):
        return domain.refresh(self.store, self.security, refresh_token)

    @domain_rpc
    def logout(self, session_id, user_id, org_id):
        return domain.logout(self.store, session_id, user_id, org_id)

    @domain_rpc
    def me(self, user_id, org_id):
        return domain.me(self.store, user_id, org_id)

    @reliable_handler(events.ORGANIZATION_RENAMED)
    def on_organization_renamed(self, event):
        domain.on_organization_renamed(self.store, events.load_event(events.ORGANIZATION_RENAMED, event))

    @timer(interval=5)
    def sweep_outbox(self):
        self.store.outbox.sweep(MembershipStore.OUTBOX_COLLECTIONS)
