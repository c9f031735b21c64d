"""What the gateway needs to know about its edge: who the client is, and how much of a worker one
kind of request may hold.

*Client address.* nginx sits in front of gunicorn and passes the client's address in ``X-Real-IP``
(overwriting whatever a client sent). The header is believed only when the TCP peer is one of
``FORWARDED_ALLOW_IPS`` (the proxy; the same setting gunicorn uses for its forwarded headers):
anyone else could name any address and dodge the per-address rate limits, or pin them on a victim.

*Bulkheads.* A gunicorn worker has ``GATEWAY_THREADS`` threads. Requests that cost a password hash
(sign-up, login, password change) or a whole-organization export are slow, and 40 concurrent
sign-ups or 20 exports used to occupy every thread: ``/healthz`` took 9 s and ``/me`` answered 503.
Each such class gets a bounded semaphore per worker, taken without waiting; when it is full the
request is refused at once (``503 service_unavailable`` for hashing, ``429 rate_limited`` for
exports, both with ``Retry-After``), so the other threads always stay free for everything else.
"""
import ipaddress
import threading
from contextlib import contextmanager

from common.errors import DomainError

#: route class -> (the setting holding its size per worker, error code when full)
CLASSES = {
    "hashing": ("bulkhead_hashing", "service_unavailable"),
    "export": ("bulkhead_export", "rate_limited"),
}
RETRY_AFTER_SECONDS = 1


def trusted_networks(setting):
    """``FORWARDED_ALLOW_IPS`` as networks (``*``: every peer, for a proxy reachable only privately)."""
    networks = []
    for item in str(setting or "").split(","):
        item = item.strip()
        if item == "*":
            return [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
        if item:
            networks.append(ipaddress.ip_network(item, strict=False))
    return networks


def _address(text):
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None


def client_address(environ, headers, networks):
    """The client's address: the proxy's ``X-Real-IP`` if the peer is a trusted proxy, else the peer."""
    peer = environ.get("REMOTE_ADDR") or ""
    peer_address = _address(peer)
    if peer_address is not None and any(peer_address in network for network in networks):
        forwarded = _address(headers.get("X-Real-IP"))
        if forwarded is not None:
            return str(forwarded)
    return peer


class Bulkheads:
    """One bounded semaphore per route class, per worker process."""

    def __init__(self, settings):
        self.sizes = {name: getattr(settings, setting) for name, (setting, _) in CLASSES.items()}
        self._slots = {name: threading.BoundedSemaphore(size) for name, size in self.sizes.items()}

    @contextmanager
    def enter(self, name):
        if name is None:
            yield
            return
        slots = self._slots[name]
        if not slots.acquire(blocking=False):
            code = CLASSES[name][1]
            raise DomainError(code, f"too many {name} requests at once, try again shortly",
                              {"retry_after": RETRY_AFTER_SECONDS, "bulkhead": name})
        try:
            yield
        finally:
            slots.release()
