"""The log as a hash chain: appending an event's entries, and verifying an organization's chain.

Entry ``n`` stores ``hash = SHA-256(canonical JSON of its content + the hash of entry n - 1)``
(``previous``; the first entry's is ``""``, or after retention the anchor it left). Editing, removing
or reordering a stored entry therefore shows: its own hash no longer matches, or the next entry's
``previous`` no longer names it. Verification recomputes the chain from the oldest kept entry and
names the first entry that does not match.

Appending follows the usage ledger's pattern (``services/usage/credits.py``): insert ``seq = head + 1``
under the unique ``(org_id, seq)`` index, re-read the head and retry if another writer won; concurrent
events of one organization are written as one group of consecutive entries. The entry's ``_id`` is
derived from the event id (and the entry's index within the event), so a redelivered or duplicated
event finds its entries and adds none.
"""
import hashlib
import json
import time

from common import pages
from common.batching import READ_MODEL_LINGER, GroupCommit, remember, step_aside
from common.errors import DomainError
from common.events import utcnow
from services.audit import deletion

#: the fields an entry's hash covers (``previous`` is the link), in the API's names
HASHED = ("id", "organization_id", "sequence", "at", "actor", "action", "target", "details", "request_id",
          "previous")
MAX_ATTEMPTS = 400
# Appends of one organization are group-committed within a process (no insert races among our own
# workers, one insert per group); across replicas the unique (org_id, seq) index decides. The last
# entry this process wrote per organization is kept as a hint of the head, and the organizations
# whose chain document exists (it is only ever deleted with the whole log, by a purge, after which
# no event of the organization is recorded again).
_HEADS = {}
_CHAINS = {}
_CACHE_MAX = 10_000


def entry_id(event_id, index):
    return hashlib.sha256((f"{event_id}\x00{index}").encode()).hexdigest()[:32]


def content(doc):
    """What the hash covers, from a stored entry."""
    return {"id": doc["_id"], "organization_id": doc["org_id"], "sequence": doc["seq"], "at": doc["at"],
            "actor": doc["actor"], "action": doc["action"], "target": doc["target"], "details": doc["details"],
            "request_id": doc.get("request_id"), "previous": doc["previous"]}


def digest(doc):
    canonical = json.dumps(content(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def record(store, event, actor, meaning):
    """Append the entries ``meaning`` (``[(action, target, details)]``, people already by token) of
    ``event`` by ``actor``; returns how many were new (see :func:`record_event`)."""
    return record_event(store, event, lambda: (actor, meaning))


def record_event(store, event, resolve):
    """Append the entries of ``event``; ``resolve()`` returns ``(actor, meaning)`` with people by
    token (``people.stored``). Returns how many entries were new. Idempotent: a repeated event adds
    nothing. A late event of a purged organization is dropped, and what an append raced a purge
    with is scrubbed (``deletion.scrub_if_purged``), so nothing of the organization comes back.

    Concurrent events of one organization are group-committed (``_write_groups``): the group checks
    the tombstone once before and once after, and writes every event's entries with one ordered
    insert, instead of two tombstone reads, a key look-up, a head read and an insert per event. A
    lone event waits ``READ_MODEL_LINGER`` for company, so a burst arriving one event at a time (a
    run of credit reservations) still makes groups; the log shows an event that much later."""
    return _GROUPS[hash(event["organization_id"]) % len(_GROUPS)].submit((store, event, resolve))


def _write_groups(queued):
    """``GroupCommit`` flush of one stripe: the queued events, organization by organization, in
    arrival order; a count of new entries (or an error) per event."""
    results = [None] * len(queued)
    by_org = {}
    for index, (store, event, _) in enumerate(queued):
        by_org.setdefault((id(store), event["organization_id"]), (store, []))[1].append(index)
    for store, indexes in by_org.values():
        try:
            counts = _record_group(store, [queued[index] for index in indexes])
        except Exception as error:  # nothing was decided for these events: each handler retries its own
            counts = [error] * len(indexes)
        for index, count in zip(indexes, counts, strict=True):
            results[index] = count
    return results


def _record_group(store, queued):
    """The events of one organization: a count of new entries (or an error) per event."""
    org_id = queued[0][1]["organization_id"]
    if store.was_purged(org_id):
        return [0] * len(queued)
    counts, pending = [0] * len(queued), []
    for position, (_, event, resolve) in enumerate(queued):
        try:
            actor, meaning = resolve()
        except Exception as error:  # this event's handler retries it; the others go on
            counts[position] = error
            continue
        pending.extend((position, {
            "_id": entry_id(event["event_id"], index), "org_id": org_id, "at": event["occurred_at"], "actor": actor,
            "action": action, "target": target, "details": details, "request_id": event.get("request_id"),
            "event_id": event["event_id"]}) for index, (action, target, details) in enumerate(meaning))
    if not pending:
        return counts
    if org_id not in _CHAINS:
        if store.chain(org_id) is None:
            store.start_chain(org_id, pending[0][1]["at"])
        remember(_CHAINS, org_id, True, _CACHE_MAX)
    left = list(pending)
    try:
        _write_group(store, org_id, left, counts)
        failure = DomainError("service_unavailable", "the audit log is too busy, try again")
    except Exception as error:  # what was written stands; the events not written are retried
        failure = error
    for position, _ in left:
        counts[position] = failure
    if any(isinstance(count, int) and count for count in counts):
        deletion.scrub_if_purged(store, org_id)
    return counts


def _write_group(store, org_id, pending, counts):
    """Append ``pending`` (``[(event index, entry fields)]``) as consecutive entries with ordered
    inserts of at most a page (so an insert touches at most two pages, see ``AuditStore.insert_entries``).

    The head is this process's last written entry (a hint) or read; another replica appending since
    makes the insert fail on ``seq`` and the head is read again. A redelivered event's entry fails
    the insert on its ``_id``: it is skipped (looked up only then, not before every append)."""
    head, known = _HEADS.get(org_id), org_id in _HEADS
    conflicts = 0
    while pending:
        if not known:
            head, known = store.head(org_id), True
        docs, previous = [], head
        for _, fields in pending[:pages.PAGE]:
            doc = dict(fields, seq=(previous["seq"] if previous else 0) + 1,
                       previous=previous["hash"] if previous else _anchor(store, org_id), recorded_at=utcnow())
            doc["hash"] = digest(doc)
            docs.append(doc)
            previous = doc
        inserted = store.insert_entries(docs)
        for (index, _), doc in zip(pending[:inserted], docs, strict=False):
            counts[index] += 1
            head = doc
        del pending[:inserted]
        if inserted:
            remember(_HEADS, org_id, head, _CACHE_MAX)
        if inserted == len(docs):
            continue
        if store.entry(docs[inserted]["_id"]) is not None:
            del pending[0]  # this event's entry is in the log already (a redelivery, a duplicate)
            continue
        _HEADS.pop(org_id, None)
        known, conflicts = False, conflicts + 1
        if conflicts >= MAX_ATTEMPTS:
            return
        step_aside(conflicts)


_GROUPS = [GroupCommit(_write_groups, max_batch=pages.PAGE, linger=READ_MODEL_LINGER) for _ in range(64)]


def _anchor(store, org_id):
    """What the first entry links to: nothing, or what retention left of the entries before."""
    return (store.retained(org_id) or {}).get("anchor") or ""


def verify(store, org_id, after=None, budget_seconds=None):
    """Recompute the organization's chain; ``broken_at`` names the first entry that does not match.

    A big log takes longer than one call may (10,000 entries: seconds on FerretDB, which decodes
    every document it returns), so a call stops after ``budget_seconds`` at the end of a bulk read and
    answers ``next_cursor``: the last entry it checked. The next call (``after`` = that cursor) links
    on from that entry's stored hash, which the previous call checked against its content, so the
    calls together check exactly what one call would."""
    started = time.monotonic()
    chain_doc = store.chain(org_id)
    retained = store.retained(org_id) or {}
    first_seq = retained.get("first_seq") or 1
    head = store.head(org_id, chain_doc) if chain_doc else None
    top = head["seq"] if head else 0
    result = {"organization_id": org_id, "ok": True, "entries": 0, "first_sequence": first_seq if head else None,
              "last_sequence": top or None, "head_hash": head["hash"] if head else None, "broken_at": None,
              "checked_from": None, "checked_to": None, "next_cursor": None}
    if head is None:
        return result
    start = first_seq if after is None else max(int(after) + 1, first_seq)
    if start > top:
        return result
    # the link into the first entry checked: the anchor, or the stored hash of the entry before it
    previous = retained.get("anchor") or ""
    if start > first_seq:
        before = store.entry_at(org_id, start - 1)
        if before is None:
            return _broken(result, start - 1, None, "missing")
        previous = before.get("hash")
    expected = start
    for docs in store.bulks(org_id, start, top):
        for doc in docs:
            if doc["seq"] != expected:
                return _broken(result, expected, None, "missing")
            if doc.get("previous") != previous:
                return _broken(result, doc["seq"], doc["_id"], "link_mismatch")
            if digest(doc) != doc.get("hash"):
                return _broken(result, doc["seq"], doc["_id"], "hash_mismatch")
            if result["checked_from"] is None:
                result["checked_from"] = doc["seq"]
            result["checked_to"] = doc["seq"]
            previous, expected = doc["hash"], expected + 1
            result["entries"] += 1
        if expected <= top and budget_seconds is not None and time.monotonic() - started > budget_seconds:
            return dict(result, next_cursor=str(expected - 1))  # the rest in the next call
    if expected <= top:  # entries up to the head are gone
        return _broken(result, expected, None, "missing")
    return result


def _broken(result, sequence, entry_id, reason):
    return dict(result, ok=False, broken_at={"sequence": sequence, "id": entry_id, "reason": reason})
