"""The audit log's rules on an in-memory store: what an event means, the hash chain and its check."""
import uuid

from common import events
from common.events import make_event
from services.audit import chain, deletion, entries
from tests.unit.fakes import FakeAuditStore


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
