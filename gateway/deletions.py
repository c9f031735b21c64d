"""Organizations being deleted, as each gateway process knows them: 410 before any service answers.

From the 202 of ``DELETE /organizations/{id}`` on, every request on that organization answers 410
``organization_gone`` -- superusers' too (their tokens are not scoped to it, so no revocation stops
them). The org and membership services know it at once (the request passes through them); the
others learn it from ``organization_deletion_requested``, a few milliseconds later. So every gateway
process also learns it from that event (the revocation listener passes it on) and the
process that answered the 202 records it before answering: a request on the organization is refused
here, whatever a service has heard yet. The services stay the authority (this list is in memory and
forgets after ``retention`` seconds, long after every service has purged or marked the organization).
"""
import threading
import time
from collections import OrderedDict


class GoneOrganizations:
    def __init__(self, retention=86400.0, max_entries=100000, enabled=True):
        self.enabled = enabled  # off only for tests of the services' own refusal
        self.retention = retention
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._gone = OrderedDict()  # org id -> forget after (monotonic seconds)

    def add(self, org_id):
        if not self.enabled:
            return
        with self._lock:
            self._gone[org_id] = time.monotonic() + self.retention
            self._gone.move_to_end(org_id)
            while len(self._gone) > self.max_entries:
                self._gone.popitem(last=False)

    def __contains__(self, org_id):
        with self._lock:
            forget_after = self._gone.get(org_id)
            if forget_after is None:
                return False
            if forget_after < time.monotonic():
                del self._gone[org_id]
                return False
            return True
