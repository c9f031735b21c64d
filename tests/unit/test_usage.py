"""The credit ledger's arithmetic on an in-memory store: grants, reservations, settlements, expiry."""
import threading
from datetime import timedelta

import pytest

from common import context
from common.errors import DomainError
from common.events import utcnow
from services.usage import credits
from tests.unit.fakes import SlowWrites
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


# -- group commit: concurrent appends of one organization -------------------------------------------

def run_together(count, work):
    """``work(i)`` for i in range(count) on as many threads, released together; results or errors."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(index):
        barrier.wait()
        try:
            results[index] = work(index)
        except DomainError as error:
            results[index] = error
    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def credit_events(store):
    return [entry["body"] for entry in store.outbox.published if entry["type"] == "credits_changed"]


def test_concurrent_reservations_are_written_in_groups_as_one_unbroken_chain(usage_store, org):
    credits.grant(usage_store, org, "su", 100_000, "g1")
    slow = SlowWrites(usage_store, "insert_ledger_entries")

    def reserve(index):
        tokens = context.bind(f"request-{index}")
        try:
            return credits.reserve(slow, org, "u1", 1000 + index, f"job-{index}", "segmentation", f"r{index}")
        finally:
            context.unbind(tokens)
    results = run_together(24, reserve)
    assert all(not replayed for _, replayed in results)
    entries = usage_store.ledger_entries(org)
    assert [e["seq"] for e in entries] == list(range(1, 26))  # consecutive, no gaps, no duplicates
    assert sorted(e["idempotency_key"] for e in entries[1:]) == sorted(f"r{index}" for index in range(24))
    for before, after in zip(entries, entries[1:], strict=False):
        assert after["balance_after"] == before["balance_after"] + after["amount"]
    assert credits.balance(usage_store, org) == 100_000 - sum(1000 + index for index in range(24))
    assert max(usage_store.inserts) > 1 and len(usage_store.inserts) < 25  # grouped: fewer inserts than appends
    assert usage_store.clears == len(usage_store.inserts)  # one publication (and clear) per group
    published = credit_events(usage_store)
    assert sorted(body["sequence"] for body in published) == list(range(1, 26))  # each event once
    for body in published[1:]:  # each event names its own request, whoever wrote its group
        entry = usage_store.ledger_entry(body["entry_id"])
        assert body["request_id"] == "request-" + entry["idempotency_key"][1:]


def test_a_group_never_overdraws(usage_store, org):
    credits.grant(usage_store, org, "su", 7000, "g1")
    slow = SlowWrites(usage_store, "insert_ledger_entries")
    results = run_together(20, lambda index: credits.reserve(slow, org, "u1", 1000, f"job-{index}", "seg",
                                                             f"r{index}"))
    refused = [result for result in results if isinstance(result, DomainError)]
    assert len(refused) == 13 and {error.code for error in refused} == {"insufficient_credits"}
    assert credits.balance(usage_store, org) == 0
    assert [e["balance_after"] for e in usage_store.ledger_entries(org)] == [7000 - 1000 * n for n in range(8)]
    assert len(credit_events(usage_store)) == 8


def test_a_key_sent_twice_at_once_is_applied_once(usage_store, org):
    credits.grant(usage_store, org, "su", 100_000, "g1")
    slow = SlowWrites(usage_store, "insert_ledger_entries")
    results = run_together(12, lambda index: credits.reserve(slow, org, "u1", 1000, "job", "seg", f"r{index % 4}"))
    assert sum(1 for result in results if not isinstance(result, DomainError) and not result[1]) == 4
    assert sum(1 for result in results if not isinstance(result, DomainError) and result[1]) == 8
    assert len(usage_store.ledger_entries(org)) == 5 and credits.balance(usage_store, org) == 96_000
    assert len(credit_events(usage_store)) == 5
    clash = run_together(2, lambda index: credits.reserve(slow, org, "u1", 1000 + index, "job", "seg", "r0"))
    assert clash[0][1] is True and clash[1].code == "conflict"  # r0 was applied with 1000: replay; 1001 is 409


def test_another_process_appending_meanwhile_costs_a_retry_not_a_wrong_entry(usage_store, org):
    credits.grant(usage_store, org, "su", 5000, "g1")
    credits.reserve(usage_store, org, "u1", 1000, "job-1", "seg", "r1")  # this process's hint: seq 2
    head = usage_store.ledger_head(org)  # another process appends seq 3 behind our back
    usage_store.ledger["elsewhere"] = dict(head, _id="elsewhere", seq=3, amount=-500, balance_after=3500)
    entry, _ = credits.reserve(usage_store, org, "u1", 1000, "job-2", "seg", "r2")
    assert entry["seq"] == 4 and entry["balance_after"] == 2500


def test_a_refusal_on_the_hint_reads_the_real_head_first(usage_store, org):
    credits.grant(usage_store, org, "su", 1000, "g1")
    credits.reserve(usage_store, org, "u1", 1000, "job-1", "seg", "r1")  # hint: balance 0
    head = usage_store.ledger_head(org)  # another process grants meanwhile
    usage_store.ledger["grant-elsewhere"] = dict(head, _id="grant-elsewhere", seq=3, kind="grant", amount=2000,
                                                 balance_after=2000)
    entry, _ = credits.reserve(usage_store, org, "u1", 1500, "job-2", "seg", "r2")
    assert entry["seq"] == 4 and entry["balance_after"] == 500


def test_an_organization_being_deleted_refuses_the_whole_group(usage_store, org):
    credits.grant(usage_store, org, "su", 100_000, "g1")
    usage_store.orgs[org]["status"] = "deleting"
    slow = SlowWrites(usage_store, "insert_ledger_entries")
    results = run_together(6, lambda index: credits.reserve(slow, org, "u1", 1000, "job", "seg", f"r{index}"))
    assert {result.code for result in results} == {"organization_gone"}
    assert len(usage_store.ledger_entries(org)) == 1


def test_a_reservation_after_the_purge_is_refused_and_leaves_nothing(usage_store, org):
    """The group reads the organization once per process; after the purge the tombstone, checked
    after every insert, refuses what slipped in and scrubs it."""
    credits.grant(usage_store, org, "su", 5000, "g1")
    credits.reserve(usage_store, org, "u1", 1000, "job-1", "seg", "r1")  # found active: remembered
    usage_store.remember_purged(org)
    usage_store.purge_organization(org)
    assert code(credits.reserve, usage_store, org, "u1", 1000, "job-2", "seg", "r2") == "organization_gone"
    assert usage_store.mentioning(org) == []
    assert code(credits.reserve, usage_store, org, "u1", 1000, "job-3", "seg", "r3") == "organization_gone"
