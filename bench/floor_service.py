"""The least a credit reservation's hops can cost: stock nameko services with no logic (``bench/floor.py``).

``Floor.reserve`` is one RPC that writes one document (``insert_one``, the entry; with
``write=False`` nothing) and dispatches one event, which ``SubscriberA`` and ``SubscriberB`` receive
and drop: the shape of a reservation in this design (an RPC to the service that owns the ledger, the
fact published to the organization service and the audit log), without the gateway, validation,
idempotency, the balance guard, the outbox, a read or the consumers' own writes. Run by
``nameko run`` (eventlet, monkey-patched) with ``AMQP_URI`` from its config file and the scratch
database from ``FLOOR_MONGO_URL`` / ``FLOOR_DB``.
"""
import os

import pymongo
from nameko.events import EventDispatcher, event_handler
from nameko.rpc import rpc

_client = None


def _entries():
    global _client
    if _client is None:
        _client = pymongo.MongoClient(os.environ["FLOOR_MONGO_URL"])
    return _client[os.environ["FLOOR_DB"]].entries


class Floor:
    name = "floor"
    dispatch = EventDispatcher()

    @rpc
    def reserve(self, entry, write=True):
        if write:
            _entries().insert_one(dict(entry))
        self.dispatch("reserved", {"organization_id": entry["org_id"], "seq": entry["seq"]})
        return entry["seq"]


class SubscriberA:
    name = "floor_a"

    @event_handler("floor", "reserved")
    def on_reserved(self, payload):
        pass


class SubscriberB:
    name = "floor_b"

    @event_handler("floor", "reserved")
    def on_reserved(self, payload):
        pass
