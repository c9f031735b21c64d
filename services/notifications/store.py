"""Mongo access of the notifications service: its own copy of what it needs to address mail
(organizations, members), the per-organization settings and the mail outbox / delivery log.

Facts from events are applied "if newer" (an ``*_as_of`` stamp per fact) because events may come
late or twice; every mail is a ``deliveries`` document whose ``_id`` is its idempotency key.

The hot path (an event in, a mail out) is group-committed (``common.batching``): concurrent
handlers share one command per step -- one ``insert`` for all their delivery records, one
``insert`` for all their attempts, one ``find`` per organization for all their reads. Collections
that grow with every mail (deliveries, attempts, members) are only ever inserted into on that path
(see "deliveries" below for why).
"""
import logging
import re
import uuid
from datetime import timedelta

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from common import outbox, pages
from common.batching import GroupCommit, NewestWins, SharedReads
from common.mongo import Store, purge_delete

log = logging.getLogger(__name__)


class NotificationsStore(Store):
    #: settings changes are announced through the outbox (``notification_settings_changed``)
    OUTBOX_COLLECTIONS = ("settings",)
    INDEXES = {
        "organizations": [IndexModel([("reminder_due_at", ASCENDING)])],
        "members": [IndexModel([("org_id", ASCENDING), ("role", ASCENDING)])],
        "settings": [],
        "delivery_claims": [IndexModel([("claimed_at", ASCENDING)])],
        "delivery_counters": [],  # _id = organization: the delivery log's ordinals (common/pages.py)
        "deliveries": [IndexModel([("org_id", ASCENDING), ("ordinal", DESCENDING)]),
                       IndexModel([(pages.FIELD, ASCENDING)])],
        "delivery_attempts": [IndexModel([("org_id", ASCENDING), ("delivery_id", ASCENDING)]),
                              IndexModel([(pages.FIELD, ASCENDING)])],
        "mail_queue": [IndexModel([("due_at", ASCENDING)])],
    }

    def __init__(self, db, outbox=None):
        super().__init__(db, outbox)
        self._reads = SharedReads(lambda key: self.db[key[0]].find_one({"_id": key[1]}))
        self._members = GroupCommit(self._flush_members)
        self._facts = NewestWins(self._write_fact)
        self._records = GroupCommit(self._flush_records)
        self._outcomes = GroupCommit(self._flush_outcomes)

    def migrate(self):
        """Deliveries from before page keys get ordinals in creation order; their attempts the
        delivery's page key."""
        self.backfill_page_keys("deliveries", "deliveries", order_by="created_at", counters="delivery_counters")
        marker = "pages:delivery_attempts"
        if self.db.migrations.find_one({"_id": marker}) is None:
            keys = {}
            for attempt in self.db.delivery_attempts.find({pages.FIELD: {"$exists": False}}, {"delivery_id": 1}):
                if attempt["delivery_id"] not in keys:
                    delivery = self.db.deliveries.find_one({"_id": attempt["delivery_id"]}, {pages.FIELD: 1}) or {}
                    keys[attempt["delivery_id"]] = delivery.get(pages.FIELD)
                self.db.delivery_attempts.update_one({"_id": attempt["_id"]},
                                                     {"$set": {pages.FIELD: keys[attempt["delivery_id"]]}})
            self.db.migrations.update_one({"_id": marker}, {"$set": {"documents": len(keys)}}, upsert=True)

    # -- reads by _id, coalesced -----------------------------------------------------------------
    def _read(self, collection, doc_id):
        """``find_one({"_id": doc_id})``, shared with every concurrent caller asking for the same
        document (see ``SharedReads``)."""
        return self._reads.submit((collection, doc_id))

    # -- organizations (this service's copy) ---------------------------------------------------
    def organization(self, org_id):
        return self._read("organizations", org_id)

    def set_if_newer(self, org_id, stamp, fields, as_of):
        """``$set`` ``fields`` on the org unless a newer fact under ``stamp`` is applied already;
        concurrent calls share their writes (see ``NewestWins``)."""
        self._facts.submit(((org_id, stamp), dict(fields), as_of))

    def _write_fact(self, key, fields, as_of):
        org_id, stamp = key
        stamp_key = stamp + "_as_of"
        try:
            self.db.organizations.update_one(
                {"_id": org_id, "$or": [{stamp_key: {"$lt": as_of}}, {stamp_key: {"$exists": False}}]},
                {"$set": dict(fields, **{stamp_key: as_of})}, upsert=True)
        except DuplicateKeyError:  # the org exists with a newer fact: the upsert could not match it
            pass
        self.take_back_if_purged(org_id, "organizations", org_id)

    def mark_deleting(self, org_id):
        """Only a known organization is marked: nothing is created for it."""
        self.db.organizations.update_one({"_id": org_id}, {"$set": {"status": "deleting"}})

    def mark_purge_pending(self, org_id):
        """The purge waits for the confirmation mail; the dispatcher's timer finishes it."""
        self.db.organizations.update_one({"_id": org_id}, {"$set": {"purge_pending": True, "status": "deleting"}},
                                         upsert=True)

    def purge_pending_ids(self, limit=100):
        return [doc["_id"] for doc in self.db.organizations.find({"purge_pending": True}, {"_id": 1}).limit(limit)]

    def purge_organization(self, org_id):
        """Every document of the organization, by collection (``common.purge``'s delete step); also
        what a write racing the purge left (``deletion.scrub_if_purged``)."""
        prefix = {"_id": {"$regex": f"^{re.escape(org_id)}:"}}
        return {
            "deliveries": purge_delete(self.db.deliveries, "org_id", [org_id]),
            "delivery_attempts": purge_delete(self.db.delivery_attempts, "org_id", [org_id]),
            "mail_queue": purge_delete(self.db.mail_queue, "org_id", [org_id]),
            "members": purge_delete(self.db.members, "org_id", [org_id]),
            "settings": purge_delete(self.db.settings, "_id", [org_id]),
            "mail_decisions": self.db.mail_decisions.delete_many(prefix).deleted_count,
            # a retried mail's claims are named after its delivery, whose key may start with the org id
            "delivery_claims": self.db.delivery_claims.delete_many(prefix).deleted_count,
            "organizations": purge_delete(self.db.organizations, "_id", [org_id]),
            "delivery_counters": purge_delete(self.db.delivery_counters, "_id", [org_id]),
        }

    def deliveries_for_export(self, org_id):
        """The whole delivery log, newest first, without mail bodies (they may hold invite links)."""
        return list(self.db.deliveries.find({"org_id": org_id}, {"text": 0, "html": 0}).sort(
            [("created_at", DESCENDING), ("_id", DESCENDING)]))

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
        try:
            due = paid_until - lead if paid_until else None
        except OverflowError:  # earlier than year 1 + lead: long expired, so the "expired" mail is due now
            due = paid_until
        self.db.organizations.update_one(
            {"_id": org_id, "plan.paid_until": paid_until, "reminder_for": {"$ne": paid_until}},
            {"$set": {"reminder_for": paid_until, "reminder_due_at": due}})

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
        """Apply a membership fact if it is newer than what is known; True if applied.

        Concurrent calls are batched: a member not known yet (the usual case: someone joined) is
        one document of a single ``insert``; the others are conditional updates, one by one."""
        return self._members.submit((f"{org_id}:{user_id}", dict(fields, org_id=org_id, user_id=user_id,
                                                                        as_of=as_of)))

    def _flush_members(self, items):
        first = {}
        for index, (member_id, _) in enumerate(items):
            first.setdefault(member_id, index)
        fresh = [index for index in first.values()]
        inserted = set(fresh)
        try:
            self.db.members.insert_many([dict(items[index][1], _id=items[index][0]) for index in fresh],
                                        ordered=False)
        except BulkWriteError as error:
            for failure in error.details.get("writeErrors", []):
                if failure.get("code") != 11000:
                    raise
                inserted.discard(fresh[failure["index"]])
        results = []
        for index, (member_id, doc) in enumerate(items):
            if index in inserted:
                results.append(True)
                continue
            try:  # known already (or twice in this batch): only if newer
                result = self.db.members.update_one(
                    {"_id": member_id, "$or": [{"as_of": {"$lt": doc["as_of"]}}, {"as_of": {"$exists": False}}]},
                    {"$set": doc}, upsert=True)
                results.append(bool(result.modified_count or result.upserted_id))
            except DuplicateKeyError:
                results.append(False)
        return results

    def member(self, org_id, user_id):
        doc = self.db.members.find_one({"_id": f"{org_id}:{user_id}"})
        return doc if doc and not doc.get("left") else None

    def admins(self, org_id):
        return [doc for doc in self.db.members.find({"org_id": org_id, "role": "admin"})
                if not doc.get("left")]

    # -- settings ------------------------------------------------------------------------------
    def settings(self, org_id):
        return self._read("settings", org_id)

    def put_settings(self, org_id, fields, *events):
        """``events`` announce the change: queued in the same write, published right after it (or by
        the sweep, ``OUTBOX_COLLECTIONS``, after a crash)."""
        doc = self.db.settings.find_one_and_update({"_id": org_id}, outbox.update_with_events({"$set": fields}, *events)
                                                   if events else {"$set": fields}, upsert=True,
                                                   return_document=ReturnDocument.AFTER)
        if events:
            self.outbox.publish_written("settings", org_id, events)
        return outbox.without_outbox(doc)

    # -- deliveries ----------------------------------------------------------------------------
    # FerretDB (SQLite) reads, updates and deletes by scanning the collection, even by _id; only
    # inserts cost the same however large a collection grows. So the mail log only ever grows by
    # inserts:
    # - ``mail_queue``: one document per *unfinished* mail -- recipient, subject, bodies, lease
    #   (``lease_id``, ``due_at``), attempts so far. Its insert decides who owns the mail; it is
    #   deleted once the mail is final. Few documents, so updating and scanning it stays cheap.
    # - ``deliveries``: the log entry of a mail (no bodies, never updated), inserted right after
    #   its queue entry; a duplicate means the mail was recorded -- and finished -- before.
    # - ``delivery_attempts``: one document per attempt (``<delivery id>#<n>``), inserted after it;
    #   status, attempts, last error and sent_at of the log are derived from them.

    def record_delivery(self, entry, log):
        """Record a mail: its queue entry (leased to the caller, who sends it next), then its log
        entry. True if the mail is ours to send; False if it was recorded before (redelivered
        event, another replica). Batched with concurrent callers: one insert per collection."""
        return self._records.submit((entry, log))

    def _number(self, items):
        """Give the log entries of a batch their organization's next ordinals (one ``$inc`` per
        organization and batch; a duplicate that is not inserted leaves a gap, which pages skip).
        The counter has a collection of its own: mail may be recorded before this service has
        its copy of the organization (events come in any order)."""
        by_org = {}
        for entry, log_doc in items:
            by_org.setdefault(entry["org_id"], []).append((entry, log_doc))
        for org_id, group in by_org.items():
            if self.was_purged(org_id):  # the completion mail of a deletion: forgotten once sent, no page
                continue
            counter = self.db.delivery_counters.find_one_and_update(
                {"_id": org_id}, {"$inc": {"deliveries": len(group)}}, upsert=True,
                return_document=ReturnDocument.AFTER)
            for ordinal, (entry, log_doc) in enumerate(group, start=counter["deliveries"] - len(group) + 1):
                numbered = {"ordinal": ordinal, pages.FIELD: pages.key(org_id, ordinal)}
                entry.update(numbered)
                log_doc.update(numbered)

    def _flush_records(self, items):
        self._number(items)
        results = [True] * len(items)
        try:
            self.db.mail_queue.insert_many([entry for entry, _ in items], ordered=False)
        except BulkWriteError as error:  # unfinished and owned by someone else
            for index in _only_duplicates(error):
                results[index] = False
        ours = [index for index, ok in enumerate(results) if ok]
        if ours:
            stray = []
            try:
                self.db.deliveries.insert_many([items[index][1] for index in ours], ordered=False)
            except BulkWriteError as error:  # logged, and finished (its entry is gone): not ours either
                for position in _only_duplicates(error):
                    results[ours[position]] = False
                    stray.append(items[ours[position]][0]["_id"])
            if stray:
                self.db.mail_queue.delete_many({"_id": {"$in": stray}})
        return results

    def ensure_logged(self, log):
        try:
            self.db.deliveries.insert_one(log)
        except DuplicateKeyError:
            pass

    def due_queue(self, now, limit=50):
        """Queue entries due by ``now``, oldest first (a scan of unfinished mail only)."""
        return list(self.db.mail_queue.find({"due_at": {"$lte": now}}, {"_id": 1})
                    .sort("due_at", ASCENDING).limit(limit))

    def claim_delivery(self, delivery_id, now, lease_seconds):
        """Take a due, unleased queue entry for one sender; returns it with its new ``lease_id``
        or None.

        The claim is the insert of a unique ``delivery_claims`` document named after the delivery,
        its attempt number and the lease period: inserts are the one write FerretDB makes atomic
        (two concurrent conditional updates or findAndModify calls can both "win" there). The
        period in the name lets a later period take over a claim whose sender crashed; the sender
        that won moves ``due_at`` (the lease's end) on right away, which a later claimer re-checks.
        Only the dispatcher claims (retries, and mail a crash left leased); a fresh mail is
        recorded already leased to the handler that sends it.
        """
        entry = self.db.mail_queue.find_one({"_id": delivery_id, "due_at": {"$lte": now}})
        if entry is None:
            return None
        period = int(now.timestamp() // lease_seconds)
        try:
            self.db.delivery_claims.insert_one({"_id": f'{delivery_id}#{entry.get("attempts", 0)}#{period}',
                                                "claimed_at": now})
        except DuplicateKeyError:
            return None
        lease_id = uuid.uuid4().hex
        self.db.mail_queue.update_one({"_id": delivery_id}, {"$set": {
            "due_at": now + timedelta(seconds=lease_seconds), "lease_id": lease_id}})
        current = self.db.mail_queue.find_one({"_id": delivery_id})
        if current is None or current.get("lease_id") != lease_id or current.get("attempts", 0) != entry.get(
                "attempts", 0):
            return None  # someone else got further meanwhile
        return current

    def forget_claims(self, before):
        return self.db.delivery_claims.delete_many({"claimed_at": {"$lt": before}}).deleted_count

    def finish_attempt(self, entry, attempt):
        """Record attempt ``entry["attempts"] + 1`` (``attempt``: at, outcome, error, status after
        it, next_attempt_at); True if recorded, False if that attempt was recorded by someone else
        (our lease had run out). A final outcome removes the queue entry; a retry moves its
        ``due_at``. Batched with concurrent callers: one insert, one delete."""
        return self._outcomes.submit((entry, attempt))

    def _flush_outcomes(self, items):
        docs = []
        for entry, attempt in items:
            number = entry.get("attempts", 0) + 1
            docs.append(dict(attempt, _id=f'{entry["_id"]}#{number}', delivery_id=entry["_id"],
                             org_id=entry["org_id"], n=number, **{pages.FIELD: entry.get(pages.FIELD)}))
        recorded = [True] * len(items)
        try:
            self.db.delivery_attempts.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            for index in _only_duplicates(error):
                recorded[index] = False
        final = [entry["_id"] for (entry, attempt), ok in zip(items, recorded, strict=False)
                 if ok and attempt["status"] != "queued"]
        if final:
            self.db.mail_queue.delete_many({"_id": {"$in": final}})
        for (entry, attempt), ok in zip(items, recorded, strict=False):
            if ok and attempt["status"] == "queued":  # a retry later (rare): one update each
                self.db.mail_queue.update_one({"_id": entry["_id"]}, {"$set": {
                    "due_at": attempt["next_attempt_at"], "attempts": entry.get("attempts", 0) + 1,
                    "lease_id": None}})
        return recorded

    def deliveries_top(self, org_id):
        return (self.db.delivery_counters.find_one({"_id": org_id}) or {}).get("deliveries") or 0

    def delivery_page(self, org_id, limit, before=None):
        """Newest first; ``before`` is the last ordinal seen. Reads about one page key
        (``common/pages.py``) whatever the size of the organization's log."""
        top = self.deliveries_top(org_id)
        return pages.newest_first(lambda key: list(self.db.deliveries.find({pages.FIELD: key})), org_id, top, limit,
                                  before)

    def attempts_of(self, org_id, delivery_ids=None, page_keys=None):
        """Every attempt of these deliveries (of one organization; ``None``: all of them), by
        delivery id, in order. ``page_keys``: the page keys of those deliveries, read by equality
        (attempts carry their delivery's key). All of them is one plain query: ``$in`` over a whole
        delivery log costs documents x ids on FerretDB."""
        found = {delivery_id: [] for delivery_id in delivery_ids or ()}
        if delivery_ids is not None and page_keys:
            wanted = set(delivery_ids)
            for key in page_keys:
                for doc in self.db.delivery_attempts.find({pages.FIELD: key}):
                    if doc["delivery_id"] in wanted:
                        found[doc["delivery_id"]].append(doc)
            delivery_ids = []  # found
        query = {"org_id": org_id}
        if delivery_ids is not None:
            query["delivery_id"] = {"$in": list(delivery_ids)}
        if delivery_ids is None or delivery_ids:
            for doc in self.db.delivery_attempts.find(query):
                found.setdefault(doc["delivery_id"], []).append(doc)
        for attempts in found.values():
            attempts.sort(key=lambda doc: doc["n"])
        return found

    def forget_delivery(self, delivery_id):
        """Delete a final mail's log entry, attempts and claims (the completion mail of a deletion)."""
        self.db.deliveries.delete_one({"_id": delivery_id})
        self.db.delivery_attempts.delete_many({"delivery_id": delivery_id})
        self.db.delivery_claims.delete_many({"_id": {"$regex": f"^{re.escape(delivery_id)}#"}})

    def scrub(self, org_id):
        """Delete whatever a write that raced the purge left of ``org_id`` (the purge reported already)."""
        return self.purge_organization(org_id)

    def mail_queue_depth(self):
        """``(mail not final yet, of those the ones that failed at least once)``, for the metrics scrape."""
        return (self.db.mail_queue.count_documents({}),
                self.db.mail_queue.count_documents({"attempts": {"$gt": 0}}))

    def unfinished(self, org_id, kind):
        return self.db.mail_queue.count_documents({"org_id": org_id, "kind": kind}, limit=1) > 0

    def forget_person(self, user_id, email):
        """An account was deleted: its member copies in every organization go, and so does the log of
        mail sent to its address (with attempts and claims). Mail still queued stays: an invitation
        to that address from an organization is not the deleted account's."""
        removed = self.db.members.delete_many({"user_id": user_id}).deleted_count
        sent = [doc["_id"] for doc in self.db.deliveries.find({"to": email}, {"_id": 1})
                if not self.db.mail_queue.find_one({"_id": doc["_id"]}, {"_id": 1})]
        for delivery_id in sent:
            self.forget_delivery(delivery_id)
        return removed + len(sent)


def _only_duplicates(error):
    """Indexes of the statements a bulk insert refused as duplicates; re-raise anything else."""
    indexes = []
    for failure in error.details.get("writeErrors", []):
        if failure.get("code") != 11000:
            raise error
        indexes.append(failure["index"])
    return indexes
