"""Fixtures of the unit tests: in-memory fake stores (``fakes.py``), each service's settings as its
config.yml gives them, no broker and no database."""
import uuid

import pytest

from services.membership.keys import generate
from services.membership.security import InviteTokens, Passwords, Security, TokenIssuer
from services.membership.settings import MembershipSettings
from tests.unit.fakes import FakeMembershipStore, FakeNotificationsStore, FakeUsageStore


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
