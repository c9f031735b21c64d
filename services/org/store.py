"""Mongo access for organizations; the overview read model lives on the organization document."""
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from common import outbox
from common.mongo import Store


class OrgStore(Store):
    INDEXES = {
        "organizations": [IndexModel([("status", ASCENDING), ("created_at", ASCENDING)])],
    }
    OUTBOX_COLLECTIONS = ("organizations",)

    @property
    def organizations(self):
        return self.db["organizations"]

    def insert_organization(self, doc, *events):
        """Insert; returns False if an organization with that id already exists."""
        try:
            self.organizations.insert_one(dict(doc, **outbox.new_document_fields(*events)))
        except DuplicateKeyError:
            return False
        self.outbox.flush("organizations", doc["_id"])
        return True

    def get_organization(self, org_id):
        return self.organizations.find_one({"_id": org_id}, {outbox.FIELD: 0, outbox.COUNT: 0})

    def get_organizations(self, org_ids):
        return list(self.organizations.find({"_id": {"$in": list(org_ids)}}, {outbox.FIELD: 0, outbox.COUNT: 0}))

    def update_organization(self, org_id, query, update, *events):
        """Conditional update that queues ``events`` in the same write; returns the new document."""
        doc = outbox.without_outbox(self.organizations.find_one_and_update(
            dict(query, _id=org_id), outbox.update_with_events(update, *events) if events else update,
            return_document=ReturnDocument.AFTER))
        if doc is not None and events:
            self.outbox.flush("organizations", org_id)
        return doc

    def mark_service_purged(self, org_id, service, removed, at):
        """Record one service's purge report (idempotent); returns the document or None."""
        return outbox.without_outbox(self.organizations.find_one_and_update(
            {"_id": org_id, "status": "deleting"},
            {"$set": {"deletion.services.%s" % service: "purged", "deletion.removed.%s" % service: removed,
                      "deletion.reported_at.%s" % service: at}},
            return_document=ReturnDocument.AFTER))

    def replace_with_tombstone(self, org_id, tombstone, *events):
        """Swap the whole organization for its tombstone, in one write that also queues ``events``."""
        result = self.organizations.replace_one({"_id": org_id, "status": "deleting"},
                                                dict(tombstone, **outbox.new_document_fields(*events)))
        if result.modified_count:
            self.outbox.flush("organizations", org_id)
        return bool(result.modified_count)

    def deletions_requested_before(self, cutoff):
        return list(self.organizations.find({"status": "deleting", "deletion.requested_at": {"$lt": cutoff}},
                                            {outbox.FIELD: 0, outbox.COUNT: 0}).limit(100))

    def apply_read_model(self, org_id, section, values, as_of):
        """Set one overview section unless a newer fact is already there (events may be reordered).

        A tombstone is never touched: a late event must not put data back into a deleted organization."""
        return self.organizations.update_one(
            {"_id": org_id, "status": {"$ne": "deleted"}, "$or": [{section + ".as_of": {"$lt": as_of}},
                                    {section + ".as_of": {"$exists": False}}]},
            {"$set": {"%s.%s" % (section, key): value for key, value in dict(values, as_of=as_of).items()}})
