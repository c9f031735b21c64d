"""The overview comes from each org process's memory, yet no replica keeps serving it stale.

Entries otherwise live ``ORG_CACHE_SECONDS`` (30 s by default); the deadlines below are far
shorter, so only the change broadcast can make these tests pass.
"""
import pytest

from stack import stack
from tests.support import superuser_token, wait_until


def served(gateway, owner, field, reads=12):
    """What the replicas answer (RPC requests are spread across every org process)."""
    url = f"/organizations/{owner.org_id}"
    answers = []
    for _ in range(reads):
        response = gateway.get(url, owner.token)
        assert response.status_code == 200, response.text
        answers.append(field(response.json()))
    return set(answers)


@pytest.mark.slow
def test_every_replica_drops_its_copy_when_the_organization_changes(gateway, test_stack, owner):
    su = superuser_token(gateway)
    url = f"/organizations/{owner.org_id}"
    replica = stack.start_replica(test_stack, "org", "org-2")
    try:
        original = gateway.get(url, owner.token).json()["name"]
        assert served(gateway, owner, lambda o: o["name"]) == {original}  # both replicas hold a copy now

        # changed by an RPC, on whichever replica received it
        assert gateway.patch(url, {"name": "Renamed Lab"}, owner.token).status_code == 200
        wait_until(lambda: served(gateway, owner, lambda o: o["name"]) == {"Renamed Lab"}, timeout=3,
                   what="every replica to serve the new name")

        # changed by an event that only one replica consumes
        report = gateway.post(url + "/storage-reports", {"datasets": [{"dataset_id": "a", "bytes": 4242}],
                                                         "complete": True}, su)
        assert report.status_code == 201, report.text
        wait_until(lambda: served(gateway, owner, lambda o: o["storage"]["used_bytes"]) == {4242}, timeout=5,
                   what="every replica to serve the new storage figure")

        # a plan change is seen at once by the seat check (membership asks the org service)
        plan = {"name": "team", "included_users": 1, "included_storage_bytes": None, "paid_until": None}
        assert gateway.request("PUT", url + "/plan", su, json=plan).status_code == 200
        wait_until(lambda: served(gateway, owner, lambda o: o["members"]["included"]) == {1}, timeout=3,
                   what="every replica to serve the new plan")
    finally:
        stack.stop_pid_file(replica)


def test_a_deleted_organization_is_gone_at_once_although_its_overview_was_cached(gateway, owner):
    su = superuser_token(gateway)  # a platform token: deletion does not revoke it
    url = f"/organizations/{owner.org_id}"
    name = gateway.get(url, su).json()["name"]
    assert gateway.get(url, su).status_code == 200  # served from the cache now
    assert gateway.delete(url, {"confirm_name": name}, owner.token).status_code == 202
    gone = gateway.get(url, su)
    assert (gone.status_code, gone.json()["error"]["code"]) in ((410, "organization_gone"), (404, "not_found"))
