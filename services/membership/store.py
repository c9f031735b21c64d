"""Mongo access for accounts, memberships, invites, sessions and the service's copy of organizations.

The ``organizations`` collection is this service's own record of each organization it serves:
name (fed by the org service's events), owner and the seat counter. The plan's user limit is asked
from the org service when someone joins (rare, and it must be current, not eventually current). The
owner lives only here (``owner_user_id``), so transferring ownership is one atomic write.
"""
import re
from concurrent.futures import ThreadPoolExecutor

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from common import outbox, pages
from common.errors import gone
from common.mongo import Store, is_ferretdb, purge_delete

LIVE = {outbox.DELETE_AFTER: {"$ne": True}}
HIDE = {outbox.FIELD: 0, outbox.COUNT: 0}


class MembershipStore(Store):
    INDEXES = {
        "accounts": [IndexModel([("email", ASCENDING)], unique=True),
                     # the purge of an organization: who is a superuser, whose last-used org it was
                     IndexModel([("is_superuser", ASCENDING)]), IndexModel([("last_org_id", ASCENDING)])],
        "memberships": [
            IndexModel([("org_id", ASCENDING), ("user_id", ASCENDING)], unique=True),
            IndexModel([("user_id", ASCENDING), ("joined_at", ASCENDING)]),
            IndexModel([("org_id", ASCENDING), ("ordinal", ASCENDING)]),
            IndexModel([(pages.FIELD, ASCENDING)]),
        ],
        "sessions": [
            IndexModel([("refresh_hash", ASCENDING)], unique=True),
            IndexModel([("user_id", ASCENDING), ("org_id", ASCENDING)]),
            IndexModel([("previous_hashes", ASCENDING)]),
        ],
        "invites": [
            IndexModel([("token_hash", ASCENDING)], unique=True),
            IndexModel([("org_id", ASCENDING), ("status", ASCENDING), ("created_at", DESCENDING)]),
            IndexModel([("org_id", ASCENDING), ("email", ASCENDING)]),
        ],
        "login_attempts": [IndexModel([("expires_at", ASCENDING)])],
        # Idempotency-Key records of POST .../invites, _id = org, inviter and key
        "invite_requests": [IndexModel([("expires_at", ASCENDING)]), IndexModel([("org_id", ASCENDING)])],
        "organizations": [],
        "outbox_batches": [],  # events of a batch of invites until they are published (Outbox.insert_batch)
    }
    OUTBOX_COLLECTIONS = ("accounts", "memberships", "sessions", "invites", "organizations", "outbox_batches")

    def migrate(self):
        # memberships from before page keys: ordinals in join order (``joined`` counts them)
        self.backfill_page_keys("memberships", "joined", order_by="joined_at")

    def _update_one_with_events(self, collection, query, update, events):
        result = self.db[collection].update_one(query, outbox.update_with_events(update, *events)
                                                if events else update)
        if result.modified_count and events:
            self.outbox.publish_written(collection, query["_id"], events,
                                        delete_after=bool(update.get("$set", {}).get(outbox.DELETE_AFTER)))
        return bool(result.modified_count)

    def _find_and_update(self, collection, query, update, events=(), upsert=False):
        doc = outbox.without_outbox(self.db[collection].find_one_and_update(
            query, outbox.update_with_events(update, *events) if events else update,
            return_document=ReturnDocument.AFTER, upsert=upsert))
        if doc is not None and events:
            self.outbox.publish_written(collection, doc["_id"], events, delete_after=bool(doc.get(outbox.DELETE_AFTER)))
        return doc

    # -- accounts ---------------------------------------------------------------------------
    def insert_account(self, doc):
        """False if the email is taken."""
        try:
            self.db.accounts.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def delete_account(self, user_id):
        """Take back an account that never got anywhere (a sign-up whose join failed)."""
        self.db.accounts.delete_one({"_id": user_id})

    def account_by_email(self, email):
        return self.db.accounts.find_one({"email": email}, HIDE)

    def account(self, user_id):
        return self.db.accounts.find_one({"_id": user_id}, HIDE)

    def accounts(self, user_ids):
        return {doc["_id"]: doc for doc in self.db.accounts.find({"_id": {"$in": list(user_ids)}}, HIDE)}

    def set_account(self, user_id, fields, *events):
        return self._update_one_with_events("accounts", {"_id": user_id}, {"$set": fields}, events)

    # -- organizations (this service's copy) --------------------------------------------------
    def insert_organization(self, org_id, name, owner_user_id, as_of):
        """Record a new organization with its owner counted as the first seat."""
        self.db.organizations.update_one(
            {"_id": org_id},
            {"$setOnInsert": {"name": name, "name_as_of": as_of, "owner_user_id": owner_user_id,
                              "member_count": 1, "joined": 0, "status": "active"}},
            upsert=True)
        # a late (retried) creation racing the organization's purge must not resurrect it here
        self.take_back_if_purged(org_id, "organizations", org_id)

    def organization(self, org_id):
        return self.db.organizations.find_one({"_id": org_id}, HIDE)

    def organizations(self, org_ids):
        return {doc["_id"]: doc for doc in self.db.organizations.find({"_id": {"$in": list(org_ids)}}, HIDE)}

    def set_if_newer(self, org_id, field, value, as_of):
        """Apply a fact from an event unless a newer one is already applied (events may come late)."""
        stamp = field + "_as_of"
        self.db.organizations.update_one(
            {"_id": org_id, "$or": [{stamp: {"$lt": as_of}}, {stamp: {"$exists": False}}]},
            {"$set": {field: value, stamp: as_of}})

    def claim_seat(self, org_id, included_users):
        """Take one seat unless the plan's limit is reached; returns the new member count or None."""
        query = {"_id": org_id, "status": "active"}
        if included_users is not None:
            query["member_count"] = {"$lt": included_users}
        doc = self.db.organizations.find_one_and_update(query, {"$inc": {"member_count": 1}},
                                                        return_document=ReturnDocument.AFTER)
        return doc["member_count"] if doc else None

    def release_seat(self, org_id):
        doc = self.db.organizations.find_one_and_update({"_id": org_id}, {"$inc": {"member_count": -1}},
                                                        return_document=ReturnDocument.AFTER)
        return doc["member_count"] if doc else 0

    def transfer_owner(self, org_id, from_user_id, to_user_id, *events):
        return self._find_and_update("organizations", {"_id": org_id, "owner_user_id": from_user_id},
                                     {"$set": {"owner_user_id": to_user_id}}, events)

    # -- memberships -------------------------------------------------------------------------
    def organization_gone(self, org_id):
        """Being deleted or purged here (a purge deletes this service's copy of the organization)."""
        organization = self.organization(org_id)
        return organization is None or organization.get("status") != "active"

    def _take_back_if_gone(self, collection, doc):
        """After inserting ``doc`` for a live organization and before publishing its events: if the
        organization started deleting meanwhile, the purge (which marks it ``deleting`` before it
        deletes) may have run before the insert -- the writer deletes its document itself, so no
        write outlives a purge, and answers 410."""
        if self.organization_gone(doc["org_id"]):
            self.db[collection].delete_one({"_id": doc["_id"]})
            raise gone()

    def _next_ordinal(self, org_id):
        """The next join number of the organization (``joined`` only grows: a member who leaves
        leaves a gap, which page reads skip). None if this service has no such organization."""
        doc = self.db.organizations.find_one_and_update({"_id": org_id}, {"$inc": {"joined": 1}},
                                                        return_document=ReturnDocument.AFTER)
        return doc["joined"] if doc else None

    def insert_membership(self, doc, *events):
        ordinal = self._next_ordinal(doc["org_id"])
        if ordinal is not None:
            doc = dict(doc, ordinal=ordinal, **{pages.FIELD: pages.key(doc["org_id"], ordinal)})
        try:
            self.db.memberships.insert_one(dict(doc, **outbox.new_document_fields(*events)))
        except DuplicateKeyError:
            return False
        self._take_back_if_gone("memberships", doc)
        self.outbox.publish_written("memberships", doc["_id"], events)
        return True

    def membership(self, org_id, user_id):
        return self.db.memberships.find_one(dict(LIVE, _id=f"{org_id}:{user_id}"), HIDE)

    def memberships_of(self, user_id):
        return list(self.db.memberships.find(dict(LIVE, user_id=user_id), HIDE).sort("joined_at", ASCENDING))

    def member_page(self, org_id, limit, after=None, search=None, organization=None):
        """Members in join order; ``after`` is the last ordinal seen. A page reads about one page
        key (``common/pages.py``); a search reads every member of the organization (a regex is
        pushed down nowhere) -- the one member read that grows with the organization."""
        if search:
            query = dict(LIVE, org_id=org_id, **{"$or": [{"name": {"$regex": search, "$options": "i"}},
                                                          {"email": {"$regex": search, "$options": "i"}}]})
            if after is not None:
                query["ordinal"] = {"$gt": after}
            return list(self.db.memberships.find(query, HIDE).sort("ordinal", ASCENDING).limit(limit))
        if organization is None:  # the caller's copy, when it has just read it, holds the counter
            organization = self.db.organizations.find_one({"_id": org_id}, {"joined": 1}) or {}
        top = organization.get("joined") or 0
        return pages.oldest_first(lambda key: list(self.db.memberships.find(dict(LIVE, **{pages.FIELD: key}), HIDE)),
                                  org_id, top, limit, after)

    @staticmethod
    def _membership_query(org_id, user_id, cutoff):
        query = dict(LIVE, _id=f"{org_id}:{user_id}")
        if cutoff is not None:  # compare-and-set: nobody changed the member since it was read
            query["tokens_not_before"] = cutoff
        return query

    def update_membership(self, org_id, user_id, fields, *events, cutoff=None):
        """The updated membership, or None if it is gone (or its cut-off is no longer ``cutoff``)."""
        return self._find_and_update("memberships", self._membership_query(org_id, user_id, cutoff),
                                     {"$set": fields}, events)

    def remove_membership(self, org_id, user_id, *events, cutoff=None):
        """Hide the membership now; the outbox deletes it once its events are published."""
        doc = self._find_and_update("memberships", self._membership_query(org_id, user_id, cutoff),
                                    {"$set": {outbox.DELETE_AFTER: True}}, events)
        return doc is not None

    # -- invites -----------------------------------------------------------------------------
    def insert_invite(self, doc, *events):
        self.db.invites.insert_one(dict(doc, **outbox.new_document_fields(*events)))
        self._take_back_if_gone("invites", doc)
        self.outbox.publish_written("invites", doc["_id"], events)

    def insert_invites(self, docs_and_events):
        """Many invites in one insert, their ``invite_created`` events queued in one batch document
        of the outbox (``Outbox.insert_batch``): a batch of 100 costs three writes, not 300."""
        if not docs_and_events:
            return
        entries = [entry for _, events in docs_and_events for entry in events]
        batch = self.outbox.insert_batch("outbox_batches", entries)
        self.db.invites.insert_many([doc for doc, _ in docs_and_events], ordered=False)
        self.outbox.publish_batch("outbox_batches", batch, entries)

    def _of_org_with_emails(self, collection, query, emails, projection):
        """Documents of ``query`` whose ``email`` is one of ``emails``, in one read. MongoDB answers
        the ``$in`` from an index; FerretDB pushes down no ``$in`` (it would decode every document of
        the organization), so there each address is one equality read."""
        if is_ferretdb(self.db):  # one equality read per address: each decodes that address's few documents
            found = []
            for email in dict.fromkeys(emails):
                found.extend(self.db[collection].find(dict(query, email=email), projection))
            return found
        return list(self.db[collection].find(dict(query, email={"$in": list(emails)}), projection))

    def members_with_emails(self, org_id, emails):
        """The emails of ``emails`` that belong to a member of the organization (one read)."""
        return {doc["email"] for doc in self._of_org_with_emails("memberships", dict(LIVE, org_id=org_id), emails,
                                                                 {"email": 1})}

    def pending_invites_for(self, org_id, emails):
        """Pending invites of the organization for any of ``emails`` (one read), newest first."""
        found = self._of_org_with_emails("invites", {"org_id": org_id, "status": "pending"}, emails,
                                         HIDE)
        return sorted(found, key=lambda doc: doc["created_at"], reverse=True)

    def revoke_invites(self, invite_ids, fields):
        """Move still-pending invites to revoked in one update."""
        if not invite_ids:
            return 0
        return self.db.invites.update_many({"_id": {"$in": list(invite_ids)}, "status": "pending"},
                                           {"$set": fields}).modified_count

    # -- Idempotency-Key of invite batches ---------------------------------------------------
    def claim_invite_request(self, doc):
        """Insert the key's record (state ``running``); the existing record if the key is known."""
        try:
            self.db.invite_requests.insert_one(doc)
            return None
        except DuplicateKeyError:
            return self.db.invite_requests.find_one({"_id": doc["_id"]})

    def take_over_invite_request(self, request_id, claimed_before, claimed_at):
        """A ``running`` record whose claimant died (older than ``claimed_before``) is taken over."""
        return self.db.invite_requests.find_one_and_update(
            {"_id": request_id, "state": "running", "claimed_at": {"$lt": claimed_before}},
            {"$set": {"claimed_at": claimed_at}}, return_document=ReturnDocument.AFTER) is not None

    def finish_invite_request(self, request_id, response):
        self.db.invite_requests.update_one({"_id": request_id}, {"$set": {"state": "done", "response": response}})

    def release_invite_request(self, request_id):
        self.db.invite_requests.delete_one({"_id": request_id, "state": "running"})

    def invite_by_token_hash(self, token_hash):
        return self.db.invites.find_one({"token_hash": token_hash}, HIDE)

    def pending_invites(self, org_id, email=None):
        query = {"org_id": org_id, "status": "pending"}
        if email is not None:
            query["email"] = email
        return list(self.db.invites.find(query, HIDE).sort("created_at", DESCENDING))

    def invite(self, invite_id, org_id):
        return self.db.invites.find_one({"_id": invite_id, "org_id": org_id}, HIDE)

    def set_invite_status(self, invite_id, from_status, fields, org_id=None, events=()):
        """Move an invite out of ``from_status`` exactly once; returns the updated invite or None.
        ``events`` announce the move (queued in the same write, published after it)."""
        query = {"_id": invite_id, "status": from_status}
        if org_id is not None:
            query["org_id"] = org_id
        return self._find_and_update("invites", query, {"$set": fields}, events)

    # -- sessions ----------------------------------------------------------------------------
    def insert_session(self, doc):
        self.db.sessions.insert_one(doc)

    def session(self, session_id):
        return self.db.sessions.find_one({"_id": session_id}, HIDE)

    def live_session_by_refresh(self, refresh_hash, now):
        """The session whose *current* refresh hash this is, if neither revoked nor expired."""
        return self.db.sessions.find_one({"refresh_hash": refresh_hash, "revoked_at": None,
                                          "expires_at": {"$gt": now}}, HIDE)

    def rotate_refresh(self, refresh_hash, new_hash, now, expires_at, grace_until, sealed_pair):
        """Swap the refresh hash atomically; False if it is no longer a live session's current hash.

        The same write keeps the new pair sealed with the old token until ``grace_until`` (a
        concurrent refresh with the old token answers that pair, see ``sessions.refresh``)."""
        return self.db.sessions.update_one(
            {"refresh_hash": refresh_hash, "revoked_at": None, "expires_at": {"$gt": now}},
            {"$set": {"refresh_hash": new_hash, "expires_at": expires_at, "refreshed_at": now,
                      "grace": {"hash": refresh_hash, "until": grace_until, "sealed": sealed_pair}},
             "$push": {"previous_hashes": refresh_hash}}).modified_count == 1

    def session_with_previous_hash(self, refresh_hash):
        return self.db.sessions.find_one({"previous_hashes": refresh_hash}, HIDE)

    def revoke_session(self, session_id, now, *events):
        """Mark revoked (once) and queue ``events``; True if this call revoked it."""
        return self._update_one_with_events("sessions", {"_id": session_id, "revoked_at": None},
                                            {"$set": {"revoked_at": now}}, events)

    def revoke_sessions(self, user_id, now, org_id=None, all_orgs=False):
        """Revoke refresh tokens of a user in one organization (or everywhere)."""
        query = {"user_id": user_id, "revoked_at": None}
        if not all_orgs:
            query["org_id"] = org_id
        return self.db.sessions.update_many(query, {"$set": {"revoked_at": now}}).modified_count

    # -- deletion and export ---------------------------------------------------------------
    def set_organization_status(self, org_id, status, *events):
        return self._update_one_with_events("organizations", {"_id": org_id}, {"$set": {"status": status}}, events)

    def org_member_ids(self, org_id):
        return [doc["user_id"] for doc in self.db.memberships.find({"org_id": org_id}, {"user_id": 1})]

    def org_memberships(self, org_id):
        return list(self.db.memberships.find(dict(LIVE, org_id=org_id), HIDE).sort(
            [("joined_at", ASCENDING), ("user_id", ASCENDING)]))

    def members_elsewhere(self, user_ids, org_id, chunk=1000):
        """Those of ``user_ids`` with a membership in another organization.

        MongoDB: one indexed ``$in`` query per ``chunk`` users. FerretDB pushes down no ``$in``
        (it would decode every membership of every organization), so there each user is one
        equality read of their own few memberships, on a few threads."""
        user_ids = list(user_ids)
        if user_ids and is_ferretdb(self.db):
            def elsewhere(user_id):
                return self.db.memberships.find_one({"user_id": user_id, "org_id": {"$ne": org_id}},
                                                    {"_id": 1}) is not None
            found = set()
            with ThreadPoolExecutor(8) as pool:  # in slices: map() queues every call at once (10,000 futures)
                for start in range(0, len(user_ids), 256):
                    part = user_ids[start:start + 256]
                    found.update(user_id for user_id, hit in zip(part, pool.map(elsewhere, part), strict=False) if hit)
            return found
        found = set()
        for start in range(0, len(user_ids), chunk):
            found.update(doc["user_id"] for doc in self.db.memberships.find(
                {"user_id": {"$in": user_ids[start:start + chunk]}, "org_id": {"$ne": org_id}}, {"user_id": 1}))
        return found

    def superuser_ids(self):
        return {doc["_id"] for doc in self.db.accounts.find({"is_superuser": True}, {"_id": 1})}

    def purge_organization(self, org_id):
        """Delete everything held for the organization; returns counts per collection.

        Crash-safe order: accounts left without an organization go first, while the memberships
        that identify them still exist, so a re-run after a crash still finds every one of them."""
        member_ids = self.org_member_ids(org_id)
        keep = self.members_elsewhere(member_ids, org_id) | self.superuser_ids()
        orphans = [user_id for user_id in member_ids if user_id not in keep]
        removed = {"orphan_sessions": purge_delete(self.db.sessions, "user_id", orphans),
                   "accounts": purge_delete(self.db.accounts, "_id", orphans)}
        for name in ("invites", "invite_requests", "memberships", "sessions"):
            removed[name] = purge_delete(self.db[name], "org_id", [org_id])
        removed["sessions"] += removed.pop("orphan_sessions")
        removed["last_used_cleared"] = self.db.accounts.update_many(
            {"last_org_id": org_id}, {"$set": {"last_org_id": None}}).modified_count
        removed["organizations"] = purge_delete(self.db.organizations, "_id", [org_id])
        return removed

    def export_invites(self, org_id):
        return list(self.db.invites.find({"org_id": org_id}, {"token_hash": 0, outbox.FIELD: 0, outbox.COUNT: 0})
                    .sort("created_at", DESCENDING))

    # -- rate limiting (logins, sign-ups, invites) --------------------------------------------
    def count_attempt(self, key, window_start, expires_at, amount=1):
        """Add ``amount`` (negative: give it back) to the window's counter; returns the new count."""
        doc = self.db.login_attempts.find_one_and_update(
            {"_id": f"{key}@{window_start}"}, {"$inc": {"count": amount}, "$set": {"expires_at": expires_at}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return doc["count"]

    def forget_attempts(self, before):
        removed = self.db.login_attempts.delete_many({"expires_at": {"$lt": before}}).deleted_count
        return removed + self.db.invite_requests.delete_many({"expires_at": {"$lt": before}}).deleted_count

    # -- idempotency keys of sign-up and organization creation (services/membership/idempotency.py)
    def insert_idempotency_record(self, doc):
        """False if the key is already recorded."""
        try:
            self.db.idempotency_keys.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def idempotency_record(self, record_id):
        return self.db.idempotency_keys.find_one({"_id": record_id})

    def forget_idempotency_record(self, record_id, expires_at):
        self.db.idempotency_keys.delete_one({"_id": record_id, "expires_at": expires_at})

    def forget_idempotency_keys(self, before):
        return self.db.idempotency_keys.delete_many({"expires_at": {"$lt": before}}).deleted_count

    # -- account deletion (services/membership/accounts.py) -----------------------------------
    def forget_person(self, user_id, email):
        """Sessions, accepted invitations, idempotency records and login counters of an account
        being deleted."""
        self.db.sessions.delete_many({"user_id": user_id})
        self.db.invites.delete_many({"accepted_by": user_id})  # the invitations they accepted: history of them
        self.db.idempotency_keys.delete_many({"ids.account_id": user_id})
        self.db.login_attempts.delete_many({"_id": {"$regex": f"^email:{re.escape(email)}@"}})

    def delete_account_after_publish(self, user_id, *events):
        """Hide the account now (its email is free again once deleted); the outbox deletes it once
        ``events`` are published."""
        return self._update_one_with_events("accounts", {"_id": user_id}, {"$set": {outbox.DELETE_AFTER: True}},
                                            events)
