"""The gateway answers the overview from memory (``gateway/readmodel.py``), yet never stale.

Copies otherwise live ``OVERVIEW_CACHE_SECONDS`` (30 s); the reads that must see a change below
happen at once (a write's answer, then the read) or within a few seconds, so only the change stamps
and the org service's broadcasts can make them pass. The metrics show that the memory is used.
"""
import os

from gateway.readmodel import ChangeStamps, OverviewCache
from tests.support import assert_every_worker_answers, on_new_connections, side_gateway, superuser_token, wait_until
from tests.test_observability import scrape, total


def overview_reads(test_stack, outcome):
    return total(scrape(test_stack.upstream_url + "/metrics"), "gateway_overview_reads_total", outcome=outcome)


def names_served(test_stack, owner, minimum=8):
    """The name each gateway worker answers, on new connections reaching every worker."""
    answers = on_new_connections(test_stack, f"/organizations/{owner.org_id}", owner.token, minimum)
    assert {status for _, status, _ in answers} == {200}, answers[:3]
    return {body["name"] for _, _, body in answers}


def test_every_worker_serves_from_memory_and_sees_a_rename_by_any_worker_at_once(gateway, test_stack, owner):
    url = f"/organizations/{owner.org_id}"
    names_served(test_stack, owner)  # every worker holds a copy now
    hits = overview_reads(test_stack, "hit")
    original = names_served(test_stack, owner)
    assert len(original) == 1
    assert overview_reads(test_stack, "hit") >= hits + 8, "the overview was not answered from memory"

    for round_ in range(5):  # write, then read at once, through whichever worker: read-your-writes
        name = f"Renamed Lab {round_}"
        assert gateway.patch(url, {"name": name}, owner.token).status_code == 200
        assert gateway.get(url, owner.token).json()["name"] == name
        assert names_served(test_stack, owner) == {name}


def test_a_change_made_by_an_event_reaches_every_worker(gateway, test_stack, owner):
    su = superuser_token(gateway)
    url = f"/organizations/{owner.org_id}"
    on_new_connections(test_stack, url, owner.token)  # warm every worker
    report = gateway.post(url + "/storage-reports", {"datasets": [{"dataset_id": "a", "bytes": 4343}],
                                                     "complete": True}, su)
    assert report.status_code == 201, report.text

    def every_worker_serves_it():
        answers = on_new_connections(test_stack, url, owner.token, minimum=6)
        return {body["storage"]["used_bytes"] for _, _, body in answers} == {4343}
    wait_until(every_worker_serves_it, timeout=5, what="every worker to serve the new storage figure")


def test_another_gateway_host_learns_a_rename_from_the_broadcast(gateway, test_stack, owner):
    url = f"/organizations/{owner.org_id}"
    with side_gateway(test_stack, "overview-host") as other:  # its own change stamps: another machine
        assert other.get(url, owner.token).status_code == 200
        assert other.get(url, owner.token).status_code == 200  # answered from its memory now
        assert gateway.patch(url, {"name": "Seen Elsewhere"}, owner.token).status_code == 200
        wait_until(lambda: other.get(url, owner.token).json()["name"] == "Seen Elsewhere", timeout=3,
                   what="the other gateway host to drop its copy")


def test_a_deleted_organization_is_gone_on_every_worker_at_once(gateway, test_stack, owner):
    su = superuser_token(gateway)  # a platform token: the deletion does not revoke it
    url = f"/organizations/{owner.org_id}"
    answers = on_new_connections(test_stack, url, su)
    name = answers[0][2]["name"]
    assert gateway.delete(url, {"confirm_name": name}, owner.token).status_code == 202
    assert_every_worker_answers(test_stack, url, su, 410, "organization_gone", minimum=8)


# -- the cache's own rules, without a broker -------------------------------------------------------

class Fetches:
    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1
        return {"fetched": self.count}


def test_a_copy_is_served_only_while_its_stamp_is_unchanged_and_never_across_a_gap():
    cache, fetch = OverviewCache(ChangeStamps(slots=64)), Fetches()
    assert cache.read("o1", fetch) == {"fetched": 1}
    assert cache.read("o1", fetch) == {"fetched": 2}, "nothing may be kept before the listener is connected"
    cache.connected()
    cache.read("o1", fetch)
    assert cache.read("o1", fetch) == {"fetched": 3} and fetch.count == 3  # a hit
    cache.changed("o1")
    assert cache.read("o1", fetch) == {"fetched": 4}
    cache.disconnected()
    assert cache.read("o1", fetch) == {"fetched": 5}
    assert cache.read("o1", fetch) == {"fetched": 6}


def test_a_fetch_that_straddles_a_change_or_a_reconnect_is_not_kept():
    cache = OverviewCache(ChangeStamps(slots=64))
    cache.connected()

    def changed_meanwhile():
        cache.stamps.change("o1")  # another worker's write, or a broadcast, while this one fetched
        return {"stale": True}
    cache.read("o1", changed_meanwhile)
    assert cache.read("o1", lambda: {"stale": False}) == {"stale": False}

    def reconnected_meanwhile():
        cache.disconnected()
        cache.connected()
        return {"stale": True}
    cache.read("o2", reconnected_meanwhile)
    assert cache.read("o2", lambda: {"stale": False}) == {"stale": False}


def test_the_stamps_are_shared_with_forked_workers():
    stamps = ChangeStamps(slots=64)
    before = stamps.stamp("o1")
    child = os.fork()
    if child == 0:  # a gunicorn worker, forked from the master that made the stamps
        stamps.change("o1")
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert status == 0
    assert stamps.stamp("o1") != before


def test_no_overview_is_served_from_memory_after_the_deletion_answered(gateway, test_stack, owner):
    """Readers race the deletion on every worker: a read that starts after the 202 never gets 200."""
    import threading
    import time

    import requests

    su = superuser_token(gateway)  # a platform token: the deletion does not revoke it
    url = test_stack.upstream_url + f"/api/v1/organizations/{owner.org_id}"
    on_new_connections(test_stack, f"/organizations/{owner.org_id}", su)  # every worker holds a copy
    answered_at, seen, stop = [], [], threading.Event()

    def read():
        while not stop.is_set():
            started = time.monotonic()
            status = requests.get(url, headers={"Authorization": "Bearer " + su}, timeout=15).status_code
            seen.append((started, status))
    readers = [threading.Thread(target=read) for _ in range(6)]
    for reader in readers:
        reader.start()
    try:
        name = gateway.get(f"/organizations/{owner.org_id}", su).json()["name"]
        deleted = gateway.delete(f"/organizations/{owner.org_id}", {"confirm_name": name}, owner.token)
        answered_at.append(time.monotonic())
        assert deleted.status_code == 202, deleted.text
        wait_until(lambda: sum(1 for started, _ in seen if started > answered_at[0]) >= 60, timeout=30,
                   what="reads after the deletion's answer")
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=20)
    late = [status for started, status in seen if started > answered_at[0]]
    assert late and 200 not in late, sorted(set(late))
