"""Group commit: many concurrent callers, one database round trip.

A handler that needs one small write or read calls ``batch.submit(item)`` and blocks until that
item is done. Whoever finds no flush running becomes the leader and flushes everything queued so
far in one call (``flush(items) -> results``); items submitted meanwhile wait for the next flush,
which one of them leads. So under load one command carries the work of every concurrent caller,
and a lone caller is served at once (no timer, no added latency).

The result of ``submit`` is the flush's result for that item; an ``Exception`` instance in the
results (or an exception raised by ``flush``) is raised in the caller(s) concerned. Works with
real threads and with eventlet's patched ``threading`` (nameko services).
"""
import threading


class _Slot:
    __slots__ = ("item", "done", "result", "lead")

    def __init__(self, item):
        self.item = item
        self.done = threading.Event()
        self.result = None
        self.lead = False


class GroupCommit:
    def __init__(self, flush, max_batch=500):
        self._flush = flush
        self.max_batch = int(max_batch)
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
        with self._lock:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        results, interrupted = None, None
        try:
            results = self._flush([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError("flush returned %d results for %d items" % (len(results), len(batch)))
        except Exception as error:  # every caller of this batch sees the failure
            results = [error] * len(batch)
        except BaseException as error:  # the leader itself is being killed: release everyone first
            results, interrupted = [RuntimeError("batch interrupted: %r" % error)] * len(batch), error
        for slot, result in zip(batch, results):
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
