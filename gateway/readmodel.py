"""The organization overview, answered from the gateway worker's memory while nothing changed.

The overview is what members read most, and asking the org service costs a RabbitMQ round trip
(two hops, a reply queue, a nameko worker) for an answer that rarely changes. Each gunicorn worker
keeps the overviews it fetched; authorization, the revocation list and the list of organizations
being deleted still apply to every request before the cache is consulted (``gateway/api.py``).

What keeps a copy from being served stale: **change stamps**, one 64-bit value per slot (a slot per
organization id hash), in memory that every gunicorn worker of the host shares (an anonymous shared
``mmap`` made in gunicorn's master before it forks, see ``gunicorn.conf.py``). A copy is kept with
the stamp its slot had *before* the fetch and is served only while the stamp is unchanged. A stamp
changes (a fresh random value) when

* a gateway worker of this host has sent a write that changes the overview (rename, plan, deletion)
  to the org service: it changes the stamp **before** it answers, so whichever worker the client's
  next read reaches sees its write (read-your-writes across workers);
* any worker's listener receives the org service's change broadcast (``org.cache``, published for
  every write to an organization, also those that events cause: member count, storage, credits,
  owner): writes through other gateway hosts and writes the services make on their own.

Like the org service's cache (``services/org/cache.py``) a worker caches nothing while its listener
is disconnected and forgets everything on every (re)connect, since broadcasts may have been missed
in between; a fetch that straddled a reconnect is not kept either (the epoch in the ticket). Copies
also expire after ``OVERVIEW_CACHE_SECONDS``, which bounds the damage of a broadcast whose publish
failed. Across *hosts* the broadcast is the only path: the org service publishes it before it
answers the write, and another host applies it as soon as its listener thread reads it.
"""
import mmap
import os
import threading
import time
import zlib
from collections import OrderedDict

SLOTS = 65536

_shared = None


class ChangeStamps:
    """One 64-bit stamp per slot in anonymous shared memory (inherited by forked workers)."""

    def __init__(self, slots=SLOTS):
        self._map = mmap.mmap(-1, slots * 8)  # MAP_SHARED | MAP_ANONYMOUS: shared with children
        self._view = memoryview(self._map).cast("Q")
        self._slots = slots

    def _slot(self, key):
        return zlib.crc32(key.encode("utf-8")) % self._slots  # the same in every process (hash() is not)

    def stamp(self, key):
        return self._view[self._slot(key)]

    def change(self, key):
        """A new random value: only inequality matters, so concurrent changes from several processes
        (no lock) still leave a value that differs from what any earlier reader saw."""
        self._view[self._slot(key)] = int.from_bytes(os.urandom(8), "little")


def shared_stamps():
    """The host's stamps: made by gunicorn's master before the workers fork (``on_starting``), so
    they all share one; a process not forked from gunicorn's master (a test app) gets its own."""
    global _shared
    if _shared is None:
        _shared = ChangeStamps()
    return _shared


class OverviewCache:
    def __init__(self, stamps, max_age=30.0, max_entries=10000, observe=None):
        self.stamps = stamps
        self.observe = observe or (lambda hit: None)  # (hit: bool) -> None, the metrics
        self.max_age = max_age
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries = OrderedDict()  # org id -> (stamp, stored at, overview)
        self._epoch = 0  # bumped by every (dis)connect of the listener
        self.listening = False

    def read(self, org_id, fetch):
        """The cached overview, or ``fetch()``'s answer (kept if nothing changed meanwhile)."""
        if self.max_age <= 0:
            return fetch()
        stamp = self.stamps.stamp(org_id)
        with self._lock:
            entry = self._entries.get(org_id)
            if entry is not None and self.listening and entry[0] == stamp \
                    and time.monotonic() - entry[1] < self.max_age:
                self.observe(True)
                return entry[2]
            epoch = self._epoch
        self.observe(False)
        overview = fetch()
        with self._lock:
            if self.listening and epoch == self._epoch:  # no gap in the broadcasts since the stamp was read
                self._entries[org_id] = (stamp, time.monotonic(), overview)
                self._entries.move_to_end(org_id)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return overview

    def changed(self, org_id):
        """A write to ``org_id`` was sent (by this host) or announced (by the org service)."""
        self.stamps.change(org_id)
        with self._lock:
            self._entries.pop(org_id, None)

    def connected(self, at=None):
        self._reset(listening=True)

    def disconnected(self):
        self._reset(listening=False)

    def _reset(self, listening):
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self.listening = listening
