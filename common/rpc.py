"""Calls from one service into another.

nameko's in-service ``RpcProxy`` waits forever for an answer; a worker stuck on a service that is
down is a worker lost. Every call between services goes through :func:`ask`, bounded by the
caller's ``RPC_TIMEOUT``, and a service that did not answer is the contract's 503.
"""
import eventlet

from common.errors import DomainError


def ask(proxy, timeout, method, *args):
    """``proxy.method(*args)``, or ``DomainError("service_unavailable")`` after ``timeout`` seconds
    (the caller's ``RPC_TIMEOUT`` setting)."""
    unanswered = DomainError("service_unavailable", f"{proxy.service_name} service did not answer")
    with eventlet.Timeout(timeout, unanswered):
        return getattr(proxy, method)(*args)
