"""Documents written before page keys (``common/pages.py``) get them at start-up (``Store.migrate``):
an upgraded installation's ledger, member list and delivery log read as before, new writes follow
the old ones, and the migration runs once per database."""
from datetime import UTC, datetime, timedelta

from common import pages
from services.membership.store import MembershipStore
from services.notifications.store import NotificationsStore
from services.usage.store import UsageStore


def test_a_ledger_from_before_page_keys_reads_and_appends_after_the_migration(scratch):
    store = UsageStore(scratch)
    store.ensure_indexes()
    scratch.organizations.insert_one({"_id": "org-a", "status": "active"})
    scratch.ledger.insert_many([{"_id": f"e{seq}", "org_id": "org-a", "seq": seq, "balance_after": seq}
                                for seq in range(1, 71)])  # three pages' worth, no page keys
    assert store.ledger_head("org-a") is None  # what the new code sees before migrating
    store.migrate()
    assert store.ledger_head("org-a")["seq"] == 70
    page = store.ledger_page("org-a", 50, top_seq=70)
    assert [entry["seq"] for entry in page] == list(range(70, 20, -1))
    assert store.insert_ledger_entries([({"_id": "e71", "org_id": "org-a", "seq": 71, "balance_after": 71}, [])]) == 1
    assert store.ledger_head("org-a")["seq"] == 71
    scratch.ledger.insert_one({"_id": "late", "org_id": "org-a", "seq": 999})  # once per database:
    store.migrate()
    assert scratch.ledger.find_one({"_id": "late"}).get(pages.FIELD) is None


def test_members_and_deliveries_from_before_page_keys_keep_their_order(scratch):
    now = datetime.now(UTC)
    members = MembershipStore(scratch)
    members.ensure_indexes()
    scratch.organizations.insert_one({"_id": "org-b", "status": "active", "member_count": 40})
    scratch.memberships.insert_many([{"_id": f"org-b:u{n:02d}", "org_id": "org-b", "user_id": f"u{n:02d}",
                                      "joined_at": now + timedelta(seconds=n)} for n in range(40)])
    members.migrate()
    assert [m["user_id"] for m in members.member_page("org-b", 50)] == [f"u{n:02d}" for n in range(40)]
    assert scratch.organizations.find_one({"_id": "org-b"})["joined"] == 40  # new members join after them

    notifications = NotificationsStore(scratch)
    notifications.ensure_indexes()
    scratch.deliveries.insert_many([{"_id": f"d{n:02d}", "org_id": "org-b", "created_at": now + timedelta(seconds=n)}
                                    for n in range(40)])
    scratch.delivery_attempts.insert_many([{"_id": f"d{n:02d}#1", "delivery_id": f"d{n:02d}", "org_id": "org-b",
                                            "n": 1} for n in range(40)])
    notifications.migrate()
    page = notifications.delivery_page("org-b", 50)
    assert [d["_id"] for d in page] == [f"d{n:02d}" for n in range(39, -1, -1)]  # newest first
    keys = sorted({d[pages.FIELD] for d in page})
    attempts = notifications.attempts_of("org-b", [d["_id"] for d in page], keys)
    assert all(len(attempts[d["_id"]]) == 1 for d in page)
