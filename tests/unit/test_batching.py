"""Group commit (common/batching.py) with real threads: every caller gets its own result, concurrent
callers share flushes, failures reach exactly the callers of the failed batch, and nobody is
stranded when a flush fails."""
import threading

import pytest

from common.batching import GroupCommit, NewestWins, SharedReads


def run_concurrently(batch, items):
    results, errors = {}, {}
    start = threading.Barrier(len(items))

    def call(item):
        start.wait()
        try:
            results[item] = batch.submit(item)
        except Exception as error:  # noqa: BLE001 -- the test looks at it
            errors[item] = error
    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a caller never got its result"
    return results, errors


def test_a_lone_caller_is_flushed_at_once():
    calls = []
    batch = GroupCommit(lambda items: calls.append(list(items)) or [item * 2 for item in items])
    assert batch.submit(21) == 42
    assert calls == [[21]]


def test_concurrent_callers_share_flushes_and_each_gets_its_own_result():
    flushes = []
    in_flush = threading.Event()
    release = threading.Event()

    def flush(items):
        flushes.append(list(items))
        if len(flushes) == 1:  # hold the first flush so the others queue up behind it
            in_flush.set()
            release.wait(5)
        return [f"r{item}" for item in items]
    batch = GroupCommit(flush)
    first = threading.Thread(target=lambda: batch.submit(0))
    first.start()
    assert in_flush.wait(5)
    threading.Timer(0.3, release.set).start()  # the 40 callers below arrive during the first flush
    results, errors = run_concurrently(batch, list(range(1, 41)))
    first.join(5)
    assert not errors
    assert results == {item: f"r{item}" for item in range(1, 41)}
    assert sorted(item for items in flushes for item in items) == list(range(41))  # each item flushed once
    assert len(flushes) < 41 and max(len(items) for items in flushes[1:]) > 1  # shared


def test_max_batch_splits_large_queues():
    sizes = []
    gate = threading.Event()

    def flush(items):
        sizes.append(len(items))
        gate.wait(5)
        return list(items)
    batch = GroupCommit(flush, max_batch=5)
    threading.Timer(0.3, gate.set).start()
    results, errors = run_concurrently(batch, list(range(23)))
    assert not errors and results == {item: item for item in range(23)}
    assert max(sizes) <= 5 and sum(sizes) == 23


def test_a_failed_flush_fails_its_callers_only_and_the_next_batch_works():
    attempts = []

    def flush(items):
        attempts.append(list(items))
        if len(attempts) == 1:
            raise RuntimeError("database unavailable")
        return ["ok"] * len(items)
    batch = GroupCommit(flush)
    with pytest.raises(RuntimeError, match="database unavailable"):
        batch.submit("first")
    assert batch.submit("second") == "ok"


def test_per_item_errors_are_raised_in_that_caller_only():
    batch = GroupCommit(lambda items: [ValueError(item) if item == "bad" else item for item in items])
    results, errors = run_concurrently(batch, ["good", "bad", "fine"])
    assert results == {"good": "good", "fine": "fine"}
    assert list(errors) == ["bad"] and isinstance(errors["bad"], ValueError)


def test_a_flush_returning_the_wrong_number_of_results_fails_loudly():
    batch = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        batch.submit("x")
    assert GroupCommit(lambda items: list(items)).submit("y") == "y"


def test_shared_reads_ask_once_per_key_and_give_each_caller_its_own_copy():
    asked = []
    reads = SharedReads(lambda key: asked.append(key) or {"key": key, "tags": []})
    results = reads._flush_reads(["a", "b", "a", "a"])
    assert asked == ["a", "b"]
    assert [doc["key"] for doc in results] == ["a", "b", "a", "a"]
    results[0]["tags"].append("changed by one caller")
    assert results[2]["tags"] == [] and results[3]["tags"] == []
    assert reads.submit("c") == {"key": "c", "tags": []}


def test_newest_wins_writes_only_the_newest_fact_per_key():
    written = []
    facts = NewestWins(lambda key, fields, as_of: written.append((key, fields, as_of)) or "written")
    results = facts._flush_newest([
        ("org1", {"count": 2}, "t2"), ("org1", {"count": 5}, "t5"), ("org2", {"count": 1}, "t1"),
        ("org1", {"count": 3}, "t3"),
        ("org1", {"count": 4, "extra": True}, "t1"),  # not covered by the newest one's fields: kept
        ("org1", {"count": 6}, "t5"),  # as new as the one written: the stored fact refuses it anyway
    ])
    assert written == [("org1", {"count": 5}, "t5"), ("org2", {"count": 1}, "t1"),
                       ("org1", {"count": 4, "extra": True}, "t1")]
    assert results == [None, "written", "written", None, "written", None]
    assert facts.submit(("org3", {"count": 7}, "t7")) == "written"
