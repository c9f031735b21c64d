"""Group commit: many concurrent callers, one database round trip.

A handler that needs one small write or read calls ``batch.submit(item)`` and blocks until that
item is done. Whoever finds no flush running becomes the leader and flushes everything queued so
far in one call (``flush(items) -> results``); items submitted meanwhile wait for the next flush,
which one of them leads. So under load one command carries the work of every concurrent caller,
and a lone caller is served at once (no timer, no added latency).

``linger`` (seconds, default 0) trades latency for fewer round trips where a caller can wait: a
leader that finds itself alone waits that long before flushing, so that callers arriving one by one
(events trickling in) still share a command instead of each paying for one.

The result of ``submit`` is the flush's result for that item; an ``Exception`` instance in the
results (or an exception raised by ``flush``) is raised in the caller(s) concerned. Works with
real threads and with eventlet's patched ``threading`` (nameko services).
"""
import copy
import random
import threading
import time

#: How long a lone write to a read model (a fact that events restate, like a member count) waits for
#: others: a burst of events trickling in is then a few updates instead of one each, and the fact
#: shows at most this much later.
READ_MODEL_LINGER = 0.05


def remember(cache, key, value, limit=10_000):
    """``cache[key] = value`` in a per-process memo of at most ``limit`` keys, emptied whole when
    full: what a group commit remembers between groups (an organization's head, that it is active)
    is a hint the next write proves or refutes, so forgetting all of it at once is only a read more."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


def step_aside(conflicts):
    """After more than three lost races for the same position (another process keeps winning it),
    wait a random moment that grows with the count, at most 50 ms, so the two stop colliding."""
    if conflicts > 3:
        time.sleep(random.uniform(0, min(0.002 * conflicts, 0.05)))


class _Slot:
    __slots__ = ("item", "done", "result", "lead")

    def __init__(self, item):
        self.item = item
        self.done = threading.Event()
        self.result = None
        self.lead = False


class GroupCommit:
    def __init__(self, flush, max_batch=500, linger=0.0):
        self._flush = flush
        self.max_batch = int(max_batch)
        self.linger = float(linger)
        self._lock = threading.Lock()
        self._pending = []
        self._flushing = False

    def submit(self, item):
        slot = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            lead = not self._flushing
            self._flushing = True
        while True:
            if lead:
                self._lead()
            try:
                slot.done.wait()
            except BaseException:  # the caller is killed while waiting: do not strand the others
                self._abandon(slot)
                raise
            if not slot.lead:
                break
            slot.lead, lead = False, True  # handed the next flush; our item is in it or still queued
            slot.done.clear()
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result

    def _abandon(self, slot):
        with self._lock:
            if slot in self._pending:
                self._pending.remove(slot)
            if slot.lead:  # we were handed the next flush: pass it on
                slot.lead = False
                if self._pending:
                    self._pending[0].lead = True
                    self._pending[0].done.set()
                else:
                    self._flushing = False

    def _lead(self):
        # Let callers that are ready to run submit first: callers released together by the previous
        # step (e.g. a shared read) join this flush instead of each leading one of their own. Under
        # eventlet this is one pass of the hub, not a wait; with threads it only yields the GIL.
        time.sleep(0)
        if self.linger:  # a leader that is still alone waits a moment for company (see ``linger``)
            with self._lock:
                alone = len(self._pending) < 2
            if alone:
                time.sleep(self.linger)
        with self._lock:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        results, interrupted = None, None
        try:
            results = self._flush([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} items")
        except Exception as error:  # every caller of this batch sees the failure
            results = [error] * len(batch)
        except BaseException as error:  # the leader itself is being killed: release everyone first
            results, interrupted = [RuntimeError(f"batch interrupted: {error!r}")] * len(batch), error
        for slot, result in zip(batch, results, strict=False):
            slot.result = result
            slot.done.set()
        with self._lock:
            if self._pending:  # hand the next flush to a waiting caller, not to ourselves forever
                successor = self._pending[0]
                successor.lead = True
                successor.done.set()
            else:
                self._flushing = False
        if interrupted is not None:
            raise interrupted


class SharedReads(GroupCommit):
    """Concurrent reads of the same key share one query: ``read(key)`` runs once per distinct key
    of a flush. The query is sent after every waiting call started, so each sees every write made
    before it asked; callers may change what they get, so each gets its own copy."""

    def __init__(self, read, max_batch=500, linger=0.0):
        super().__init__(self._flush_reads, max_batch, linger)
        self._read_one = read

    def _flush_reads(self, keys):
        found, results = {}, []
        for key in keys:
            if key in found:
                results.append(copy.deepcopy(found[key]))
            else:
                found[key] = self._read_one(key)
                results.append(found[key])
        return results


class NewestWins(GroupCommit):
    """Concurrent "set these fields unless a newer fact is stored" writes, one write per key.

    Items are ``(key, fields, as_of)``. Of the items of one flush with the same key, one whose
    fields a newer item sets too is dropped: whatever the stored fact, the newer item decides the
    outcome for both. Of equally new items the first is written; the stored fact refuses the others
    anyway (only a strictly newer fact replaces one). ``write(key, fields, as_of)`` writes the others; its result is
    theirs (a
    dropped item gets None). A burst of events that each restate a counter is then one update."""

    def __init__(self, write, max_batch=500, linger=0.0):
        super().__init__(self._flush_newest, max_batch, linger)
        self._write_one = write

    def _flush_newest(self, items):
        newest = {}  # key -> index of the item that decides: the newest, the first of equals
        for index, (key, _fields, as_of) in enumerate(items):
            if key not in newest or as_of > items[newest[key]][2]:
                newest[key] = index
        results = []
        for index, (key, fields, as_of) in enumerate(items):
            _, newer_fields, newer_as_of = items[newest[key]]
            if index != newest[key] and newer_as_of >= as_of and set(newer_fields) >= set(fields):
                results.append(None)  # the stored fact ends the same with or without this write
            else:
                results.append(self._write_one(key, fields, as_of))
        return results
