"""The one purge protocol (``common/purge.py``) on an in-memory store: order, lease, report, races."""
from common import purge
from tests.unit.fakes import FakeStore


def seeded(org_id):
    store = FakeStore()
    store.table("things")["a"] = {"_id": "a", "org_id": org_id}
    store.table("things")["b"] = {"_id": "b", "org_id": "someone-else"}
    store.table("organizations")[org_id] = {"_id": org_id, "name": "Lab"}
    return store


def test_a_purge_deletes_the_organization_and_reports_its_counts(new_org_id):
    store = seeded(new_org_id)
    removed = purge.purge(store, "usage", new_org_id)
    assert removed == {"things": 1, "organizations": 1}
    assert store.mentioning(new_org_id) == [] and store.table("things") == {"b": {"_id": "b", "org_id": "someone-else"}}
    [report] = store.outbox.published
    assert report["type"] == "organization_purged" and report["source"] == "usage"
    assert report["body"]["removed"] == removed and report["body"]["organization_id"] == new_org_id


def test_the_tombstone_is_there_before_anything_is_deleted(new_org_id):
    """A write landing while the delete step runs must already see the tombstone when it re-checks."""
    store = seeded(new_org_id)
    seen = []
    delete = store.purge_organization
    store.purge_organization = lambda org_id: (seen.append(store.was_purged(org_id)), delete(org_id))[1]
    purge.purge(store, "membership", new_org_id)
    assert seen == [True]


def test_a_write_racing_the_purge_takes_itself_back(new_org_id):
    store = seeded(new_org_id)
    assert not store.was_purged(new_org_id)  # the writer checked before the purge
    purge.purge(store, "notifications", new_org_id)
    store.table("settings")[new_org_id] = {"_id": new_org_id}  # ...and its upsert landed after
    assert store.take_back_if_purged(new_org_id, "settings", new_org_id)
    assert store.mentioning(new_org_id) == []


def test_a_purge_running_elsewhere_holds_the_lease_and_a_redelivery_returns_none(new_org_id):
    store = seeded(new_org_id)
    with store.purge_lease(new_org_id):
        assert purge.purge(store, "usage", new_org_id) is None
    assert store.outbox.published == []
    assert purge.purge(store, "usage", new_org_id) is not None


def test_a_second_purge_deletes_nothing_and_reports_again(new_org_id):
    store = seeded(new_org_id)
    purge.purge(store, "usage", new_org_id)
    assert purge.purge(store, "usage", new_org_id) == {"things": 0, "organizations": 0}
    assert len(store.outbox.published) == 2
