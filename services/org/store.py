"""Mongo access for organizations; the overview read model lives on the organization document.

Every write here ends in :meth:`OrgStore._changed`, which keeps the in-memory organization cache of
every org process honest (see ``services/org/cache.py``).
"""
import logging

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from common import outbox
from common.batching import READ_MODEL_LINGER, NewestWins
from common.mongo import Store
from services.org.cache import CACHE_EXCHANGE, OrganizationCache, invalidation_listener

log = logging.getLogger(__name__)


class OrgStore(Store):
    INDEXES = {
        "organizations": [IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
                          # the token-less deletion status (GET /deletions/{receipt}) finds it by hash
                          IndexModel([("deletion.receipt_hash", ASCENDING)])],
    }
    OUTBOX_COLLECTIONS = ("organizations",)

    cache = None
    _listener = None

    def __init__(self, db, outbox=None):
        super().__init__(db, outbox)
        self._read_model = NewestWins(self._write_read_model, linger=READ_MODEL_LINGER)

    def configure(self, settings):
        self.cache = OrganizationCache(max_age=settings.org_cache_seconds)
        self._listener = invalidation_listener(settings.amqp_uri, self.cache)

    def start(self):
        if self._listener is not None:
            self._listener.start()

    def stop(self):
        if self._listener is not None:
            self._listener.stop()

    def _changed(self, org_id):
        """Drop this process's copy, then tell every other org process to drop theirs."""
        if self.cache is None:
            return
        self.cache.invalidate(org_id)
        try:
            self.outbox.publisher.publish({"organization_id": org_id}, exchange=CACHE_EXCHANGE, routing_key="",
                                          delivery_mode=1)  # declared by the topology, not by us
        except Exception:  # the write stands; other replicas' copies expire after ORG_CACHE_SECONDS
            log.warning("could not broadcast the change of organization %s", org_id, exc_info=True)

    @property
    def organizations(self):
        return self.db["organizations"]

    def insert_organization(self, doc, *events):
        """Insert; returns False if an organization with that id already exists."""
        try:
            self.organizations.insert_one(dict(doc, **outbox.new_document_fields(*events)))
        except DuplicateKeyError:
            return False
        self.outbox.publish_written("organizations", doc["_id"], events)
        return True

    def get_organization(self, org_id):
        return self.organizations.find_one({"_id": org_id}, {outbox.FIELD: 0, outbox.COUNT: 0})

    def organization_by_receipt(self, receipt_hash):
        return self.organizations.find_one({"deletion.receipt_hash": receipt_hash}, {outbox.FIELD: 0, outbox.COUNT: 0})

    def cached_organization(self, org_id):
        """For reads only (the overview, plan look-ups); never as the basis of a write."""
        if self.cache is None:
            return self.get_organization(org_id)
        doc, ticket = self.cache.get(org_id)
        if doc is None:
            doc = self.get_organization(org_id)
            if doc is not None:
                self.cache.put(org_id, doc, ticket)
        return doc

    def get_organizations(self, org_ids):
        return list(self.organizations.find({"_id": {"$in": list(org_ids)}}, {outbox.FIELD: 0, outbox.COUNT: 0}))

    def update_organization(self, org_id, query, update, *events):
        """Conditional update that queues ``events`` in the same write; returns the new document."""
        doc = outbox.without_outbox(self.organizations.find_one_and_update(
            dict(query, _id=org_id), outbox.update_with_events(update, *events) if events else update,
            return_document=ReturnDocument.AFTER))
        if doc is not None:
            self._changed(org_id)
        if doc is not None and events:
            self.outbox.publish_written("organizations", org_id, events)
        return doc

    def rename_active(self, org_id, name, at, *events):
        """The new name, if the organization is still active; the new document or None."""
        return self.update_organization(org_id, {"status": "active"}, {"$set": {"name": name, "updated_at": at}},
                                        *events)

    def change_active_plan(self, org_id, plan, history, at, *events):
        """The new plan with its history entry, if the organization is still active."""
        return self.update_organization(org_id, {"status": "active"},
                                        {"$set": {"plan": plan, "updated_at": at}, "$push": {"plan_history": history}},
                                        *events)

    def start_deletion(self, org_id, deletion, at, *events):
        """``active`` -> ``deleting`` with the deletion record; None if it was not active (a
        concurrent request won)."""
        return self.update_organization(org_id, {"status": "active"},
                                        {"$set": {"status": "deleting", "deletion": deletion, "updated_at": at}},
                                        *events)

    def claim_redrive(self, org_id, redrives_seen, at):
        """Claim one re-drive of a deletion for this replica: conditional on the re-drive count it
        read (``None``: never re-driven), so of several replicas one wins; None if lost."""
        return self.update_organization(
            org_id, {"status": "deleting",
                     "deletion.redrives": redrives_seen if redrives_seen is not None else {"$exists": False}},
            {"$set": {"deletion.redriven_at": at}, "$inc": {"deletion.redrives": 1}})

    def mark_service_purged(self, org_id, service, removed, at):
        """Record one service's purge report (idempotent); returns the document or None."""
        doc = outbox.without_outbox(self.organizations.find_one_and_update(
            {"_id": org_id, "status": "deleting"},
            {"$set": {f"deletion.services.{service}": "purged", f"deletion.removed.{service}": removed,
                      f"deletion.reported_at.{service}": at}},
            return_document=ReturnDocument.AFTER))
        if doc is not None:
            self._changed(org_id)
        return doc

    def replace_with_tombstone(self, org_id, tombstone, *events):
        """Swap the whole organization for its tombstone, in one write that also queues ``events``."""
        result = self.organizations.replace_one({"_id": org_id, "status": "deleting"},
                                                dict(tombstone, **outbox.new_document_fields(*events)))
        if result.modified_count:
            self._changed(org_id)
            self.outbox.publish_written("organizations", org_id, events)
        return bool(result.modified_count)

    def deletions_requested_before(self, cutoff):
        return list(self.organizations.find({"status": "deleting", "deletion.requested_at": {"$lt": cutoff}},
                                            {outbox.FIELD: 0, outbox.COUNT: 0}).limit(100))

    def apply_read_model(self, org_id, section, values, as_of):
        """Set one overview section unless a newer fact is already there (events may be reordered);
        concurrent calls share their writes (a burst of joins is one update, see ``NewestWins``).

        A tombstone is never touched: a late event must not put data back into a deleted organization."""
        self._read_model.submit(((org_id, section), dict(values), as_of))

    def _write_read_model(self, key, values, as_of):
        org_id, section = key
        result = self.organizations.update_one(
            {"_id": org_id, "status": {"$ne": "deleted"}, "$or": [{section + ".as_of": {"$lt": as_of}},
                                    {section + ".as_of": {"$exists": False}}]},
            {"$set": {f"{section}.{field}": value for field, value in dict(values, as_of=as_of).items()}})
        if result.modified_count:
            self._changed(org_id)
