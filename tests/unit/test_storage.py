"""Usage's storage reports on an in-memory store: totals kept incrementally, complete vs partial."""
import pytest

from common.errors import DomainError
from common.events import utcnow
from services.usage import deletion, storage


@pytest.fixture
def org(usage_store, new_org_id):
    usage_store.insert_organization(new_org_id, "Lab", utcnow())
    return new_org_id


def report(store, org_id, complete, **sizes):
    return storage.report(store, org_id, [{"dataset_id": k, "bytes": v} for k, v in sizes.items()], complete)


def test_a_partial_report_changes_only_the_datasets_it_names(usage_store, org):
    report(usage_store, org, True, a=100, b=50)
    totals = report(usage_store, org, False, b=70, c=5)
    assert (totals["used_bytes"], totals["datasets"], totals["sequence"]) == (175, 3, 2)


def test_a_complete_report_is_the_whole_truth(usage_store, org):
    report(usage_store, org, True, a=100, b=50)
    totals = report(usage_store, org, True, c=5)
    assert (totals["used_bytes"], totals["datasets"]) == (5, 1)
    assert [e["body"]["used_bytes"] for e in usage_store.outbox.published if e["type"] == "storage_updated"] == [150, 5]


def test_a_refused_report_gives_its_claim_back(usage_store, org):
    report(usage_store, org, True, a=1)
    with pytest.raises(DomainError):
        report(usage_store, org, False, **{f"d{n}": storage.MAX_BYTES for n in range(3)},
               big=storage.MAX_BYTES + 1)
    assert storage.summary(usage_store, org)["used_bytes"] == 1
    assert report(usage_store, org, False, b=1)["sequence"] == 2  # the chain has no gap


def test_the_usage_summary_reads_plan_members_and_storage(usage_store, org):
    usage_store.set_fact_if_newer("plans", org, {"plan": {"name": "team", "included_users": 5,
                                                          "included_storage_bytes": 10, "paid_until": None}}, "t1")
    report(usage_store, org, True, a=11)
    summary = storage.usage(usage_store, org, 42)
    assert summary["storage"]["exceeded"] and summary["members"] == {"count": 1, "included": 5}
    assert summary["credits"] == {"balance": 42}


def test_export_lists_every_dataset_and_the_ledger(usage_store, org):
    report(usage_store, org, True, a=1, b=2)
    exported = deletion.export(usage_store, org)
    assert sorted(d["id"] for d in exported["storage"]["datasets_report"]) == ["a", "b"]
    assert exported["credits"]["balance"] == 0
