"""Bulk documents in the shapes the services write, page keys included (``common/pages.py``).

The deletion and growth figures seed organizations directly (``insert_many`` into each service's
own database: hundreds of thousands of documents through the API would take an hour). The documents
must be what the services would have written, numbering and page keys included, or the figures
measure a path production never takes.
"""
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from pymongo import ReturnDocument

from common import pages
from common.events import utcnow

BATCH = 2000
PASSWORD_HASH = "$argon2id$v=19$m=1024,t=1,p=4$c2VlZGVk$c2VlZGVkaGFzaA"


def insert(collection, docs):
    for start in range(0, len(docs), BATCH):
        collection.insert_many(docs[start:start + BATCH], ordered=False)


def insert_all(dbs, seeds):
    """``seeds``: ``{database: [(collection, docs)]}`` each; one thread per database (the embedded
    database's front serialises writes per database, not across them)."""
    def fill(db):
        for batches in seeds:
            for collection, docs in batches.get(db, ()):
                if docs:
                    insert(dbs[db][collection], docs)
    with ThreadPoolExecutor(len(dbs)) as pool:
        for future in [pool.submit(fill, db) for db in dbs]:
            future.result()


def reserve_ordinals(db, org_id, counter, count, collection="organizations", upsert=False):
    """The first of ``count`` ordinals taken from the organization's counter (as the service
    would, one by one); 1 for an organization this database has no copy of (ballast)."""
    doc = db[collection].find_one_and_update({"_id": org_id}, {"$inc": {counter: count}}, upsert=upsert,
                                             return_document=ReturnDocument.AFTER)
    return doc[counter] - count + 1 if doc else 1


def members(membership_db, org_id, count, tag, with_accounts=True):
    """``count`` members joined after the organization's current ones: (accounts, memberships)."""
    now = utcnow()
    first = reserve_ordinals(membership_db, org_id, "joined", count)
    accounts, memberships = [], []
    for index in range(count):
        user_id = str(uuid.uuid4())
        email = f"m{index}-{tag}@example.test"
        ordinal = first + index
        if with_accounts:
            accounts.append({"_id": user_id, "email": email, "name": f"Member {index}",
                             "password_hash": PASSWORD_HASH, "is_superuser": False, "last_org_id": org_id,
                             "tokens_not_before": 0.0, "created_at": now})
        memberships.append({"_id": f"{org_id}:{user_id}", "org_id": org_id, "user_id": user_id,
                            "email": email, "name": f"Member {index}", "role": "member",
                            "can_delete_organization": False, "tokens_not_before": 0.0,
                            "joined_at": now + timedelta(microseconds=index), "ordinal": ordinal,
                            pages.FIELD: pages.key(org_id, ordinal)})
    return accounts, memberships


def ledger(usage_db, org_id, count, actor, first_seq=1):
    """``count`` grants of one credit each, entries ``first_seq`` on (the chain must have no gap);
    the organization's top page moves up as the service's appends would move it."""
    now = utcnow()
    entries = [{"_id": uuid.uuid4().hex[:32], "org_id": org_id, "seq": seq, pages.FIELD: pages.key(org_id, seq),
                "kind": "grant", "amount": 1000, "actor": actor, "reference": None,
                "idempotency_key": f"seed-{seq}", "comment": None, "expires_at": None, "lots": {},
                "request": {"op": "grant", "amount": 1000, "comment": None, "expires_at": None},
                "created_at": now, "balance_after": seq * 1000}
               for seq in range(first_seq, first_seq + count)]
    return entries


def ledger_head_seq(usage_db, org_id):
    """The chain's newest ``seq`` (0 if empty), read as the service reads it: its top page, or the one below."""
    top = (usage_db.organizations.find_one({"_id": org_id}) or {}).get("ledger_page") or 0
    for page in (top, top - 1) if top > 0 else (0,):
        docs = list(usage_db.ledger.find({pages.FIELD: pages.key_of_page(org_id, page)}, {"seq": 1}))
        if docs:
            return max(doc["seq"] for doc in docs)
    return 0


def move_ledger_top(usage_db, org_id, last_seq):
    usage_db.organizations.update_one({"_id": org_id}, {"$max": {"ledger_page": pages.number(last_seq)}})


def deliveries(notifications_db, org_id, count, tag):
    """``count`` sent mails after the organization's current log: (deliveries, attempts)."""
    now = utcnow()
    first = reserve_ordinals(notifications_db, org_id, "deliveries", count, "delivery_counters", upsert=True)
    logs, attempts = [], []
    for index in range(count):
        ordinal = first + index
        delivery_id = f"{uuid.uuid4().hex}:member_joined:owner-{tag}@example.test"
        key = pages.key(org_id, ordinal)
        logs.append({"_id": delivery_id, "org_id": org_id, "kind": "member_joined",
                     "to": f"owner-{tag}@example.test", "subject": f"Member {index} joined", "created_at": now,
                     "ordinal": ordinal, pages.FIELD: key})
        attempts.append({"_id": f"{delivery_id}#1", "delivery_id": delivery_id, "org_id": org_id, "n": 1,
                         "at": now, "outcome": "sent", "error": None, "status": "sent", "next_attempt_at": None,
                         pages.FIELD: key})
    return logs, attempts


def audit_log(org_id, count, first_seq=1, previous=""):
    """``count`` audit entries continuing an organization's chain from ``previous`` (the head's hash),
    hashed by the audit service's own rule (``services/audit/chain.py``), so they verify as its own."""
    from services.audit import chain
    from services.audit.store import keys as store_keys

    now = utcnow()
    docs = []
    for seq in range(first_seq, first_seq + count):
        doc = {"_id": uuid.uuid4().hex, "org_id": org_id, "seq": seq, **store_keys(org_id, seq),
               "at": f'{(now + timedelta(milliseconds=seq)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]}Z',
               "actor": {"user_id": "seeded", "is_superuser": False}, "action": "organization.renamed",
               "target": {"type": "organization", "id": org_id}, "details": {"name": f"Seeded {seq}"},
               "request_id": None, "event_id": uuid.uuid4().hex, "previous": previous, "recorded_at": now}
        doc["hash"] = previous = chain.digest(doc)
        docs.append(doc)
    return docs


def move_audit_top(audit_db, org_id, last_seq):
    audit_db.chains.update_one({"_id": org_id}, {"$max": {"top_page": pages.number(last_seq)}})
