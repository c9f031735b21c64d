"""Membership service entrypoints: accounts, sessions and tokens, memberships, invites."""
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
from services.membership import accounts, deletion, domain, invites, members
from services.membership.security import SecurityProvider
from services.membership.store import MembershipStore

bus.least_privilege()  # this process declares no exchange; its replies carry its name (common/bus.py)

domain_rpc = checked_rpc  # @rpc, DomainError expected; arguments must be Unicode text (common.validation)


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
    context = RequestContext()  # the request and event id of each worker (common/context.py)
    liveness = Liveness()  # a heartbeat while the queue consumer consumes (common/liveness.py, common/probe.py)
    metrics = Metrics()  # /metrics on METRICS_PORT (common/metrics.py)

    store = StoreProvider(MembershipStore, "membership")
    security = SecurityProvider()
    org = RpcProxy("org")
    config = Config()
    bootstrap = SuperuserBootstrap()

    def _ask_org(self, method, *args):
        return ask(self.org, self.config, method, *args)

    def _create_org(self, org_id, name, owner):
        return self._ask_org("create_organization", org_id, name, owner)

    def _plan_limit(self, org_id):
        return self._ask_org("get_overview", org_id)["plan"]["included_users"]

    def _request_deletion(self, org_id, requested_by, confirm_name):
        return self._ask_org("request_deletion", org_id, requested_by, confirm_name)

    @rpc
    def ping(self):
        return "pong"

    @rpc
    def public_keys(self):
        """``{kid: public key PEM}`` for gateways that do not have the keys configured."""
        return dict(self.security.tokens.published)

    # -- accounts and sessions ----------------------------------------------------------------
    @domain_rpc
    def signup(self, email, password, name, organization_name=None, client_address=None, idempotency_key=None):
        return domain.signup(self.store, self.security, self._create_org, email, password, name,
                             organization_name, self.config, client_address, idempotency_key)

    @domain_rpc
    def signup_with_invite(self, email, password, name, invite_token, client_address=None, idempotency_key=None):
        return invites.signup_with_invite(self.store, self.security, self._plan_limit, email, password, name,
                                          invite_token, self.config, client_address, idempotency_key)

    @domain_rpc
    def login(self, email, password, organization_id=None, client_address=None):
        return domain.login(self.store, self.security, self.config, email, password, organization_id,
                            client_address)

    @domain_rpc
    def refresh(self, refresh_token):
        return domain.refresh(self.store, self.security, refresh_token)

    @domain_rpc
    def logout(self, session_id, user_id, org_id):
        return domain.logout(self.store, session_id, user_id, org_id)

    @domain_rpc
    def switch(self, session_id, user_id, organization_id):
        return domain.switch(self.store, self.security, session_id, user_id, organization_id)

    @domain_rpc
    def change_password(self, session_id, user_id, current_password, new_password):
        return domain.change_password(self.store, self.security, session_id, user_id, current_password,
                                      new_password, self.config)

    @domain_rpc
    def delete_account(self, user_id, password):
        return accounts.delete_account(self.store, self.security, user_id, password, self.config)

    @domain_rpc
    def check_access(self, claims):
        return domain.check_access(self.store, claims)

    @domain_rpc
    def me(self, user_id, org_id):
        return domain.me(self.store, user_id, org_id)

    # -- organizations and members --------------------------------------------------------------
    @domain_rpc
    def create_organization(self, user_id, name, idempotency_key=None):
        return members.create_organization(self.store, self._create_org, user_id, name, self.config,
                                           idempotency_key)

    @domain_rpc
    def list_organizations(self, user_id):
        return members.list_organizations(self.store, user_id)

    @domain_rpc
    def list_members(self, org_id, limit=50, cursor=None, q=None):
        return members.list_members(self.store, org_id, limit, cursor, q)

    @domain_rpc
    def change_member(self, org_id, actor, user_id, role=None, can_delete_organization=None):
        return members.change_member(self.store, org_id, actor, user_id, role, can_delete_organization)

    @domain_rpc
    def remove_member(self, org_id, actor, user_id):
        return members.remove_member(self.store, org_id, actor, user_id)

    @domain_rpc
    def transfer_ownership(self, org_id, actor, to_user_id):
        return members.transfer_ownership(self.store, org_id, actor, to_user_id)

    # -- invites ----------------------------------------------------------------------------
    @domain_rpc
    def create_invites(self, org_id, actor, emails, role, idempotency_key=None):
        return invites.create_invites(self.store, self.config, org_id, actor, emails, role, idempotency_key)

    @domain_rpc
    def list_invites(self, org_id, actor):
        return invites.list_invites(self.store, org_id, actor)

    @domain_rpc
    def revoke_invite(self, org_id, actor, invite_id):
        return invites.revoke_invite(self.store, org_id, actor, invite_id)

    @domain_rpc
    def preview_invite(self, token):
        return invites.preview(self.store, token)

    @domain_rpc
    def accept_invite(self, token, user_id):
        return invites.accept(self.store, self.security, self._plan_limit, token, user_id)

    # -- deletion and export ----------------------------------------------------------------
    @domain_rpc
    def request_org_deletion(self, org_id, actor, confirm_name):
        return deletion.request(self.store, self._request_deletion, org_id, actor, confirm_name)

    @domain_rpc
    def export(self, org_id):
        return deletion.export(self.store, org_id)

    @reliable_handler(events.ORGANIZATION_DELETION_REQUESTED)
    def on_organization_deletion_requested(self, event):
        deletion.purge(self.store, events.load_event(events.ORGANIZATION_DELETION_REQUESTED, event))

    # -- events and housekeeping ------------------------------------------------------------
    @reliable_handler(events.ORGANIZATION_RENAMED)
    def on_organization_renamed(self, event):
        members.on_organization_renamed(self.store, events.load_event(events.ORGANIZATION_RENAMED, event))

    @configured_timer("OUTBOX_SWEEP_SECONDS", 5)
    def sweep_outbox(self):
        self.store.outbox.sweep(MembershipStore.OUTBOX_COLLECTIONS)

    @configured_timer("LOGIN_LIMIT_WINDOW", 60)
    def forget_login_attempts(self):
        self.store.forget_attempts(utcnow())
        self.store.forget_idempotency_keys(utcnow())
