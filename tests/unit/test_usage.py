"""The credit ledger's arithmetic on an in-memory store: grants, reservations, settlements, expiry."""
from datetime import timedelta

import pytest

from common.errors import DomainError
from common.events import utcnow
from services.usage import credits
from tests.unit.refusals import code


@pytest.fixture
def org(usage_store, new_org_id):
    assert usage_store.insert_organization(new_org_id, "Lab", utcnow())
    return new_org_id


def test_the_balance_is_the_head_of_the_chain(usage_store, org):
    credits.grant(usage_store, org, "su", 5000, "g1")
    entry, replayed = credits.reserve(usage_store, org, "u1", 1200, "job-1", "segmentation", "r1")
    assert not replayed and entry["balance_after"] == 3800 and entry["seq"] == 2
    assert credits.balance(usage_store, org) == 3800
    assert [e["seq"] for e in usage_store.ledger_entries(org)] == [1, 2]


def test_a_reservation_never_takes_the_balance_below_zero(usage_store, org):
    credits.grant(usage_store, org, "su", 1000, "g1")
    with pytest.raises(DomainError) as refused:
        credits.reserve(usage_store, org, "u1", 1001, "job-1", "segmentation", "r1")
    assert refused.value.code == "insufficient_credits"
    assert refused.value.details == {"balance": 1000, "required": 1001}
    assert credits.balance(usage_store, org) == 1000


def test_a_key_is_applied_once_and_reused_with_other_parameters_is_a_conflict(usage_store, org):
    first, _ = credits.grant(usage_store, org, "su", 1000, "g1")
    again, replayed = credits.grant(usage_store, org, "su", 1000, "g1")
    assert replayed and again["_id"] == first["_id"] and credits.balance(usage_store, org) == 1000
    assert code(credits.grant, usage_store, org, "su", 2000, "g1") == "conflict"


def test_a_failed_job_refunds_its_reservation_a_succeeded_one_keeps_it_spent(usage_store, org):
    credits.grant(usage_store, org, "su", 1000, "g1")
    ok, _ = credits.reserve(usage_store, org, "u1", 300, "job-ok", "segmentation", "r1")
    failed, _ = credits.reserve(usage_store, org, "u1", 200, "job-failed", "segmentation", "r2")
    credits.settle(usage_store, org, "u1", ok["_id"], "succeeded")
    refund, _ = credits.settle(usage_store, org, "u1", failed["_id"], "failed")
    assert refund["kind"] == "refund" and refund["amount"] == 200
    assert credits.balance(usage_store, org) == 700
    _, replayed = credits.settle(usage_store, org, "u1", failed["_id"], "failed")
    assert replayed and credits.balance(usage_store, org) == 700  # settled once
    assert [e["type"] for e in usage_store.outbox.published].count("ai_job_completed") == 2


def test_expiring_grants_are_spent_first_and_only_their_remainder_expires(usage_store, org):
    soon = utcnow() + timedelta(days=1)
    credits.grant(usage_store, org, "su", 1000, "permanent")
    expiring, _ = credits.grant(usage_store, org, "su", 500, "expiring", expires_at=soon.isoformat())
    credits.reserve(usage_store, org, "u1", 300, "job-1", "segmentation", "r1")  # taken from the expiring lot
    assert credits.expire_due(usage_store, now=soon + timedelta(seconds=1)) == 1
    assert credits.balance(usage_store, org) == 1000  # 1500 - 300 spent - 200 left of the lot expired
    assert usage_store.due_expiries(soon + timedelta(days=1)) == []


def test_a_refund_goes_back_to_its_lot_while_that_has_not_expired(usage_store, org):
    soon = utcnow() + timedelta(days=1)
    credits.grant(usage_store, org, "su", 500, "expiring", expires_at=soon.isoformat())
    job, _ = credits.reserve(usage_store, org, "u1", 400, "job-1", "segmentation", "r1")
    credits.settle(usage_store, org, "u1", job["_id"], "failed")
    credits.expire_due(usage_store, now=soon + timedelta(seconds=1))
    assert credits.balance(usage_store, org) == 0  # the refunded 400 expired with their grant


@pytest.mark.parametrize("amount", [0, -1, 1.5, True, 10 ** 16, "10"])
def test_amounts_are_positive_whole_milli_credits(usage_store, org, amount):
    assert code(credits.grant, usage_store, org, "su", amount, "g") == "validation_failed"


def test_unknown_organizations_are_404_and_purged_ones_410(usage_store, org):
    assert code(credits.grant, usage_store, "never-heard-of", "su", 1, "g") == "not_found"
    usage_store.remember_purged(org)
    usage_store.purge_organization(org)
    assert code(credits.grant, usage_store, org, "su", 1, "g") == "organization_gone"


def test_the_ledger_pages_newest_first(usage_store, org):
    for n in range(5):
        credits.grant(usage_store, org, "su", 10, f"g{n}")
    first = credits.ledger(usage_store, org, limit=3)
    second = credits.ledger(usage_store, org, limit=3, cursor=first["next_cursor"])
    assert [e["balance_after"] for e in first["items"] + second["items"]] == [50, 40, 30, 20, 10]
    assert first["balance"] == 50 and second["next_cursor"] is None
