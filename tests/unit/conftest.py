"""Fixtures of the unit tests: in-memory fake stores (``fakes.py``), each service's settings as its
config.yml gives them, no broker and no database."""
import uuid

import pytest

from common.events import utcnow
from services.membership import invites, signup
from services.membership.keys import generate
from services.membership.security import InviteTokens, Passwords, Security, TokenIssuer
from services.membership.settings import MembershipSettings
from tests.unit.fakes import FakeMembershipStore, FakeNotificationsStore, FakeUsageStore

PASSWORD = "correct horse battery"


def org_service(org_id, name, owner):
    """What the org service answers ``create_organization`` with (the fields sign-up reads)."""
    return {"id": org_id, "name": name, "created_at": utcnow(), "owner": owner}


@pytest.fixture(scope="session")
def membership_settings():
    return MembershipSettings.from_file(env={})


@pytest.fixture(scope="session")
def security(tmp_path_factory):
    """Real token signing with a throw-away key; argon2 at its cheapest (the suite's own setting)."""
    key = str(tmp_path_factory.mktemp("keys") / "jwt.pem")
    generate(key)
    return Security(Passwords(time_cost=1, memory_kib=1024), TokenIssuer(key), 3600, 2.0)


@pytest.fixture(scope="session")
def invite_tokens():
    return InviteTokens(b"unit-test-secret", "http://console.test")


@pytest.fixture
def members_store():
    return FakeMembershipStore()


@pytest.fixture
def usage_store():
    return FakeUsageStore()


@pytest.fixture
def notifications_store():
    return FakeNotificationsStore()


@pytest.fixture
def new_org_id():
    return str(uuid.uuid4())


@pytest.fixture
def world(members_store, security, membership_settings, invite_tokens):
    """An owner with an organization, and helpers to add people to it through invites."""
    class World:
        store, settings = members_store, membership_settings
        limit = None

        def signup(self, email, organization_name=None):
            return signup.signup(members_store, security, org_service, email, PASSWORD, email.split("@")[0],
                                 organization_name, membership_settings)

        def invite(self, actor, emails, role="member"):
            return invites.create_invites(members_store, invite_tokens, membership_settings, self.org_id, actor,
                                          emails, role)

        def join(self, email, role="member"):
            """A new account through an invite; returns its access claims' shape (actor)."""
            item = next(i for i in self.invite(self.owner, [email], role)["items"] if i["email"] == email)
            token = invite_tokens.token(item["id"])
            answer = invites.signup_with_invite(members_store, security, lambda org_id: self.limit, email,
                                                PASSWORD, email.split("@")[0], token, membership_settings)
            return {"sub": answer["user"]["id"]}

    world = World()
    first = world.signup("owner@example.org", "Lab")
    world.org_id = first["organization"]["id"]
    world.owner = {"sub": first["user"]["id"]}
    return world
