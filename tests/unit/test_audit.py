"""The audit log's rules on an in-memory store: what an event means, the hash chain and its check."""
import threading
import uuid

from common import events
from common.events import make_event
from services.audit import chain, deletion, entries
from tests.unit.fakes import FakeAuditStore, SlowWrites


def recorded(store, kind, org_id, **payload):
    _, _, body = make_event(kind, org_id, **payload)
    event = events.load_event(kind, body)
    return chain.record(store, event, "system", entries.of(kind, event))


def test_entries_chain_in_order_and_verify():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    for name in ("One", "Two", "Three"):
        assert recorded(store, events.ORGANIZATION_RENAMED, org_id, name=name, previous_name="Lab") >= 1
    result = chain.verify(store, org_id)
    assert result["ok"] and result["entries"] == result["last_sequence"] >= 3


def test_a_redelivered_event_adds_nothing():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    _, _, body = make_event(events.ORGANIZATION_RENAMED, org_id, name="New", previous_name="Old")
    event = events.load_event(events.ORGANIZATION_RENAMED, body)
    meaning = [("organization.renamed", {"type": "organization", "id": org_id}, {"name": "New"})]
    assert chain.record(store, event, "system", meaning) == 1
    assert chain.record(store, event, "system", meaning) == 0


def test_a_changed_entry_breaks_the_chain_where_it_was_changed():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    for name in ("One", "Two", "Three"):
        recorded(store, events.ORGANIZATION_RENAMED, org_id, name=name, previous_name="Lab")
    second = next(e for e in store.entries.values() if e["seq"] == 2)
    second["action"] = "organization.created"  # tampered with in the database
    result = chain.verify(store, org_id)
    assert not result["ok"] and result["broken_at"]["sequence"] == 2
    assert result["broken_at"]["reason"] == "hash_mismatch"


def test_the_audit_purge_leaves_nothing_and_reports():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    recorded(store, events.ORGANIZATION_RENAMED, org_id, name="One", previous_name="Lab")
    deletion.purge(store, org_id)
    assert store.mentioning(org_id) == [] and store.was_purged(org_id)
    assert store.outbox.types() == ["organization_purged"]


# -- group commit: a burst of events of one organization ---------------------------------------------

def renamed(org_id, name):
    _, _, body = make_event(events.ORGANIZATION_RENAMED, org_id, name=name, previous_name="Lab")
    event = events.load_event(events.ORGANIZATION_RENAMED, body)
    return event, entries.of(events.ORGANIZATION_RENAMED, event)


def record_together(store, recordings):
    barrier, counts = threading.Barrier(len(recordings)), [None] * len(recordings)

    def run(index):
        barrier.wait()
        event, meaning = recordings[index]
        counts[index] = chain.record(store, event, "system", meaning)
    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(recordings))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def test_concurrent_events_are_appended_in_groups_and_the_chain_verifies():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    recordings = [renamed(org_id, f"Name {index}") for index in range(20)]
    assert record_together(SlowWrites(store, "insert_entries"), recordings) == [1] * 20
    assert sorted(e["seq"] for e in store.entries.values()) == list(range(1, 21))
    assert sorted(e["event_id"] for e in store.entries.values()) == sorted(event["event_id"] for event, _ in recordings)
    assert max(store.inserts) > 1 and len(store.inserts) < 20  # grouped
    result = chain.verify(store, org_id)
    assert result["ok"] and result["entries"] == 20


def test_an_event_delivered_twice_at_once_is_recorded_once():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    recordings = [renamed(org_id, f"Name {index}") for index in range(5)]
    assert sorted(record_together(SlowWrites(store, "insert_entries"), recordings * 3)) == [0] * 10 + [1] * 5
    assert len(store.entries) == 5 and chain.verify(store, org_id)["ok"]


def test_another_replica_appending_meanwhile_costs_a_retry_not_a_broken_chain():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    event, meaning = renamed(org_id, "One")
    chain.record(store, event, "system", meaning)  # this process's hint: seq 1
    other = FakeAuditStore()  # another replica's view of the same database appends seq 2
    other.entries, other.chains = store.entries, store.chains
    chain._HEADS.pop(org_id)
    event, meaning = renamed(org_id, "Two")
    chain.record(other, event, "system", meaning)
    chain._HEADS[org_id] = next(e for e in store.entries.values() if e["seq"] == 1)  # our stale hint again
    event, meaning = renamed(org_id, "Three")
    assert chain.record(store, event, "system", meaning) == 1
    assert sorted(e["seq"] for e in store.entries.values()) == [1, 2, 3]
    assert chain.verify(store, org_id)["ok"]


def test_a_late_event_of_a_purged_organization_is_dropped_before_anyone_is_named():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    store.remember_purged(org_id)
    event, _ = renamed(org_id, "Late")

    def resolve():
        raise AssertionError("people are not looked up for a purged organization")
    assert chain.record_event(store, event, resolve) == 0
    assert store.mentioning(org_id) == []


def test_an_append_that_raced_the_purge_is_scrubbed():
    store, org_id = FakeAuditStore(), str(uuid.uuid4())
    event, meaning = renamed(org_id, "Racing")

    def resolve():  # the purge runs between the group's tombstone check and its insert
        store.remember_purged(org_id)
        return "system", meaning
    assert chain.record_event(store, event, resolve) == 1
    assert store.mentioning(org_id) == []
