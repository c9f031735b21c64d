"""The org service's rules on an in-memory store: names, plans, the overview, deletion's bookkeeping."""
import pytest

from common import events
from services.org import domain
from tests.unit.fakes import FakeOrgStore
from tests.unit.refusals import code

OWNER = {"id": "u-owner", "name": "Olga", "email": "olga@example.org"}


@pytest.fixture
def store():
    return FakeOrgStore()


@pytest.fixture
def org(store, new_org_id):
    domain.create_organization(store, new_org_id, "  Lab  ", OWNER)
    return new_org_id


def test_creation_is_idempotent_by_id_and_names_are_trimmed(store, org):
    again = domain.create_organization(store, org, "Lab", OWNER)
    assert again["name"] == "Lab" and store.outbox.types() == ["organization_created"]
    assert code(domain.create_organization, store, org, "Lab", dict(OWNER, id="someone-else")) == "conflict"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "a\nb", 42])
def test_names_are_one_line_of_1_to_100_characters(store, org, name):
    assert code(domain.rename, store, org, name) == "validation_failed"


def test_the_overview_states_limits_and_whether_they_are_exceeded(store, org):
    domain.set_plan(store, org, {"name": "team", "included_users": 2, "included_storage_bytes": 100}, "su")
    store.apply_read_model(org, "members", {"count": 3}, "2026-01-01T00:00:01Z")
    store.apply_read_model(org, "members", {"count": 1}, "2026-01-01T00:00:00Z")  # older: ignored
    overview = domain.get_overview(store, org)
    assert overview["members"] == {"count": 3, "included": 2, "exceeded": True}
    assert overview["storage"] == {"used_bytes": 0, "included_bytes": 100, "exceeded": False}
    assert [e["type"] for e in store.outbox.published][-1] == "plan_changed"


def test_plans_are_validated(store, org):
    assert code(domain.set_plan, store, org, {"name": "gold"}, "su") == "validation_failed"
    assert code(domain.set_plan, store, org, {"name": "team", "included_users": -1}, "su") == "validation_failed"


def test_deletion_needs_the_current_name_and_answers_410_from_then_on(store, org):
    assert code(domain.request_deletion, store, org, "u-owner", "Not the name") == "validation_failed"
    status = domain.request_deletion(store, org, "u-owner", "Lab")
    assert status["receipt"] and "organization_deletion_requested" in store.outbox.types()
    assert code(domain.get_overview, store, org) == "organization_gone"
    assert code(domain.request_deletion, store, org, "u-owner", "Lab") == "organization_gone"
    assert code(domain.get_overview, store, "never-was") == "not_found"


def test_the_organization_shrinks_to_its_tombstone_once_every_service_reported(store, org):
    domain.request_deletion(store, org, "u-owner", "Lab")
    for service in domain.PURGING_SERVICES:
        assert store.get_organization(org)["status"] == "deleting"
        _, _, body = events.make_event(events.organization_purged(service), org, service=service, removed={"x": 1})
        domain.on_service_purged(store, events.load_event(events.organization_purged(service), body), 7)
    tombstone = store.get_organization(org)
    assert tombstone["status"] == "deleted" and "name" not in tombstone and "owner" not in tombstone
    deleted = [e for e in store.outbox.published if e["type"] == "organization_deleted"]
    assert deleted[0]["body"]["owner_email"] == OWNER["email"]  # the completion mail's only address
