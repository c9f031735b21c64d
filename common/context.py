"""The request id (and event id) of the work in hand, one rule for every process.

A request id ties an HTTP request to the RPC calls, events and mails it caused. The gateway takes a
client's well-formed ``X-Request-ID`` or makes one; it travels in nameko RPC as context data
(``request_id``, sent as the header ``nameko.request_id``, which nameko also forwards on calls one
service makes to another; the verified caller travels the same way as ``actor``), is stored with each outbox entry, and
goes out as the event's AMQP
``correlation_id``; an event handler takes it from there (``common.handlers``), so the events and
mail a handler causes carry it too.

Each nameko worker is its own greenlet and each gunicorn request its own thread, and both keep
their own :mod:`contextvars`, so ``current()`` is the id of the work in hand wherever it is read:
the outbox, the delivery log and the log formatter (``common.logs``) read it without threading it
through every function.
"""
import contextvars
import logging
import random
import re
import time

from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc

log = logging.getLogger("orgplatform.worker")

REQUEST_ID_HEADER = "X-Request-ID"
#: nameko context data keys (headers ``nameko.request_id``, ``nameko.event_id``)
REQUEST_ID = "request_id"
EVENT_ID = "event_id"
#: who asked (``{"user_id", "is_superuser"}``), as the gateway verified it from the access token
ACTOR = "actor"
#: the actor of work no person asked for (timers, sweeps, reactions to other events)
SYSTEM = "system"
# What a client may send: 1-128 visible characters of a conservative set, so an id is safe in a
# log line, an AMQP short string and a header without escaping (UUIDs, ULIDs, trace ids all fit).
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")

_request_id = contextvars.ContextVar("request_id", default=None)
_event_id = contextvars.ContextVar("event_id", default=None)
_actor = contextvars.ContextVar("actor", default=None)


def well_formed(value):
    return isinstance(value, str) and _WELL_FORMED.fullmatch(value) is not None


# a random 128-bit number made a version 4, RFC 4122 variant UUID: version nibble 4, variant bits 10
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id():
    """A random (version 4) UUID, hyphenated. Request ids correlate, they guard nothing (a client may
    choose its own), so they come from ``random`` (reseeded in every forked child) rather than
    ``os.urandom``, a system call that cost more than the rest of the gateway's ``/healthz`` hooks
    together; formatted by hand (0.7 us) rather than through ``uuid.UUID`` (2.4 us): the gateway
    makes one per request that brings none."""
    digits = "%032x" % (random.getrandbits(128) & _UUID4_KEEP | _UUID4_SET)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def request_id():
    """The request id of the work in hand, or None (a timer, a sweep, start-up)."""
    return _request_id.get()


def event_id():
    """The id of the event being handled, or None."""
    return _event_id.get()


def actor():
    """Who asked for the work in hand (``{"user_id", "is_superuser"}``), or None when no person did.

    Informational only -- it names the actor in the events the work causes (audit trails, issue 19);
    services never decide a right by it: they re-check the caller against their own data."""
    return _actor.get()


def event_actor():
    """``actor()`` as events carry it: the person, else ``"system"``."""
    return _actor.get() or SYSTEM


def as_actor(value):
    """A well-formed actor from context data or a claims-like dict, else None (malformed data from a
    client never reaches an event)."""
    if not isinstance(value, dict) or not isinstance(value.get("user_id"), str) or not value["user_id"]:
        return None
    return {"user_id": value["user_id"], "is_superuser": bool(value.get("is_superuser"))}


def bind_actor(value):
    """Make ``value`` (an actor, or None) the actor of the work in hand; returns a reset token."""
    return _actor.set(as_actor(value))


def unbind_actor(token):
    _actor.reset(token)


def bind(request=None, event=None):
    """Make ``request``/``event`` the ids of the work in hand; returns what :func:`unbind` takes."""
    return _request_id.set(request), _event_id.set(event)


def unbind(tokens):
    request_token, event_token = tokens
    _request_id.reset(request_token)
    _event_id.reset(event_token)


class RequestContext(DependencyProvider):
    """Binds the worker's ``request_id``/``event_id`` context data while the worker runs, and logs
    one line per RPC call or event handled (``entrypoint``, ``outcome``, ``duration_ms``): the
    service side of a request's trace. Timers are not logged (they tick every second in tests).

    Declared once on every service class (``context = RequestContext()``); nameko runs
    ``worker_setup`` in the worker's own greenlet, right before the entrypoint method."""

    def worker_setup(self, worker_ctx):
        data = worker_ctx.data or {}
        request = data.get(REQUEST_ID)
        bind(request if well_formed(request) else None, data.get(EVENT_ID))
        bind_actor(data.get(ACTOR))
        worker_ctx.orgplatform_started = time.monotonic()  # not in data: that travels on with every call

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        entrypoint = worker_ctx.entrypoint
        if not isinstance(entrypoint, (Rpc, EventHandler)):
            return
        kind = "rpc" if isinstance(entrypoint, Rpc) else "event"
        outcome = "ok"
        if exc_info is not None:
            outcome = "refused" if isinstance(exc_info[1], entrypoint.expected_exceptions) else "failed"
        started = getattr(worker_ctx, "orgplatform_started", None) or time.monotonic()
        log.info("%s %s.%s %s", kind, worker_ctx.service_name, entrypoint.method_name, outcome,
                 extra={"entrypoint": f"{worker_ctx.service_name}.{entrypoint.method_name}",
                        "kind": kind, "outcome": outcome,
                        "duration_ms": round((time.monotonic() - started) * 1000, 1)})

    def worker_teardown(self, worker_ctx):
        bind(None, None)
        bind_actor(None)

    def get_dependency(self, worker_ctx):
        return (worker_ctx.data or {}).get(REQUEST_ID)
