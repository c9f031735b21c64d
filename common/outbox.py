"""Transactional outbox without transactions.

MongoDB-compatible servers here have no multi-document transactions, so an event is written
*into the document whose change it announces*, in the same single-document write:
``_outbox.<event_id>: event`` plus ``$inc: {_outbox_n: 1}``. After the write the service publishes
the events *it* queued and unsets them (decrementing the counter); events other writers queued in
the same document are theirs to publish. If the process dies in between,
the periodic ``sweep`` finds documents with ``_outbox_n > 0`` and publishes what they still hold;
subscribers dedupe or are idempotent, so a rare double publish is harmless.

(A map keyed by event id rather than an array: FerretDB ignores ``$pull`` with a dotted condition
and ``$elemMatch``, while ``$unset``/``$exists`` on a dotted path work on every server.)

A document that should disappear once its events are out (a removed membership, say) is marked
``_delete_after_publish`` and the outbox deletes it when its counter reaches zero.
"""
import logging
import uuid
from datetime import timedelta

from amqp.exceptions import AMQPError
from kombu.exceptions import KombuError
from nameko.amqp.publish import Publisher

from common import context
from common.envelope import envelope
from common.events import make_event, utcnow
from common.topology import event_exchange

log = logging.getLogger(__name__)

FIELD = "_outbox"
COUNT = "_outbox_n"
DELETE_AFTER = "_delete_after_publish"
PROJECTION = {FIELD: 1, COUNT: 1, DELETE_AFTER: 1}


def without_outbox(doc):
    """The document without outbox bookkeeping (FerretDB's findAndModify takes no projection)."""
    if doc is not None:
        doc.pop(FIELD, None)
        doc.pop(COUNT, None)
    return doc


def pending(event, organization_id=None, **payload):
    """An outbox entry for ``event``, validated against the event schema now, not at publish.

    It keeps the request id of the work in hand (``common.context``): the event may be published
    later, by a sweep after a crash, and must still name the request that caused it. The body names
    them too (``request_id``, and ``actor``: who asked, unless the caller says who acted), so a
    subscriber that stores events (the audit service) needs nothing but the body."""
    request_id = context.request_id()
    payload.setdefault("actor", context.event_actor())
    payload.setdefault("request_id", request_id)
    source, event_type, body = make_event(event, organization_id, **payload)
    entry = {"source": source, "type": event_type, "body": body, "queued_at": utcnow()}
    if request_id:
        entry["request_id"] = request_id
    return entry


def queue_fields(*entries):
    """Fields to ``$set`` (or insert) that queue ``entries``; pair with :func:`count_increment`."""
    return {f'{FIELD}.{entry["body"]["event_id"]}': entry for entry in entries}


def new_document_fields(*entries):
    """The outbox part of a document being inserted."""
    return {FIELD: {entry["body"]["event_id"]: entry for entry in entries}, COUNT: len(entries)}


def update_with_events(update, *entries):
    """Add ``entries`` to a Mongo update document (``$set`` + ``$inc``)."""
    update = {op: dict(fields) for op, fields in update.items()}
    update.setdefault("$set", {}).update(queue_fields(*entries))
    update.setdefault("$inc", {})[COUNT] = len(entries)
    return update


class Outbox:
    def __init__(self, db, amqp_uri):
        self.db = db
        self.publisher = Publisher(amqp_uri, serializer="json")
        #: event type -> function(body) -> body, applied at publish time: lets a service add
        #: secrets (an invite's accept link) that must never be stored in the database.
        self.enrichers = {}

    def publish_entry(self, entry):
        """Publish one entry with its envelope (``common.envelope``): every event of every service
        leaves through here."""
        body = entry["body"]
        enrich = self.enrichers.get(entry["type"])
        if enrich is not None:
            body = enrich(dict(body))
        self.publisher.publish(body, exchange=event_exchange(entry["source"]),
                               routing_key=entry["type"], mandatory=False,
                               **envelope(entry["source"], entry["type"], body, entry.get("request_id")))

    def publish_written(self, collection, doc_id, entries, delete_after=False):
        """Publish the ``entries`` the caller has just written into a document -- a new one or an
        update of an existing one; it holds them in memory -- then clear exactly those, in one
        update: no read, one write for any number of events. ``delete_after``: the write marked the
        document ``_delete_after_publish``; it is deleted once nothing is pending in it.

        Only the writer's own events. Other events pending in the same document belong to writers
        that are publishing them right now (or to the sweep, after a crash): when every write of a
        document published everything it held, n concurrent writers of one document (renames of
        one organization) published each other's events, O(n²) publishes and subscriber work that
        cut rename throughput as concurrency rose.

        Best effort: the write stands and its events wait in the document, so a broker that fails
        now (a node dying mid-publish) leaves them to the sweep instead of failing the caller's
        answer."""
        if not entries:
            return 0
        try:
            for entry in sorted(entries, key=lambda item: item["body"]["occurred_at"]):
                self.publish_entry(entry)
        except (KombuError, AMQPError, OSError) as error:
            log.warning("events of %s %s left for the sweep: %r", collection, doc_id, error)
            return 0
        self._clear(collection, doc_id, [f'{FIELD}.{entry["body"]["event_id"]}' for entry in entries])
        if delete_after:
            self.db[collection].delete_one({"_id": doc_id, COUNT: {"$lte": 0}, DELETE_AFTER: True})
        return len(entries)

    def publish_inserted(self, collection, docs, published=None):
        """Publish the events of documents the caller has just inserted -- in the given order, each
        document's own in the order they occurred -- then clear them (a group commit inserted many
        documents with one command: the usage ledger's appends).

        Only for documents that hold nothing but the events their insert queued and are never
        updated afterwards (a ledger entry): the clear unsets the whole outbox and zeroes the
        counter, guarded by ``_outbox_n > 0``, so the sweep clearing the same document first (it
        publishes only entries older than its grace) leaves nothing to count off twice. One update
        per document, by ``_id``: on the embedded FerretDB an update of several documents at once
        costs more than the single ones (an ``$in`` of ids is a collection scan, a shared page key
        decodes the whole page: measured ~11 ms of FerretDB CPU against ~1.4 ms for each single
        update), and a bulk of single updates no less than sending them one by one.

        ``published()`` runs after the publishes and before the clears (the callers waiting for
        their events need not wait for the clears too). Best effort like :meth:`publish_written`: a broker
        failure leaves the events to the sweep; returns how many went out."""
        docs = [doc for doc in docs if doc.get(FIELD)]
        try:
            for doc in docs:
                for entry in sorted(doc[FIELD].values(), key=lambda item: item["body"]["occurred_at"]):
                    self.publish_entry(entry)
        except (KombuError, AMQPError, OSError) as error:
            log.warning("events of %d %s documents left for the sweep: %r", len(docs), collection, error)
            return 0
        finally:
            if published is not None:
                published()
        for doc in docs:
            self.db[collection].update_one({"_id": doc["_id"], COUNT: {"$gt": 0}},
                                           {"$unset": {FIELD: ""}, "$set": {COUNT: 0}})
        return sum(len(doc[FIELD]) for doc in docs)

    def _clear(self, collection, doc_id, keys):
        """Unset published entries and count them off, each only while it is still there: the sweep
        may have published and cleared one meanwhile, and the counter must not drop twice for it.
        One update for all of them; key by key only if that found some gone."""
        done = self.db[collection].update_one(
            dict({key: {"$exists": True} for key in keys}, _id=doc_id),
            {"$unset": {key: "" for key in keys}, "$inc": {COUNT: -len(keys)}})
        if done.matched_count == 0 and len(keys) > 1:
            for key in keys:
                self.db[collection].update_one({"_id": doc_id, key: {"$exists": True}},
                                               {"$unset": {key: ""}, "$inc": {COUNT: -1}})

    def insert_batch(self, collection, entries):
        """Queue many events in one new document of their own (one insert); returns its id.

        For a batch of documents (100 invites) the usual way -- each event inside the document it
        announces, published and unset one by one -- costs an update per document, and on FerretDB
        an update of 100 documents takes seconds. Write this batch document *before* the documents
        it announces and :meth:`publish_batch` after them: if the process dies in between, the
        sweep publishes the batch (``DELETE_AFTER`` then removes it), so an announcement can only
        be early, for documents whose write then failed, never missing for documents written."""
        batch_id = "batch-" + uuid.uuid4().hex
        self.db[collection].insert_one(dict(new_document_fields(*entries), _id=batch_id, **{DELETE_AFTER: True}))
        return batch_id

    def publish_batch(self, collection, batch_id, entries):
        """Publish what :meth:`insert_batch` queued (from memory), then drop the batch document."""
        for entry in entries:
            self.publish_entry(entry)
        self.db[collection].delete_one({"_id": batch_id})
        return len(entries)

    def _flush_doc(self, collection, doc):
        published = 0
        for event_id, entry in sorted((doc.get(FIELD) or {}).items(),
                                      key=lambda item: item[1]["body"]["occurred_at"]):
            self.publish_entry(entry)
            self._clear(collection, doc["_id"], [f"{FIELD}.{event_id}"])
            published += 1
        if doc.get(DELETE_AFTER):
            self.db[collection].delete_one({"_id": doc["_id"], COUNT: {"$lte": 0}, DELETE_AFTER: True})
        return published

    def sweep(self, collections, grace_seconds=5):
        """Publish events left behind by a crash; skips entries younger than ``grace_seconds``."""
        cutoff = utcnow() - timedelta(seconds=grace_seconds)
        published = 0
        for collection in collections:
            query = {"$or": [{COUNT: {"$gt": 0}}, {DELETE_AFTER: True}]}
            # read the batch first: a cursor held open across writes pins a database connection
            for doc in list(self.db[collection].find(query, PROJECTION).limit(1000)):
                entries = doc.get(FIELD) or {}
                if any(entry["queued_at"] > cutoff for entry in entries.values()):
                    continue  # its writer is probably publishing right now
                try:
                    published += self._flush_doc(collection, doc)
                except Exception:
                    log.exception("outbox sweep failed for %s/%s", collection, doc["_id"])
        return published
