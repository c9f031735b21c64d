"""Mongo access for accounts, memberships, sessions and the local copy of organization names."""
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from common import outbox
from common.mongo import Store

LIVE = {outbox.DELETE_AFTER: {"$ne": True}}
HIDE = {outbox.FIELD: 0, outbox.COUNT: 0}


class MembershipStore(Store):
    INDEXES = {
        "accounts": [IndexModel([("email", ASCENDING)], unique=True)],
        "memberships": [
            IndexModel([("org_id", ASCENDING), ("user_id", ASCENDING)], unique=True),
            IndexModel([("user_id", ASCENDING), ("joined_at", ASCENDING)]),
            IndexModel([("org_id", ASCENDING), ("joined_at", ASCENDING)]),
        ],
        "sessions": [
            IndexModel([("refresh_hash", ASCENDING)], unique=True),
            IndexModel([("user_id", ASCENDING)]),
            IndexModel([("previous_hashes", ASCENDING)]),
        ],
        "organizations": [],
    }
    OUTBOX_COLLECTIONS = ("accounts", "memberships", "sessions")

    # accounts
    def insert_account(self, doc):
        """False if the email is taken."""
        try:
            self.db.accounts.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def account_by_email(self, email):
        return self.db.accounts.find_one({"email": email}, HIDE)

    def account(self, user_id):
        return self.db.accounts.find_one({"_id": user_id}, HIDE)

    def set_account(self, user_id, fields):
        self.db.accounts.update_one({"_id": user_id}, {"$set": fields})

    # memberships
    def insert_membership(self, doc, *events):
        try:
            self.db.memberships.insert_one(dict(doc, **outbox.new_document_fields(*events)))
        except DuplicateKeyError:
            return False
        self.outbox.flush("memberships", doc["_id"])
        return True

    def membership(self, org_id, user_id):
        return self.db.memberships.find_one(dict(LIVE, org_id=org_id, user_id=user_id), HIDE)

    def memberships_of(self, user_id):
        return list(self.db.memberships.find(dict(LIVE, user_id=user_id), HIDE).sort("joined_at", ASCENDING))

    # organizations (local copy of names, fed by the org service's events)
    def save_organization(self, org_id, name, as_of):
        self.db.organizations.update_one(
            {"_id": org_id}, {"$setOnInsert": {"name": name, "as_of": as_of}}, upsert=True)

    def rename_organization(self, org_id, name, as_of):
        """Apply a rename unless a newer one is already applied (events may be redelivered late)."""
        self.db.organizations.update_one(
            {"_id": org_id, "$or": [{"as_of": {"$lt": as_of}}, {"as_of": {"$exists": False}}]},
            {"$set": {"name": name, "as_of": as_of}})

    def organization_names(self, org_ids):
        return {doc["_id"]: doc["name"] for doc in self.db.organizations.find({"_id": {"$in": list(org_ids)}})}

    # sessions
    def insert_session(self, doc):
        self.db.sessions.insert_one(doc)

    def rotate_refresh(self, refresh_hash, new_hash, now, expires_at):
        """Swap the refresh hash atomically; None if it is not a live session's current hash."""
        return outbox.without_outbox(self.db.sessions.find_one_and_update(
            {"refresh_hash": refresh_hash, "revoked_at": None, "expires_at": {"$gt": now}},
            {"$set": {"refresh_hash": new_hash, "expires_at": expires_at, "refreshed_at": now},
             "$push": {"previous_hashes": refresh_hash}},
            return_document=ReturnDocument.AFTER))

    def session_with_previous_hash(self, refresh_hash):
        return self.db.sessions.find_one({"previous_hashes": refresh_hash}, HIDE)

    def revoke_session(self, session_id, now, *events):
        """Mark revoked (once) and queue ``events``; True if this call revoked it."""
        update = outbox.update_with_events({"$set": {"revoked_at": now}}, *events)
        result = self.db.sessions.update_one({"_id": session_id, "revoked_at": None}, update)
        if result.modified_count:
            self.outbox.flush("sessions", session_id)
        return bool(result.modified_count)
