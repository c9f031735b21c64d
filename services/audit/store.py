"""Mongo access for the audit service: each organization's log, a hash chain of entries.

* ``entries``: one document per entry, numbered per organization (``seq`` 1, 2, 3, ...) with a page
  key (``common/pages.py``), so every read of a log -- a page of the list, a verification, the
  retention's oldest entries -- is ``find({"pk": key})``: equality alone, which FerretDB pushes down,
  never a range or a sort over the organization's history. The unique ``(org_id, seq)`` index makes
  appending entry ``n + 1`` a race exactly one writer wins (as the usage ledger does); ``_id`` is
  derived from the event, so a redelivered event finds its entry instead of adding one.
  Entries also carry a coarse key (``bk``, ``BULK`` entries per key) for what reads a log whole (a
  verification, the export): 40 reads for 10,000 entries instead of 313. (1,024 a key read faster
  still, but left the process ~10% bigger for good: ``make bench``'s memory figure.)
* ``chains``: per organization the top page of its log (moved up before the first entry of a new
  page is written, so readers never miss an entry) and the moment of its first entry.
* ``retention``: per organization what retention removed: the first entry still kept and the hash
  the chain continues from (its *anchor*). A document of its own, so the retention's writes and the
  appends' ``$max`` on the top page never touch the same document (the local server updates a
  document as read-modify-write of the whole).
* ``retention_claims``: one insert per retention run decides which replica does it.
* ``people``: the values behind the tokens entries name people by (``people.py``): per organization
  and kind (``user``, ``email``) one document, found by ``key`` (unique), forgotten by ``value``.
"""
import uuid

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from common import pages
from common.batching import remember
from common.events import utcnow
from common.mongo import Store, purge_delete

#: entries per bulk key (``bk``)
BULK = 256
BULK_FIELD = "bk"


def keys(org_id, seq):
    """The page key and the bulk key of entry ``seq``."""
    return {pages.FIELD: pages.key(org_id, seq), BULK_FIELD: pages.key(org_id, seq, BULK)}


class AuditStore(Store):
    INDEXES = {
        "entries": [IndexModel([("org_id", ASCENDING), ("seq", DESCENDING)], unique=True, name="org_seq"),
                    IndexModel([(pages.FIELD, ASCENDING)]), IndexModel([(BULK_FIELD, ASCENDING)])],
        "chains": [],
        "retention": [],
        "retention_claims": [],
        "forgotten_people": [],
        "people": [IndexModel([("key", ASCENDING)], unique=True, name="key"), IndexModel([("value", ASCENDING)]),
                   IndexModel([("org_id", ASCENDING)])],
    }

    def __init__(self, db, outbox=None):
        super().__init__(db, outbox)
        self._tokens = {}

    # -- the chain of one organization ---------------------------------------------------------------
    def chain(self, org_id):
        return self.db.chains.find_one({"_id": org_id})

    def chains(self):
        """Every organization's chain document (one per organization: the retention's list)."""
        return list(self.db.chains.find({}))

    def start_chain(self, org_id, at):
        """The organization's chain document, created with its first entry's moment if missing."""
        try:
            self.db.chains.update_one({"_id": org_id}, {"$setOnInsert": {"top_page": 0, "first_at": at}},
                                      upsert=True)
        except DuplicateKeyError:  # a concurrent first append created it
            pass

    def page(self, key):
        return list(self.db.entries.find({pages.FIELD: key}))

    def head(self, org_id, chain=None):
        """The newest entry: in the top page, or in the one below when the writer that moved the top
        up has not inserted (yet, or ever). At most two page reads."""
        chain = chain if chain is not None else (self.chain(org_id) or {})
        top = chain.get("top_page") or 0
        for page in (top, top - 1) if top > 0 else (0,):
            docs = self.page(pages.key_of_page(org_id, page))
            if docs:
                return max(docs, key=lambda doc: doc["seq"])
        return None

    def entry_at(self, org_id, seq):
        """Entry ``seq`` of the organization (one page-key read)."""
        return next((doc for doc in self.page(pages.key(org_id, seq)) if doc["seq"] == seq), None)

    def entry(self, entry_id):
        return self.db.entries.find_one({"_id": entry_id})

    def insert_entries(self, docs):
        """Insert consecutive entries of one organization with one ordered insert
        (``insert_chain_run``); returns how many went in: a prefix, up to the first whose ``seq`` or
        ``_id`` is taken (the caller re-reads)."""
        return self.insert_chain_run("entries", [dict(doc, **keys(doc["org_id"], doc["seq"])) for doc in docs],
                                     "chains", "top_page")

    def bulks(self, org_id, first_seq, top_seq):
        """The kept entries from ``first_seq`` up to ``top_seq``, oldest first, one list per bulk key
        read (a caller may stop between two reads)."""
        for bulk in range(pages.number(first_seq, BULK), pages.number(top_seq, BULK) + 1 if top_seq >= 1 else 0):
            docs = [doc for doc in self.db.entries.find({BULK_FIELD: pages.key_of_page(org_id, bulk)})
                    if first_seq <= doc["seq"] <= top_seq]
            docs.sort(key=lambda doc: doc["seq"])
            yield docs

    def entries_oldest_first(self, org_id, first_seq, top_seq):
        return [doc for docs in self.bulks(org_id, first_seq, top_seq) for doc in docs]

    def entries_newest_first(self, org_id, top_seq, limit, before=None, keep=None, lowest=1):
        return pages.newest_first(self.page, org_id, top_seq, limit, before, field="seq", keep=keep, lowest=lowest)

    # -- retention -----------------------------------------------------------------------------------
    def retained(self, org_id):
        """``{"first_seq", "anchor", "first_at"}`` after a retention run, else None (all kept)."""
        return self.db.retention.find_one({"_id": org_id})

    def retire(self, org_id, first_seq, anchor, first_at, entry_ids):
        """Entries below ``first_seq`` leave the log: the new start is written first (a crash then
        leaves entries nobody reads, never a chain with a gap), then the entries go. Runs under a
        claim (:meth:`claim_run`), so no two replicas retire at once."""
        existing = self.retained(org_id)
        if existing is None or existing["first_seq"] < first_seq:
            self.db.retention.replace_one({"_id": org_id}, {"_id": org_id, "first_seq": first_seq, "anchor": anchor,
                                                            "first_at": first_at}, upsert=True)
        return purge_delete(self.db.entries, "_id", entry_ids)

    def claim_run(self, run_id):
        """True for the one replica whose insert of ``run_id`` wins; older claims are dropped."""
        try:
            self.db.retention_claims.insert_one({"_id": run_id})
        except DuplicateKeyError:
            return False
        self.db.retention_claims.delete_many({"_id": {"$ne": run_id}})
        return True

    # -- people (pseudonyms) ---------------------------------------------------------------------------
    @staticmethod
    def _person_key(org_id, kind, value):
        return f"{org_id}/{kind}/{value}"  # no NUL: PostgreSQL's jsonb refuses it

    def find_person(self, org_id, kind, value):
        doc = self.db.people.find_one({"key": self._person_key(org_id, kind, value)}, {"_id": 1})
        return doc["_id"] if doc else None

    #: tokens this process found or created, ``key -> (token, name)``: a person's token never changes
    #: (``TOKENS_MAX`` kept, then forgotten all at once)
    TOKENS_MAX = 10_000

    def person_token(self, org_id, kind, value, forgotten_digest, name=None):
        """The token of ``value`` in the organization, created on first sight (the unique key lets
        one of two concurrent creators win; the other reads the winner's); ``name`` is kept current.
        A forgotten person (``forgotten_digest`` remembered) gets a token nothing resolves: an event
        still in flight after the account's deletion must not bring the person back.

        A token once seen is answered from memory (every credit reservation names its initiator: a
        read per event otherwise). After the person is forgotten -- here or by another replica -- a
        remembered token resolves to nothing, exactly like the fresh one the database would give."""
        key = self._person_key(org_id, kind, value)
        known = self._tokens.get(key)
        if known is not None and (name is None or known[1] == name):
            return known[0]
        doc = self.db.people.find_one({"key": key})
        if doc is not None:
            if name is not None and doc.get("name") != name:
                self.db.people.update_one({"_id": doc["_id"]}, {"$set": {"name": name}})
            self._remember_token(key, doc["_id"], name if name is not None else doc.get("name"))
            return doc["_id"]
        token = "p:" + uuid.uuid4().hex
        if self._forgotten(forgotten_digest):
            return token
        doc = dict({"_id": token, "org_id": org_id, "kind": kind, "value": value, "key": key},
                   **({"name": name} if name is not None else {}))
        try:
            self.db.people.insert_one(doc)
        except DuplicateKeyError:
            return self.db.people.find_one({"key": key}, {"_id": 1})["_id"]
        if self._forgotten(forgotten_digest):  # forgotten while we wrote: take it back
            self.db.people.delete_one({"_id": token})
            return token
        self._remember_token(key, token, name)
        return token

    def _remember_token(self, key, token, name):
        remember(self._tokens, key, (token, name), self.TOKENS_MAX)

    def _forgotten(self, digest):
        return self.db.forgotten_people.find_one({"_id": digest}, {"_id": 1}) is not None

    def people(self, tokens):
        """``{token: person}`` (by ``_id``, one read each: a page names a few people)."""
        found = {}
        for token in tokens:
            doc = self.db.people.find_one({"_id": token})
            if doc is not None:
                found[token] = doc
        return found

    def org_people(self, org_id):
        return {doc["_id"]: doc for doc in self.db.people.find({"org_id": org_id})}

    def forget_people(self, values_and_digests):
        """Remember each digest first (see :meth:`person_token`), then delete the documents."""
        removed = 0
        self._tokens.clear()
        for value, digest in values_and_digests:
            self.db.forgotten_people.update_one({"_id": digest}, {"$setOnInsert": {"at": utcnow()}}, upsert=True)
            removed += self.db.people.delete_many({"value": value}).deleted_count
        return removed

    # -- deletion ------------------------------------------------------------------------------------
    def purge_organization(self, org_id):
        """Every document of the organization, by collection (also what a racing append left)."""
        self._tokens = {key: known for key, known in self._tokens.items() if not key.startswith(f"{org_id}/")}
        return {"entries": purge_delete(self.db.entries, "org_id", [org_id]),
                "chains": purge_delete(self.db.chains, "_id", [org_id]),
                "retention": purge_delete(self.db.retention, "_id", [org_id]),
                "people": purge_delete(self.db.people, "org_id", [org_id])}
