"""Membership service entrypoints: accounts, sessions and tokens, memberships, invites."""
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc

from common import events, service
from common.events import utcnow
from common.handlers import reliable_handler
from common.mongo import StoreProvider
from common.rpc import ask
from common.service import domain_rpc
from common.settings_provider import SettingsProvider, settings_of
from common.timers import configured_timer
from services.membership import accounts, deletion, invites, members, sessions, signup
from services.membership.security import InviteTokensProvider, SecurityProvider
from services.membership.settings import MembershipSettings
from services.membership.store import MembershipStore


class SuperuserBootstrap(DependencyProvider):
    """Creates the operator account from SUPERUSER_EMAIL/SUPERUSER_PASSWORD when the service starts."""

    def _provider(self, cls):
        return next(dep for dep in self.container.dependencies if isinstance(dep, cls))

    def start(self):
        settings = settings_of(self.container)
        if settings.superuser_email and settings.superuser_password:
            accounts.ensure_superuser(self._provider(StoreProvider).store, self._provider(SecurityProvider).security,
                                      settings.superuser_email, settings.superuser_password, settings.superuser_name)


class MembershipService(service.Service):
    name = "membership"

    store = StoreProvider(MembershipStore)
    security = SecurityProvider()
    invite_tokens = InviteTokensProvider()
    org = RpcProxy("org")
    settings = SettingsProvider(MembershipSettings)
    bootstrap = SuperuserBootstrap()

    def _ask_org(self, method, *args):
        return ask(self.org, self.settings.rpc_timeout, method, *args)

    def _create_org(self, org_id, name, owner):
        return self._ask_org("create_organization", org_id, name, owner)

    def _plan_limit(self, org_id):
        return self._ask_org("get_overview", org_id)["plan"]["included_users"]

    def _request_deletion(self, org_id, requested_by, confirm_name):
        return self._ask_org("request_deletion", org_id, requested_by, confirm_name)


    @rpc
    def public_keys(self):
        """``{kid: public key PEM}`` for gateways that do not have the keys configured."""
        return dict(self.security.tokens.published)

    # -- accounts and sessions ----------------------------------------------------------------
    @domain_rpc
    def signup(self, email, password, name, organization_name=None, client_address=None, idempotency_key=None):
        return signup.signup(self.store, self.security, self._create_org, email, password, name,
                             organization_name, self.settings, client_address, idempotency_key)

    @domain_rpc
    def signup_with_invite(self, email, password, name, invite_token, client_address=None, idempotency_key=None):
        return invites.signup_with_invite(self.store, self.security, self._plan_limit, email, password, name,
                                          invite_token, self.settings, client_address, idempotency_key)

    @domain_rpc
    def login(self, email, password, organization_id=None, client_address=None):
        return sessions.login(self.store, self.security, self.settings, email, password, organization_id,
                            client_address)

    @domain_rpc
    def refresh(self, refresh_token):
        return sessions.refresh(self.store, self.security, refresh_token)

    @domain_rpc
    def logout(self, session_id, user_id, org_id):
        return sessions.logout(self.store, session_id, user_id, org_id)

    @domain_rpc
    def switch(self, session_id, user_id, organization_id):
        return sessions.switch(self.store, self.security, session_id, user_id, organization_id)

    @domain_rpc
    def change_password(self, session_id, user_id, current_password, new_password):
        return sessions.change_password(self.store, self.security, session_id, user_id, current_password,
                                      new_password, self.settings)

    @domain_rpc
    def delete_account(self, user_id, password):
        return accounts.delete_account(self.store, self.security, user_id, password, self.settings)

    @domain_rpc
    def check_access(self, claims):
        return sessions.check_access(self.store, claims)

    @domain_rpc
    def me(self, user_id, org_id):
        return accounts.me(self.store, user_id, org_id)

    # -- organizations and members --------------------------------------------------------------
    @domain_rpc
    def create_organization(self, user_id, name, idempotency_key=None):
        return members.create_organization(self.store, self._create_org, user_id, name, self.settings,
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
        return invites.create_invites(self.store, self.invite_tokens, self.settings, org_id, actor, emails, role,
                                      idempotency_key)

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

    @configured_timer("outbox_sweep_seconds")
    def sweep_outbox(self):
        self.store.outbox.sweep(MembershipStore.OUTBOX_COLLECTIONS)

    @configured_timer("login_limit_window")
    def forget_login_attempts(self):
        self.store.forget_attempts(utcnow())
        self.store.forget_idempotency_keys(utcnow())
