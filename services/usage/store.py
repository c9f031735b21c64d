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

from common import outbox
from common.batching import READ_MODEL_LINGER, NewestWins
from common.mongo import Store

HIDE = {outbox.FIELD: 0, outbox.COUNT: 0}


class UsageStore(Store):
    INDEXES = {
        "organizations": [],
        "plans": [],
        "member_counts": [],
        "ledger": [IndexModel([("org_id", ASCENDING), ("seq", DESCENDING)], unique=True, name="org_seq")],
        "grant_expiries": [IndexModel([("expires_at", ASCENDING)])],
        "storage_reports": [IndexModel([("org_id", ASCENDING), ("seq", DESCENDING)], unique=True,
                                       name="org_seq")],
        "dataset_buckets": [IndexModel([("org_id", ASCENDING)])],
    }
    OUTBOX_COLLECTIONS = ("ledger", "storage_reports")

    def __init__(self, db, outbox=None):
        super().__init__(db, outbox)
        self._facts = NewestWins(self._write_fact, linger=READ_MODEL_LINGER)

    def configure(self, config):
        # fault injection for the crash-recovery test only: die right after the ledger insert
        self.crash_after_ledger_write = str(config.get("USAGE_FAULT_CRASH_AFTER_LEDGER") or "") in (
            "1", "true", "yes")
        self.storage_lease_seconds = float(config.get("USAGE_STORAGE_LEASE_SECONDS") or 60)

    # -- organizations (this service's copy, from events) -----------------------------------------
    def insert_organization(self, org_id, name, created_at):
        """False if the organization was purged meanwhile (then nothing of it is left here)."""
        self.db.organizations.update_one(
            {"_id": org_id}, {"$setOnInsert": {"name": name, "status": "active", "created_at": created_at}},
            upsert=True)
        return not self.take_back_if_purged(org_id, "organizations", org_id)

    def organization(self, org_id):
        return self.db.organizations.find_one({"_id": org_id})

    def set_status(self, org_id, status):
        self.db.organizations.update_one({"_id": org_id}, {"$set": {"status": status}})

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

    def scrub(self, org_id):
        """Delete whatever a write that raced the purge left of ``org_id`` (no report: the purge
        itself reports); returns the counts."""
        from services.usage import deletion  # the purge's collection lists
        return deletion.delete_everything(self, org_id)

    # -- credit ledger ---------------------------------------------------------------------------
    def ledger_head(self, org_id):
        for doc in self.db.ledger.find({"org_id": org_id}, HIDE).sort("seq", DESCENDING).limit(1):
            return doc
        return None

    def ledger_entry(self, entry_id):
        return self.db.ledger.find_one({"_id": entry_id}, HIDE)

    def insert_ledger_entry(self, entry, *events):
        """Append; False if the key was applied already or another writer took this ``seq``."""
        try:
            self.db.ledger.insert_one(dict(entry, **outbox.new_document_fields(*events)))
            return True
        except DuplicateKeyError:
            return False

    def ledger_page(self, org_id, limit, before_seq=None):
        query = {"org_id": org_id}
        if before_seq is not None:
            query["seq"] = {"$lt": before_seq}
        return list(self.db.ledger.find(query, HIDE).sort("seq", DESCENDING).limit(limit))

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
        for doc in self.db.storage_reports.find({"org_id": org_id}, HIDE).sort("seq", DESCENDING).limit(1):
            return doc
        return None

    def insert_storage_report(self, doc):
        try:
            self.db.storage_reports.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def finish_storage_report(self, report_id, fields, *events, before_publish=None):
        self.db.storage_reports.update_one({"_id": report_id}, outbox.update_with_events({"$set": fields},
                                                                                         *events))
        if before_publish is not None:
            before_publish()
        self.outbox.flush("storage_reports", report_id)

    def drop_storage_claim(self, report_id):
        """Give back a claim nothing was written under (its report was refused)."""
        self.db.storage_reports.delete_one({"_id": report_id, "status": "applying"})

    def storage_report(self, org_id, seq):
        return self.db.storage_reports.find_one({"org_id": org_id, "seq": seq}, HIDE)

    def stale_storage_claims(self, now, limit=100):
        return list(self.db.storage_reports.find({"status": "applying", "lease_until": {"$lte": now}}, HIDE)
                    .limit(limit))

    def bucket(self, org_id, index):
        return self.db.dataset_buckets.find_one({"_id": "%s:%02d" % (org_id, index)})

    def buckets(self, org_id):
        return self.db.dataset_buckets.find({"org_id": org_id})

    def put_bucket(self, org_id, index, datasets):
        bucket_id = "%s:%02d" % (org_id, index)
        if datasets:
            self.db.dataset_buckets.replace_one({"_id": bucket_id}, {"_id": bucket_id, "org_id": org_id,
                                                                     "datasets": datasets}, upsert=True)
        else:
            self.db.dataset_buckets.delete_one({"_id": bucket_id})
