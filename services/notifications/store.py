"""Mongo access of the notifications service: its own copy of what it needs to address mail
(organizations, members), the per-organization settings and the mail outbox / delivery log.

Facts from events are applied "if newer" (an ``*_as_of`` stamp per fact) because events may come
late or twice; every mail is a ``deliveries`` document whose ``_id`` is its idempotency key.
"""
import base64
import hashlib
import logging
import uuid
from datetime import timedelta

from cryptography.fernet import Fernet

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from common.mongo import Store

log = logging.getLogger(__name__)


def mail_cipher(config):
    """Encrypts mail bodies that carry a secret (an invite's accept link) while they are stored.

    ``MAIL_SECRET_KEY`` (any string) is the key; without it the key is derived from the signing key
    file when this process can read it, else from a built-in constant (then the link is only
    obfuscated at rest -- set MAIL_SECRET_KEY in production)."""
    secret = config.get("MAIL_SECRET_KEY")
    if secret:
        material = str(secret).encode()
    else:
        try:
            with open(str(config.get("JWT_PRIVATE_KEY_FILE") or ""), "rb") as handle:
                material = handle.read()
        except OSError:
            log.warning("MAIL_SECRET_KEY is not set: invite links in queued mail are only obfuscated")
            material = b"orgplatform-default"
    key = hashlib.sha256(b"orgplatform-mail\x00" + material).digest()
    return Fernet(base64.urlsafe_b64encode(key))


class NotificationsStore(Store):
    INDEXES = {
        "organizations": [IndexModel([("reminder_due_at", ASCENDING)])],
        "members": [IndexModel([("org_id", ASCENDING), ("role", ASCENDING)])],
        "settings": [],
        "delivery_claims": [IndexModel([("claimed_at", ASCENDING)])],
        "deliveries": [
            IndexModel([("status", ASCENDING), ("next_attempt_at", ASCENDING)]),
            IndexModel([("org_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
        ],
    }

    def configure(self, config):
        self.cipher = mail_cipher(config)

    # -- organizations (this service's copy) ---------------------------------------------------
    def organization(self, org_id):
        return self.db.organizations.find_one({"_id": org_id})

    def set_if_newer(self, org_id, stamp, fields, as_of):
        """``$set`` ``fields`` on the org unless a newer fact under ``stamp`` is applied already.

        Returns the document as it was before (None if nothing was applied)."""
        key = stamp + "_as_of"
        try:
            before = self.db.organizations.find_one_and_update(
                {"_id": org_id, "$or": [{key: {"$lt": as_of}}, {key: {"$exists": False}}]},
                {"$set": dict(fields, **{key: as_of})}, upsert=True, return_document=ReturnDocument.BEFORE)
        except DuplicateKeyError:  # the org exists with a newer fact: the upsert could not match it
            return None
        return before if before is not None else {"_id": org_id}

    def set_fields(self, org_id, fields):
        self.db.organizations.update_one({"_id": org_id}, {"$set": fields})

    def decide_once(self, key, recipients):
        """The recipients first decided under ``key`` (a unique insert decides; later callers read it)."""
        try:
            self.db.mail_decisions.insert_one({"_id": key, "recipients": list(recipients)})
            return list(recipients)
        except DuplicateKeyError:
            return (self.db.mail_decisions.find_one({"_id": key}) or {}).get("recipients", [])

    def schedule_reminder(self, org_id, lead):
        """(Re)start the reminder schedule when the plan's ``paid_until`` changes (not otherwise):
        the first reminder is due ``lead`` before it."""
        doc = self.organization(org_id) or {}
        paid_until = (doc.get("plan") or {}).get("paid_until")
        self.db.organizations.update_one(
            {"_id": org_id, "plan.paid_until": paid_until, "reminder_for": {"$ne": paid_until}},
            {"$set": {"reminder_for": paid_until, "reminder_due_at": paid_until - lead if paid_until else None}})

    def reminders_due(self, now, limit=500):
        return list(self.db.organizations.find({"reminder_due_at": {"$ne": None, "$lte": now}})
                    .sort("reminder_due_at", ASCENDING).limit(limit))

    def advance_reminder(self, org_id, paid_until, due_at, next_due):
        """Move the schedule on, only from the state we read; True for the one caller that did."""
        result = self.db.organizations.update_one(
            {"_id": org_id, "reminder_for": paid_until, "reminder_due_at": due_at},
            {"$set": {"reminder_due_at": next_due}})
        return bool(result.modified_count)

    # -- members -------------------------------------------------------------------------------
    def put_member(self, org_id, user_id, fields, as_of):
        """Apply a membership fact if it is newer than what is known; True if applied."""
        try:
            self.db.members.update_one(
                {"_id": "%s:%s" % (org_id, user_id), "$or": [{"as_of": {"$lt": as_of}}, {"as_of": {"$exists": False}}]},
                {"$set": dict(fields, org_id=org_id, user_id=user_id, as_of=as_of)}, upsert=True)
        except DuplicateKeyError:
            return False
        return True

    def member(self, org_id, user_id):
        doc = self.db.members.find_one({"_id": "%s:%s" % (org_id, user_id)})
        return doc if doc and not doc.get("left") else None

    def admins(self, org_id):
        return [doc for doc in self.db.members.find({"org_id": org_id, "role": "admin"})
                if not doc.get("left")]

    # -- settings ------------------------------------------------------------------------------
    def settings(self, org_id):
        return self.db.settings.find_one({"_id": org_id})

    def put_settings(self, org_id, fields):
        return self.db.settings.find_one_and_update({"_id": org_id}, {"$set": fields}, upsert=True,
                                                    return_document=ReturnDocument.AFTER)

    # -- deliveries ----------------------------------------------------------------------------
    def insert_delivery(self, doc):
        """Record a queued mail; False if one with this idempotency key exists already."""
        try:
            self.db.deliveries.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def delivery(self, delivery_id):
        return self.db.deliveries.find_one({"_id": delivery_id})

    def due_delivery_ids(self, now, limit=50):
        query = {"status": "queued", "next_attempt_at": {"$lte": now},
                 "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]}
        return [doc["_id"] for doc in self.db.deliveries.find(query, {"_id": 1})
                .sort("next_attempt_at", ASCENDING).limit(limit)]

    def claim_delivery(self, delivery_id, now, lease_seconds):
        """Take a due, unleased delivery for one sender; returns it with its ``lease_id`` or None.

        The claim is the insert of a unique ``delivery_claims`` document named after the delivery,
        its attempt number and the lease period: inserts are the one write FerretDB makes atomic
        (two concurrent conditional updates or findAndModify calls can both "win" there). The
        period in the name lets a later period take over a claim whose sender crashed; the sender
        that won marks ``lease_until`` on the delivery right away, which a later claimer re-checks.
        """
        due = {"_id": delivery_id, "status": "queued", "next_attempt_at": {"$lte": now},
               "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]}
        doc = self.db.deliveries.find_one(due)
        if doc is None:
            return None
        period = int(now.timestamp() // lease_seconds)
        try:
            self.db.delivery_claims.insert_one({"_id": "%s#%d#%d" % (delivery_id, doc.get("attempts", 0), period),
                                                "claimed_at": now})
        except DuplicateKeyError:
            return None
        lease_id = uuid.uuid4().hex
        self.db.deliveries.update_one({"_id": delivery_id}, {"$set": {
            "lease_until": now + timedelta(seconds=lease_seconds), "lease_id": lease_id}})
        current = self.db.deliveries.find_one({"_id": delivery_id})
        if current is None or current.get("lease_id") != lease_id or current.get("attempts", 0) != doc.get(
                "attempts", 0) or current.get("status") != "queued":
            return None  # someone else got further meanwhile
        return current

    def forget_claims(self, before):
        return self.db.delivery_claims.delete_many({"claimed_at": {"$lt": before}}).deleted_count

    def finish_attempt(self, delivery_id, lease_id, fields, attempt):
        """Record one attempt's outcome, only if we still hold the lease; True if recorded."""
        result = self.db.deliveries.update_one(
            {"_id": delivery_id, "lease_id": lease_id, "status": "queued"},
            {"$set": dict(fields, lease_until=None, lease_id=None), "$push": {"attempt_log": attempt},
             "$inc": {"attempts": 1}})
        return bool(result.modified_count)

    def delivery_page(self, org_id, limit, after=None):
        """Newest first by (created_at, _id); ``after`` is the last (created_at, _id) seen."""
        query = {"org_id": org_id}
        if after is not None:
            created_at, delivery_id = after
            query["$or"] = [{"created_at": {"$lt": created_at}},
                            {"created_at": created_at, "_id": {"$lt": delivery_id}}]
        return list(self.db.deliveries.find(query, {"text": 0, "html": 0})
                    .sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit))
