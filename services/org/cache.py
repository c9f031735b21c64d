"""Organization documents held in memory by each org process: the overview costs no database read.

Every write to an organization goes through :class:`~services.org.store.OrgStore`, which drops the
local copy and broadcasts the organization's id on the ``org.cache`` exchange (routing key ""); every org
process (each replica) listens on its own exclusive queue and drops its copy too. Three rules keep
a replica from serving a stale document:

* a document read from the database is cached only if no invalidation for it arrived while it was
  being read (the ticket check in :meth:`OrganizationCache.put`);
* while its listener is disconnected a process caches nothing, and every (re)connect empties the
  cache, since invalidations may have been missed in between;
* entries expire after ``ORG_CACHE_SECONDS`` anyway, which bounds the damage of an invalidation
  whose publish failed (the write itself stands; the broker was down).
"""
import threading
import time
from collections import OrderedDict

from common.broadcast import BroadcastListener
from common.topology import ORG_CACHE_EXCHANGE as CACHE_EXCHANGE


class OrganizationCache:
    def __init__(self, max_age=30.0, max_entries=10000):
        self.max_age = max_age
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries = OrderedDict()  # org id -> (document, stored at)
        self._clock = 0  # bumped by every invalidation
        self._invalidated_at = OrderedDict()  # org id -> clock value of its last invalidation
        self._floor = 0  # invalidations older than what _invalidated_at still remembers
        self.listening = False

    def get(self, org_id):
        """``(document or None, ticket)``; pass the ticket to :meth:`put` after reading the database."""
        with self._lock:
            entry = self._entries.get(org_id)
            if entry is not None and time.monotonic() - entry[1] < self.max_age:
                return entry[0], None
            return None, self._clock

    def put(self, org_id, doc, ticket):
        with self._lock:
            if not self.listening or ticket is None or self._invalidated_at.get(org_id, self._floor) > ticket:
                return  # an invalidation arrived while the document was read: it may be stale
            self._entries[org_id] = (doc, time.monotonic())
            self._entries.move_to_end(org_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, org_id):
        with self._lock:
            self._clock += 1
            self._entries.pop(org_id, None)
            self._invalidated_at[org_id] = self._clock
            self._invalidated_at.move_to_end(org_id)
            while len(self._invalidated_at) > self.max_entries:
                _, clock = self._invalidated_at.popitem(last=False)
                self._floor = max(self._floor, clock)

    def clear(self, listening):
        with self._lock:
            self._clock += 1
            self._floor = self._clock
            self._invalidated_at.clear()
            self._entries.clear()
            self.listening = listening


def invalidation_listener(amqp_uri, cache):
    def on_message(routing_key, body):
        cache.invalidate(body["organization_id"])

    return BroadcastListener(amqp_uri, "org-cache", [(CACHE_EXCHANGE, "")], on_message,
                             on_connected=lambda at: cache.clear(listening=True),
                             on_disconnected=lambda: cache.clear(listening=False))
