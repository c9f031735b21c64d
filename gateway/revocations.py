"""Instant token revocation without an RPC per request.

Each gateway process keeps its own in-memory revocation list, fed by ``access_revoked`` events
through its own exclusive, auto-delete queue bound to ``membership.events`` (a broadcast: every
process gets every event). Entries live only as long as the tokens they can void (the access-token
lifetime), so memory stays bounded.

Missed events: while the consumer is disconnected, events go nowhere. So the list only vouches for
tokens issued after its consumer was (re)connected (``trusted_since``); an older token gets one
fresh check by RPC (``membership.check_access``), and the answer is cached per token id until the
token expires. After a broker outage every gateway therefore re-checks each token once.

A cached "still valid" answer is only as good as the event stream that could overturn it: it is
kept only while the consumer stays connected, so every (dis)connect drops those answers, and an
answer obtained while disconnected (or across a reconnect) is not cached at all. "Revoked" answers
are final and always kept.

What an entry voids:
- a session id: every token of that session;
- (user, organization) and (user, none): tokens whose membership (``mv``) or account (``av``)
  cut-off is older than the event's ``not_before``. The cut-off is the value the membership service
  wrote with the change, and tokens carry the cut-off they were signed under, so a token signed by
  a refresh that read the member just before a demotion dies with the demotion however late it was
  signed (comparing ``iat`` instead let 7 of 10 such refreshes through). Tokens without the claims
  (older releases) are judged by ``iat``;
- (none, organization): every token of the organization, whenever issued: it is being deleted,
  and an organization id is never used again.
"""
import threading
import time

from common import events
from common.broadcast import BroadcastListener
from common.topology import ORG_CACHE_EXCHANGE, event_exchange

#: tokens issued this close before a (re)connect are re-checked too (clock skew between hosts)
CLOCK_MARGIN = 5.0


class RevocationList:
    def __init__(self, check_access, retention=960.0):
        self._check_access = check_access
        self.retention = retention
        self._lock = threading.Lock()
        self._sessions = {}       # session id -> forget-after (epoch seconds)
        self._not_before = {}     # (user or None, org or None) -> (not_before, forget-after)
        self._checked = {}        # jti -> (valid, forget-after)
        self.trusted_since = None  # epoch seconds since which no event can have been missed
        self._answers_epoch = 0  # bumped by every (dis)connect and event: older answers are stale
        self._last_prune = time.time()

    # -- fed by the consumer -------------------------------------------------------------------
    def size(self):
        """Revoked sessions and cut-offs held (the ``gateway_revocation_list_entries`` metric)."""
        return len(self._sessions) + len(self._not_before)

    def apply(self, event):
        forget_after = time.time() + self.retention
        with self._lock:
            if event.get("session_id"):  # one session: the user's other sessions stay valid
                self._sessions[event["session_id"]] = forget_after
            else:
                key = (event.get("user_id"), event.get("organization_id"))
                previous = self._not_before.get(key, (0.0, 0.0))[0]
                self._not_before[key] = (max(previous, float(event["not_before"])), forget_after)
            self._checked.clear()  # cached fresh checks may predate this revocation
            self._answers_epoch += 1

    def connected(self, at):
        with self._lock:
            self.trusted_since = at
            self._forget_valid_answers()

    def disconnected(self):
        with self._lock:
            self.trusted_since = None
            self._forget_valid_answers()

    def _forget_valid_answers(self):
        """Events may have been missed around a (dis)connect, so "valid" answers must be re-asked."""
        self._answers_epoch += 1
        self._checked = {jti: answer for jti, answer in self._checked.items() if not answer[0]}

    # -- asked per request ---------------------------------------------------------------------
    def is_revoked(self, claims):
        self._prune()
        iat = float(claims["iat"])
        user, org = claims.get("sub"), claims.get("org")
        with self._lock:
            if claims.get("sid") in self._sessions:
                return True
            if org is not None and (None, org) in self._not_before:
                return True  # the organization is being deleted
            checks = [((user, None), claims.get("av", iat))]
            if org is not None:
                checks.append(((user, org), claims.get("mv", iat)))
            for key, cutoff in checks:
                entry = self._not_before.get(key)
                if entry and cutoff < entry[0]:
                    return True
            trusted = self.trusted_since is not None and iat >= self.trusted_since + CLOCK_MARGIN
            cached = self._checked.get(claims.get("jti"))
            epoch = self._answers_epoch
        if trusted:
            return False
        if cached is not None:
            return not cached[0]
        valid = bool(self._check_access(claims))
        with self._lock:
            listening = self.trusted_since is not None and epoch == self._answers_epoch
            if not valid or listening:
                self._checked[claims.get("jti")] = (valid, float(claims["exp"]))
        return not valid

    def _prune(self):
        now = time.time()
        if now - self._last_prune < 30:
            return
        with self._lock:
            self._last_prune = now
            self._sessions = {k: v for k, v in self._sessions.items() if v > now}
            self._not_before = {k: v for k, v in self._not_before.items() if v[1] > now}
            self._checked = {k: v for k, v in self._checked.items() if v[1] > now}


def revocation_listener(amqp_uri, revocations, on_deletion=None, overviews=None):
    """The gateway process's listener: ``access_revoked`` and ``organization_deletion_requested``
    (which also goes to ``on_deletion(org_id)``: the list of organizations answering 410) and, with
    ``overviews`` (``gateway/readmodel.py``), the org service's change broadcasts (``org.cache``).
    One queue and one thread for all of them; every (dis)connect reaches each."""
    revoked, deletion = events.ACCESS_REVOKED, events.ORGANIZATION_DELETION_REQUESTED
    bindings = [(event_exchange(revoked[0]), revoked[1]), (event_exchange(deletion[0]), deletion[1])]
    if overviews is not None:
        bindings.append((ORG_CACHE_EXCHANGE, ""))

    def on_message(routing_key, body):
        if routing_key == deletion[1]:
            # the organization's tokens die with the request, before any service has purged
            event = events.load_event(deletion, body)
            revocations.apply({"organization_id": event["organization_id"], "not_before": time.time()})
            if on_deletion is not None:
                on_deletion(event["organization_id"])
        elif routing_key == revoked[1]:
            revocations.apply(events.load_event(revoked, body))
        elif overviews is not None and isinstance(body, dict) and isinstance(body.get("organization_id"), str):
            overviews.changed(body["organization_id"])

    def on_connected(at):
        revocations.connected(at)
        if overviews is not None:
            overviews.connected(at)

    def on_disconnected():
        revocations.disconnected()
        if overviews is not None:
            overviews.disconnected()

    return BroadcastListener(amqp_uri, "gateway-revocations", bindings, on_message, on_connected, on_disconnected)
