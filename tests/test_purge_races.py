"""A write racing each service's purge never resurrects the organization (issue 18, acceptance 2).

Membership, notifications, usage and audit purge through ``common.purge`` (tombstone, lease, delete,
report); the org service's part is the tombstone it shrinks the organization to. The race is the
one a real write can lose: the writer checked ``was_purged`` (False), the whole purge ran, then the
write landed. The writer's own re-check after writing must find the tombstone and take the write
back, so that nothing of the organization is left. Each service's real store runs on a scratch
database of the test server and publishes its report on the test broker (seen by the tap).
"""
import uuid
from datetime import UTC, datetime

import pytest

from common import purge
from common.errors import DomainError
from common.mongo import Store
from common.outbox import Outbox
from services.audit import chain as audit_chain
from services.audit import deletion as audit_deletion
from services.audit.store import AuditStore
from services.membership.store import MembershipStore
from services.notifications import preferences
from services.notifications.store import NotificationsStore
from services.org import domain as org_domain
from services.org.store import OrgStore
from services.usage.settings import UsageSettings
from services.usage.store import UsageStore


def store_of(cls, db, test_stack, settings=None):
    store = cls(db, Outbox(db, test_stack.amqp_uri))
    if settings is not None:
        store.configure(settings)
    store.ensure_indexes()
    return store


def mentioning(db, org_id):
    """Every document of the scratch database that still names the organization."""
    return [(name, doc) for name in db.list_collection_names() for doc in db[name].find() if org_id in repr(doc)]


def race(store, service, org_id, tap, late_write):
    """The writer checks, the purge runs to its report, then the late write lands."""
    assert not store.was_purged(org_id)  # the writer's check, before the purge
    removed = purge.purge(store, service, org_id)
    assert removed is not None
    tap.wait_for("organization_purged", organization_id=org_id, service=service)
    late_write()
    assert store.was_purged(org_id)
    assert mentioning(store.db, org_id) == []


def test_membership_purge_takes_back_a_late_organization_copy(scratch, test_stack, tap):
    store = store_of(MembershipStore, scratch, test_stack)
    org_id, now = str(uuid.uuid4()), datetime.now(UTC)
    store.insert_organization(org_id, "Lab", "owner-1", now)
    # a retried creation of the same organization lands after the purge: taken back by the store
    race(store, "membership", org_id, tap, lambda: store.insert_organization(org_id, "Lab", "owner-1", now))


def test_notifications_purge_takes_back_late_settings(scratch, test_stack, tap):
    store = store_of(NotificationsStore, scratch, test_stack)
    org_id = str(uuid.uuid4())
    store.put_settings(org_id, {"plan_email": "billing@example.org"})

    def late_settings():
        with pytest.raises(DomainError) as refused:
            preferences.put_settings(store, org_id, {"plan_email": "late@example.org"})
        assert refused.value.code == "organization_gone"
    race(store, "notifications", org_id, tap, late_settings)


def test_notifications_purge_takes_back_a_late_fact(scratch, test_stack, tap):
    store = store_of(NotificationsStore, scratch, test_stack)
    org_id, now = str(uuid.uuid4()), datetime.now(UTC)
    store.set_if_newer(org_id, "name", {"name": "Lab"}, now)
    race(store, "notifications", org_id, tap, lambda: store.set_if_newer(org_id, "name", {"name": "Late"}, now))


def test_usage_purge_takes_back_a_late_organization_and_fact(scratch, test_stack, tap):
    store = store_of(UsageStore, scratch, test_stack, UsageSettings.from_file())
    org_id, now = str(uuid.uuid4()), datetime.now(UTC)
    assert store.insert_organization(org_id, "Lab", now)

    def late_writes():
        assert store.insert_organization(org_id, "Lab", now) is False  # refused: taken back
        store.set_fact_if_newer("member_counts", org_id, {"count": 3}, now)
    race(store, "usage", org_id, tap, late_writes)


def test_audit_purge_scrubs_a_late_entry(scratch, test_stack, tap):
    """An event recorded after the audit log's purge (it passed the check before) is scrubbed by the
    recorder's own re-check (``deletion.scrub_if_purged``)."""
    store = store_of(AuditStore, scratch, test_stack)
    org_id, now = str(uuid.uuid4()), datetime.now(UTC).isoformat()
    event = {"event_id": str(uuid.uuid4()), "organization_id": org_id, "occurred_at": now}
    audit_chain.record(store, event, "system", [("organization.renamed", {"type": "organization", "id": org_id}, {})])

    def late_entry():
        late = dict(event, event_id=str(uuid.uuid4()))
        audit_chain.record(store, late, "system", [("plan.changed", {"type": "organization", "id": org_id}, {})])
        assert audit_deletion.scrub_if_purged(store, org_id)
    race(store, "audit", org_id, tap, late_entry)


def test_org_tombstone_takes_no_late_fact(scratch, test_stack, tap):
    """The org service's part: once every service reported, the organization is its tombstone; a
    usage fact still in flight (storage, credits) lands on it and changes nothing."""
    store = store_of(OrgStore, scratch, test_stack)
    org_id = str(uuid.uuid4())
    org_domain.create_organization(store, org_id, "Lab", {"id": "u1", "name": "Olga", "email": "olga@example.org"})
    org_domain.request_deletion(store, org_id, "u1", "Lab")
    for service in org_domain.PURGING_SERVICES:
        store.mark_service_purged(org_id, service, {"things": 1}, datetime.now(UTC))
    org_domain.finish_deletion(store, store.get_organization(org_id), 7)
    tap.wait_for("organization_purged", organization_id=org_id, service="org")
    tombstone = store.get_organization(org_id)
    store.apply_read_model(org_id, "storage", {"used_bytes": 5, "datasets": 1}, "seq:99999999999999999999")
    assert store.get_organization(org_id) == tombstone and tombstone["status"] == "deleted"
    assert "storage" not in tombstone and "name" not in tombstone


def test_a_second_purge_of_the_same_organization_waits_for_the_lease(scratch):
    """The lease: a purge running elsewhere makes a redelivered request return None (that one reports)."""
    store = Store(scratch)
    org_id = str(uuid.uuid4())
    with store.purge_lease(org_id) as first:
        assert first
        with store.purge_lease(org_id) as second:
            assert not second
    with store.purge_lease(org_id) as again:
        assert again
