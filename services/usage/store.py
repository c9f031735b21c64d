"""Mongo access for the usage service: its copy of organizations, storage reports, the credit ledger.

Only single-document inserts arbitrate concurrency here (see docs/credits.md): the local
MongoDB-compatible server applies ``findAndModify``/``update`` as read-modify-write of the whole
document, so two concurrent conditional updates can both pass their filter. Unique indexes, on the
other hand, are enforced by the storage engine on every server, so

* ``ledger`` is a chain: unique ``(org_id, seq)`` makes appending entry ``n + 1`` a race exactly one
  writer wins, and ``_id`` is derived from the idempotency key, so a key is applied at most once;
* ``storage_reports`` is a chain of the same kind and serialises the reports of one organization.

Facts learnt from events live in one document per fact (``plans``, ``member_counts``) so that two
handlers running at once never overwrite each other's field.
"""
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from common import outbox, pages
from common.batching import READ_MODEL_LINGER, NewestWins
from common.mongo import Store, purge_delete

HIDE = {outbox.FIELD: 0, outbox.COUNT: 0}


class UsageStore(Store):
    INDEXES = {
        "organizations": [],
        "plans": [],
        "member_counts": [],
        "ledger": [IndexModel([("org_id", ASCENDING), ("seq", DESCENDING)], unique=True, name="org_seq"),
                   IndexModel([(pages.FIELD, ASCENDING)])],
        "grant_expiries": [IndexModel([("expires_at", ASCENDING)])],
        "storage_reports": [IndexModel([("org_id", ASCENDING), ("seq", DESCENDING)], unique=True,
                                       name="org_seq"), IndexModel([(pages.FIELD, ASCENDING)])],
        "dataset_buckets": [IndexModel([("org_id", ASCENDING)])],
    }
    OUTBOX_COLLECTIONS = ("ledger", "storage_reports")
    #: the per-organization chains, read a page key at a time (common/pages.py): collection ->
    #: the field of the organization's copy that holds the chain's top page
    CHAINS = {"ledger": "ledger_page", "storage_reports": "storage_page"}

    def __init__(self, db, outbox=None):
        super().__init__(db, outbox)
        self._facts = NewestWins(self._write_fact, linger=READ_MODEL_LINGER)

    def migrate(self):
        for collection, top_field in self.CHAINS.items():
            self.backfill_page_keys(collection, top_field, ordinal="seq")

    def configure(self, settings):
        self.storage_lease_seconds = settings.usage_storage_lease_seconds

    # -- organizations (this service's copy, from events) -----------------------------------------
    def insert_organization(self, org_id, name, created_at):
        """False if the organization was purged meanwhile (then nothing of it is left here)."""
        self.db.organizations.update_one(
            {"_id": org_id}, {"$setOnInsert": {"name": name, "status": "active", "created_at": created_at}},
            upsert=True)
        return not self.take_back_if_purged(org_id, "organizations", org_id)

    def organization(self, org_id):
        return self.db.organizations.find_one({"_id": org_id})

    def set_fact_if_newer(self, collection, org_id, values, as_of):
        """One document per fact; a fact older than the stored one is ignored (events may be reordered).
        Concurrent calls share their writes (a burst of joins is one update, see ``NewestWins``)."""
        self._facts.submit(((collection, org_id), dict(values), as_of))

    def _write_fact(self, key, values, as_of):
        collection, org_id = key
        try:
            self.db[collection].update_one(
                {"_id": org_id, "$or": [{"as_of": {"$lt": as_of}}, {"as_of": {"$exists": False}}]},
                {"$set": dict(values, as_of=as_of)}, upsert=True)
        except DuplicateKeyError:  # it exists with a newer as_of: the upsert's insert collided
            pass
        self.take_back_if_purged(org_id, collection, org_id)

    def fact(self, collection, org_id):
        return self.db[collection].find_one({"_id": org_id})

    #: what the purge deletes, by the field naming the organization
    PURGE_BY_ORG_FIELD = ("ledger", "grant_expiries", "storage_reports", "dataset_buckets")
    PURGE_BY_ID = ("organizations", "plans", "member_counts")

    def purge_organization(self, org_id):
        """Every document of the organization, by collection (``common.purge``'s delete step); also
        what a write that raced the purge left (``scrub``)."""
        removed = {name: purge_delete(self.db[name], "org_id", [org_id]) for name in self.PURGE_BY_ORG_FIELD}
        removed.update({name: purge_delete(self.db[name], "_id", [org_id]) for name in self.PURGE_BY_ID})
        return removed

    def scrub(self, org_id):
        """Delete whatever a write that raced the purge left of ``org_id`` (no report: the purge
        itself reports); returns the counts."""
        return self.purge_organization(org_id)

    # -- credit ledger ---------------------------------------------------------------------------
    def _chain_page(self, collection, key):
        return list(self.db[collection].find({pages.FIELD: key}, HIDE))

    def _chain_head(self, collection, org_id, organization=None):
        """The newest entry of a chain: in its top page, or -- when the writer that moved the top
        up has not inserted (yet, or ever) -- in the page below. Never more than two page reads.
        ``organization``: this service's copy, when the caller has just read it."""
        if organization is None:
            organization = self.db.organizations.find_one({"_id": org_id}, {self.CHAINS[collection]: 1}) or {}
        top = organization.get(self.CHAINS[collection]) or 0
        for page in (top, top - 1) if top > 0 else (0,):
            docs = self._chain_page(collection, pages.key_of_page(org_id, page))
            if docs:
                return max(docs, key=lambda doc: doc["seq"])
        return None

    def _chain_insert(self, collection, doc):
        """Insert entry ``seq`` of a chain (``insert_chain_run``); False if ``seq`` or ``_id`` is taken."""
        doc = dict(doc, **{pages.FIELD: pages.key(doc["org_id"], doc["seq"])})
        return self.insert_chain_run(collection, [doc], "organizations", self.CHAINS[collection]) == 1

    def ledger_head(self, org_id, organization=None):
        return self._chain_head("ledger", org_id, organization)

    def ledger_entry(self, entry_id):
        return self.db.ledger.find_one({"_id": entry_id}, HIDE)

    def insert_ledger_entries(self, entries):
        """Append consecutive entries ``(entry, [events])`` with one ordered insert
        (``insert_chain_run``); returns how many went in: a prefix, up to the first whose ``seq``
        another writer took or whose key (``_id``) was applied already."""
        docs = [dict(entry, **outbox.new_document_fields(*events), **{pages.FIELD: pages.key(entry["org_id"],
                                                                                              entry["seq"])})
                for entry, events in entries]
        return self.insert_chain_run("ledger", docs, "organizations", self.CHAINS["ledger"])

    def publish_ledger_entries(self, entries, published=None):
        """Publish the events of entries just inserted (``insert_ledger_entries``), then clear them
        (``Outbox.publish_inserted``); ``published()`` runs between the two."""
        docs = [dict(outbox.new_document_fields(*events), _id=entry["_id"]) for entry, events in entries if events]
        return self.outbox.publish_inserted("ledger", docs, published=published)

    def ledger_page(self, org_id, limit, before_seq=None, top_seq=0):
        """Newest first, below ``before_seq``; ``top_seq`` is the head's (read a page key at a time)."""
        return pages.newest_first(lambda key: self._chain_page("ledger", key), org_id, top_seq, limit,
                                  before_seq, field="seq")

    def ledger_entries(self, org_id):
        return list(self.db.ledger.find({"org_id": org_id}, HIDE).sort("seq", ASCENDING))

    def schedule_expiry(self, grant_id, org_id, expires_at, now):
        self.db.grant_expiries.update_one(
            {"_id": grant_id}, {"$setOnInsert": {"org_id": org_id, "expires_at": expires_at, "created_at": now}},
            upsert=True)

    def due_expiries(self, now, limit=100):
        return list(self.db.grant_expiries.find({"expires_at": {"$lte": now}}).sort("expires_at", ASCENDING)
                    .limit(limit))

    def drop_expiry(self, grant_id):
        self.db.grant_expiries.delete_one({"_id": grant_id})

    # -- storage ---------------------------------------------------------------------------------
    def storage_head(self, org_id):
        return self._chain_head("storage_reports", org_id)

    def insert_storage_report(self, doc):
        return self._chain_insert("storage_reports", doc)

    def finish_storage_report(self, report_id, fields, *events, before_publish=None):
        self.db.storage_reports.update_one({"_id": report_id}, outbox.update_with_events({"$set": fields},
                                                                                         *events))
        if before_publish is not None:
            before_publish()
        self.outbox.publish_written("storage_reports", report_id, events)

    def drop_storage_claim(self, report_id):
        """Give back a claim nothing was written under (its report was refused)."""
        self.db.storage_reports.delete_one({"_id": report_id, "status": "applying"})

    def storage_report(self, org_id, seq):
        return self.db.storage_reports.find_one({"org_id": org_id, "seq": seq}, HIDE)

    def stale_storage_claims(self, now, limit=100):
        return list(self.db.storage_reports.find({"status": "applying", "lease_until": {"$lte": now}}, HIDE)
                    .limit(limit))

    def bucket(self, org_id, index):
        return self.db.dataset_buckets.find_one({"_id": f"{org_id}:{index:02d}"})

    def buckets(self, org_id):
        return self.db.dataset_buckets.find({"org_id": org_id})

    def put_bucket(self, org_id, index, datasets):
        bucket_id = f"{org_id}:{index:02d}"
        if datasets:
            self.db.dataset_buckets.replace_one({"_id": bucket_id}, {"_id": bucket_id, "org_id": org_id,
                                                                     "datasets": datasets}, upsert=True)
        else:
            self.db.dataset_buckets.delete_one({"_id": bucket_id})
