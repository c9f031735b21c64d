"""Starts a test instance of the whole stack (own vhost, database prefix and ports) for the session.

Infrastructure (RabbitMQ, the MongoDB-compatible server) is reused when something already answers
on its port and started otherwise -- then also stopped at the end.
"""
import os
import uuid

import pymongo
import pytest

from stack import stack
from tests.support import SUMMARY, EventTap, Gateway, new_team, superuser_token

# The generated clients' journeys need the tools `make clients` installs (CLIENT_TOOLS names them):
# `make test` leaves them out instead of reporting them skipped.
collect_ignore = [] if os.environ.get("CLIENT_TOOLS") else ["clients"]


@pytest.fixture(scope="session")
def test_stack():
    inst = stack.Instance("test")
    started_infra = stack.start_isolated(inst)
    yield inst
    stack.stop_isolated(inst, started_infra)


@pytest.fixture(scope="session")
def gateway(test_stack):
    return Gateway(test_stack.gateway_url)


@pytest.fixture
def su(gateway):
    """The operator's access token, reused while it is valid (``tests.support.superuser_token``: every
    login counts against the per-email limit)."""
    return superuser_token(gateway)


@pytest.fixture
def team(gateway, tap):
    """An organization with an owner, an admin, a dataset manager and a member, plus an outsider
    (the admin of another organization). Modules that need more (a service to have seen them all)
    wrap :func:`tests.support.new_team` in a ``team`` of their own."""
    return new_team(gateway, tap, "Team Lab")


@pytest.fixture
def scratch(test_stack):
    """A database of its own on the test server, for a service's real store (dropped afterwards)."""
    client = pymongo.MongoClient(test_stack.mongo_url, tz_aware=True)
    name = f"{test_stack.db_prefix}scratch_{uuid.uuid4().hex[:8]}"
    yield client[name]
    client.drop_database(name)
    client.close()


@pytest.fixture
def owner(gateway):
    """A fresh account owning a fresh organization."""
    return gateway.signup(organization_name=f"Lab {os.urandom(3).hex()}")


@pytest.fixture(scope="session")
def tap(test_stack):
    """Every event on the bus, as an outside subscriber sees it; at the end of the session, every
    event it saw must have carried its envelope (acceptance 3 of issue 15)."""
    listener = EventTap(test_stack.amqp_uri)
    yield listener
    listener._drain(0.5)
    problems = listener.envelope_problems()
    listener.close()
    assert not problems, f"{len(problems)} events without their envelope, e.g. {problems[:5]}"


def pytest_terminal_summary(terminalreporter, config):
    """Figures tests recorded (e.g. the API fuzzing's), shown in the default output."""
    lines = config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)


# -- the web console's browser tests (tests/test_console*.py) ----------------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by `make test`; Playwright's own download is not used


@pytest.fixture
def people(browser, test_stack):
    """``people(label)``: a person with a browser context of their own, closed after the test."""
    from tests.console import Person
    made = []

    def person(label, **kwargs):
        made.append(Person(browser, test_stack.gateway_url, label, **kwargs))
        return made[-1]
    yield person
    for p in made:
        p.close()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (headless; --no-sandbox: the suite runs as root)."""
    from playwright.sync_api import sync_playwright

    from tests.console import ARTIFACTS

    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
