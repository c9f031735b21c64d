"""MongoDB access: one client per process, each service's indexes declared once at start-up.

A service's ``store.py`` defines a :class:`Store` subclass listing its indexes in ``INDEXES``;
``StoreProvider(ThatStore)`` connects, ensures the indexes and hands the same store
(pymongo clients are thread-safe) to every worker.
"""
import functools
import json
import threading
import time
from contextlib import contextmanager
from datetime import UTC, timedelta

import pymongo
from nameko.extensions import DependencyProvider
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from common import outbox, pages, tombstones
from common.batching import SharedReads
from common.events import utcnow
from common.outbox import Outbox
from common.settings_provider import settings_of

_clients = {}
_clients_lock = threading.Lock()


def get_client(url):
    """The process-wide client for ``url`` (pymongo pools connections internally)."""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = pymongo.MongoClient(url, tz_aware=True, serverSelectionTimeoutMS=5000,
                                         connectTimeoutMS=5000, appname="orgplatform")
            _clients[url] = client
        return client


def is_ferretdb(db):
    """FerretDB answers ``buildInfo`` with ``ferretdbVersion``. It pushes down no index but ``_id``,
    so a query that MongoDB answers from an index is a scan there: a few hot paths choose by it."""
    return _server_is_ferretdb(db.client)


@functools.cache
def _server_is_ferretdb(client):
    return "ferretdbVersion" in client.admin.command("buildInfo")


#: FerretDB binds every matched ``_id`` of one delete as an SQL parameter: SQLite refuses more than
#: 32,766, PostgreSQL's extended protocol more than 65,535, so a bigger ``delete_many`` fails on
#: either handler. Batches stay below both.
DELETE_BATCH = 25000
#: what FerretDB answers a delete of too many documents with (SQLite, PostgreSQL)
_TOO_MANY_PARAMETERS = ("too many SQL variables", "limited to 65535 parameters")


def delete_in_batches(collection, query, batch=DELETE_BATCH):
    """``delete_many(query)`` that also works when FerretDB refuses it for its size; returns the count.

    Tries the one delete first (the usual case). If FerretDB refuses it, reads the matching ids once
    and deletes them in ``_id`` ranges of ``batch``: on FerretDB, where every query scans the
    collection, that is ``2 + n / batch`` scans in all."""
    try:
        return collection.delete_many(query).deleted_count
    except OperationFailure as error:
        if not any(message in str(error) for message in _TOO_MANY_PARAMETERS):
            raise
    ranges, count = [], 0  # (first, last) _id of each batch; the ids themselves are not kept
    for doc in collection.find(query, {"_id": 1}).sort("_id", pymongo.ASCENDING).batch_size(5000):
        if count % batch == 0:
            ranges.append([doc["_id"], doc["_id"]])
        ranges[-1][1] = doc["_id"]
        count += 1
    removed = 0
    for first, last in ranges:
        removed += collection.delete_many({"$and": [query, {"_id": {"$gte": first, "$lte": last}}]}).deleted_count
    return removed


#: a purge's delete carries its filter in this comment: the embedded FerretDB's front runs it as one
#: SQL statement (``stack/ferretdb/purge.go``); every other server ignores the comment
PURGE_COMMENT = "orgplatform:purge:"
PURGE_CHUNK = 10000


def purge_delete(collection, field, values):
    """``delete_many({field: {"$in": values}})`` for a purge (string ids, a deleted organization's
    documents); returns the count. Why not a plain ``delete_many``: FerretDB decodes every matched
    document and binds each id as a parameter (a 100,000-entry ledger took ~10 s of CPU and was
    refused without batches), while its front deletes them in PostgreSQL at once. Values go in
    chunks; a server that refuses a delete for its size gets batches (``delete_in_batches``)."""
    values = list(values)
    removed = 0
    for start in range(0, len(values), PURGE_CHUNK):
        chunk = values[start:start + PURGE_CHUNK]
        query = {field: chunk[0]} if len(chunk) == 1 else {field: {"$in": chunk}}
        comment = PURGE_COMMENT + json.dumps({"field": field, "values": chunk})
        try:
            removed += collection.delete_many(query, comment=comment).deleted_count
        except OperationFailure as error:
            if not any(message in str(error) for message in _TOO_MANY_PARAMETERS):
                raise
            removed += delete_in_batches(collection, query)
    return removed


class Store:
    """Base for a service's Mongo access; subclasses declare ``INDEXES = {collection: [IndexModel]}``
    and ``OUTBOX_COLLECTIONS``, the collections whose documents may carry pending events."""

    INDEXES = {}
    OUTBOX_COLLECTIONS = ()

    def __init__(self, db, outbox=None):
        self.db = db
        self.outbox = outbox
        self._purged = SharedReads(self._read_purged)

    def was_purged(self, org_id):
        """Whether the organization was purged here (a late write for it must be refused); a burst
        of events for one organization asks the database once."""
        return org_id is not None and self._purged.submit(org_id)

    def _read_purged(self, org_id):
        return self.db[tombstones.COLLECTION].find_one({"_id": tombstones.digest(org_id)}, {"_id": 1}) is not None

    def remember_purged(self, org_id):
        """Record the organization's tombstone (its digest only); step 1 of ``common.purge``."""
        self.db[tombstones.COLLECTION].update_one({"_id": tombstones.digest(org_id)},
                                                  {"$setOnInsert": {"purged_at": utcnow()}}, upsert=True)

    @contextmanager
    def purge_lease(self, org_id, seconds=900):
        """Yields True for the one purge of an organization allowed to run now in this service.

        The lease (keyed by the digest, so no id is left behind) ends with the purge, or after
        ``seconds`` if the process died, so a later request purges again."""
        key, now = tombstones.digest(org_id), utcnow()
        leases = self.db[tombstones.LEASES]
        try:
            leases.insert_one({"_id": key, "until": now + timedelta(seconds=seconds)})
        except DuplicateKeyError:
            taken = leases.find_one_and_update({"_id": key, "until": {"$lt": now}},
                                               {"$set": {"until": now + timedelta(seconds=seconds)}})
            if taken is None:
                yield False
                return
        try:
            yield True
        finally:
            leases.delete_one({"_id": key})

    def purge_organization(self, org_id):
        """Step 3 of ``common.purge``: every document this service holds of the organization;
        returns counts per collection. Each service's store defines it."""
        raise NotImplementedError

    def outbox_backlog(self, limit=1000):
        """``(documents holding unpublished events, the oldest such event's queued_at or None)``,
        for the metrics scrape; at most ``limit`` documents read per collection."""
        pending, oldest = 0, None
        for collection in self.OUTBOX_COLLECTIONS:
            for doc in self.db[collection].find({outbox.COUNT: {"$gt": 0}}, {outbox.FIELD: 1}).limit(limit):
                pending += 1
                for entry in (doc.get(outbox.FIELD) or {}).values():
                    queued = entry.get("queued_at")
                    if queued is not None:
                        queued = queued if queued.tzinfo else queued.replace(tzinfo=UTC)
                        oldest = queued if oldest is None else min(oldest, queued)
        return pending, oldest

    def insert_in_order(self, collection, docs):
        """Insert ``docs`` with one ordered command and return how many went in: it stops at the
        first duplicate key (a chain's next position another writer took, or an entry already
        there), so nothing after that one lands. Any other error raises."""
        try:
            self.db[collection].insert_many(docs, ordered=True)
        except BulkWriteError as error:
            details = error.details or {}
            if any(failure.get("code") != 11000 for failure in details.get("writeErrors") or ()):
                raise
            return details.get("nInserted", 0)
        return len(docs)

    def insert_chain_run(self, collection, docs, tops, top_field):
        """Append consecutive entries of one organization's chain (``seq`` n + 1, n + 2, ...; each
        with its page key) with one ordered insert; returns how many went in, a prefix up to the
        first whose ``seq`` or ``_id`` is taken (:meth:`insert_in_order`).

        The chain's top page (``top_field`` of the organization's document in ``tops``) moves up
        (``$max``) before the insert, so a reader never misses a written entry; at most
        ``pages.PAGE`` entries, so they touch at most two pages and an insert that stops short
        leaves the head in the top page or the one below, where a head read looks."""
        if not docs:
            return 0
        if len(docs) > pages.PAGE:
            raise ValueError(f"at most {pages.PAGE} entries per insert")
        starts = [doc["seq"] for doc in docs if pages.starts_page(doc["seq"])]
        if starts:
            self.db[tops].update_one({"_id": docs[0]["org_id"]}, {"$max": {top_field: pages.number(max(starts))}})
        return self.insert_in_order(collection, docs)

    def take_back_if_purged(self, org_id, collection, doc_id):
        """After an upsert for ``org_id`` that checked ``was_purged`` first: a purge that ran in
        between (it remembers the organization, then deletes) may have missed the new document, so
        the writer deletes it itself. True if it did."""
        if not self.was_purged(org_id):
            return False
        self.db[collection].delete_one({"_id": doc_id})
        return True

    def backfill_page_keys(self, collection, top_field, ordinal="ordinal", order_by=None, counters="organizations"):
        """Give page keys (``common/pages.py``) to documents written before there were any; once
        per database (a ``migrations`` marker), idempotent if replicas starting together both run it.

        Chains (``order_by`` None) number their documents already (``ordinal`` is ``seq``) and keep
        the top *page* in ``organizations.<top_field>``; counted lists get ordinals in ``order_by``
        order after the organization's current counter (``<counters>.<top_field>``), which then
        holds the highest ordinal."""
        marker = f"pages:{collection}"
        if self.db.migrations.find_one({"_id": marker}) is not None:
            return 0
        projection = {"org_id": 1, ordinal: 1}
        if order_by:
            projection[order_by] = 1
        by_org = {}
        for doc in self.db[collection].find({pages.FIELD: {"$exists": False}}, projection):
            if doc.get("org_id") is not None:
                by_org.setdefault(doc["org_id"], []).append(doc)
        for org_id, docs in by_org.items():
            if order_by is None:
                for doc in docs:
                    self.db[collection].update_one({"_id": doc["_id"]}, {"$set": {
                        pages.FIELD: pages.key(org_id, doc[ordinal])}})
                top = pages.number(max(doc[ordinal] for doc in docs))
            else:
                first = ((self.db[counters].find_one({"_id": org_id}, {top_field: 1}) or {}).get(top_field) or 0) + 1
                docs.sort(key=lambda doc: (doc.get(order_by) is None, doc.get(order_by), doc["_id"]))
                for number, doc in enumerate(docs, start=first):
                    self.db[collection].update_one({"_id": doc["_id"]}, {"$set": {
                        ordinal: number, pages.FIELD: pages.key(org_id, number)}})
                top = first + len(docs) - 1
            # a counter collection of its own may not hold the organization yet; its copy must
            self.db[counters].update_one({"_id": org_id}, {"$max": {top_field: top}},
                                         upsert=counters != "organizations")
        self.db.migrations.update_one({"_id": marker}, {"$set": {"documents": sum(map(len, by_org.values()))}},
                                      upsert=True)
        return sum(map(len, by_org.values()))

    def migrate(self):
        """Hook: bring documents written by an older version into today's shape (after the indexes)."""

    def configure(self, settings):
        """Hook for a store that needs some of the service's settings (``common/settings.py``)."""

    def start(self):
        """Hook for a store that runs something in the background while the service runs."""

    def stop(self):
        """Counterpart of :meth:`start`."""

    def ensure_indexes(self):
        # One index per createIndexes command: FerretDB 1.24 panics when a multi-index request
        # names indexes that already exist (every restart would).
        for collection, indexes in self.INDEXES.items():
            for index in indexes:
                self.db[collection].create_indexes([index])
        # the outbox sweep runs every few seconds in every replica: it must not scan whole collections
        for collection in self.OUTBOX_COLLECTIONS:
            for field in (outbox.COUNT, outbox.DELETE_AFTER):
                self.db[collection].create_indexes([pymongo.IndexModel([(field, pymongo.ASCENDING)])])


class StoreProvider(DependencyProvider):
    """Injects the service's store; the store publishes its outbox through the service's broker."""

    def __init__(self, store_cls, startup_timeout=60):
        self.store_cls = store_cls
        self.startup_timeout = startup_timeout
        self.store = None

    def setup(self):
        settings = settings_of(self.container)
        db = get_client(settings.mongo_url)[(settings.mongo_db_prefix or "") + settings.mongo_database]
        outbox = Outbox(db, settings.amqp_uri)
        self.store = self.store_cls(db, outbox)
        self.store.configure(settings)
        deadline = time.monotonic() + self.startup_timeout
        while True:  # the database may still be starting when the service does
            try:
                self.store.ensure_indexes()
                self.store.migrate()
                return
            except PyMongoError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def start(self):
        self.store.start()

    def stop(self):
        self.store.stop()

    def get_dependency(self, worker_ctx):
        return self.store
