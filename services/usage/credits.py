"""The credit ledger: integer milli-credits, append-only, idempotent by key, never negative.

Every write appends one entry to a per-organization chain: entry ``n + 1`` is computed from entry
``n`` (the head) and inserted with a unique ``(org_id, seq)`` -- exactly one of several concurrent
writers wins a position, the others re-read the head and try again. The entry's ``_id`` is derived
from the idempotency key, so a key is applied at most once; a repeated key finds its entry and
returns it (409 if the parameters differ). Each entry carries the state after it: ``balance_after``
and the unspent remainders of expiring grants (``lots``) -- the balance *is* the head's
``balance_after``, so there is no second document to keep in step. Events ride in the entry's
outbox and are published after the insert (or by the sweep after a crash). See docs/credits.md.
"""
import contextvars
import hashlib
import logging
import threading
from datetime import timedelta

from common import events, metrics, outbox, pages
from common.batching import GroupCommit, remember, step_aside
from common.errors import DomainError, gone, not_found
from common.events import isoformat, utcnow
from common.organizations import require_active
from common.validation import bounded_moment, decode_sequence, encode_sequence
from services.usage.schemas import LedgerEntrySchema

log = logging.getLogger(__name__)

MAX_AMOUNT = 10 ** 15
MAX_KEY = 200
MAX_ATTEMPTS = 400
MAX_PAGE = 200
ORPHAN_SCHEDULE_SECONDS = 120
EMPTY_HEAD = {"seq": 0, "balance_after": 0, "lots": {}}

# Within one process, appends to the same organization are group-committed (``_append``): no
# wasted insert races between our own workers, and one insert for every append that queued while
# the previous group was written. Across processes the unique (org_id, seq) index decides. The last
# head this process wrote is kept as a hint: if another process appended since, the hint's
# ``seq + 1`` is taken (the chain has no gaps) and the insert fails, so a stale hint costs one
# retry, never correctness.
_HEADS = {}
_HEADS_MAX = 10_000
# Organizations this process found active. Its copy of an organization only ever goes away with the
# purge, which leaves a tombstone first, and every append checks the tombstone after its insert
# (``refuse_if_purged``: the entry is scrubbed and the caller gets 410): so an append needs no read
# of the organization once it was found active here -- a purged one costs a wasted insert, never a
# wrong answer. Forgotten when that check finds it purged.
_ACTIVE = {}
#: appends of one group (one ordered insert): at most a page, so one insert touches at most two
#: pages (``UsageStore.insert_ledger_entries``)
GROUP_MAX = pages.PAGE


def entry_id(org_id, scope, key):
    """Ledger ``_id`` for an operation: the organization, a scope (client key, settlement, expiry), the key."""
    return hashlib.sha256((f"{org_id}\x00{scope}\x00{key}").encode()).hexdigest()[:32]


def _invalid(field, message):
    return DomainError("validation_failed", "invalid input", {field: [message]})


def _amount(value, field="amount"):
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_AMOUNT:
        raise _invalid(field, f"Must be an integer number of milli-credits between 1 and {MAX_AMOUNT}.")
    return value


def _text(value, field, maximum, required=True):
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= maximum:
        raise _invalid(field, f"Must be a string of 1-{maximum} characters.")
    return value


def _parse_time(value, field):
    return bounded_moment(value, field)


def refuse_if_purged(store, org_id):
    """After a write for ``org_id`` and before its events go out: a purge that ran since the
    ``require_active`` check (it remembers the organization, then deletes) may have missed what was
    just written, so the writer deletes everything of the organization again and answers 410."""
    if store.was_purged(org_id):
        store.scrub(org_id)
        raise gone()


def balance(store, org_id):
    return (store.ledger_head(org_id) or EMPTY_HEAD)["balance_after"]


# -- the append loop: group commit ------------------------------------------------------------

class _Append:
    """One operation waiting to be appended: ``build(head)`` returns ``(entry fields, [outbox
    entries])`` or raises; ``check``: the group verifies the organization is active for it.
    ``context``: its caller's context variables: whoever writes the group builds this entry and its
    events in them, so each event names its own request and actor (``common.context``)."""
    __slots__ = ("org_id", "op_id", "request", "build", "check", "context")

    def __init__(self, org_id, op_id, request, build, check):
        self.org_id, self.op_id, self.request, self.build, self.check = org_id, op_id, request, build, check
        self.context = contextvars.copy_context()


class _Publication:
    """The events of one group's entries, published once by whichever of its callers gets there
    first (normally the leader, which is still running); the others wait for it, so every caller
    answers after its own event is out, as a lone append does."""

    def __init__(self, store, org_id, written):
        self.store, self.org_id, self.written = store, org_id, written
        self._lock = threading.Lock()
        self._claimed = False
        self._done = threading.Event()
        self._error = None

    def finish(self):
        with self._lock:
            mine, self._claimed = not self._claimed, True
        if not mine:
            self._done.wait()
            if self._error is not None:
                raise self._error
            return
        try:
            try:
                refuse_if_purged(self.store, self.org_id)
            except DomainError:
                _ACTIVE.pop(self.org_id, None)
                raise
            # a ledger entry is never updated: its outbox holds exactly the events its insert queued
            self.store.publish_ledger_entries(self.written, published=self._done.set)
        except BaseException as error:
            if not self._done.is_set():  # the others' answer too; a failing clear is only the claimer's
                self._error = error
            raise
        finally:
            self._done.set()


def _append(store, org_id, op_id, request, build, check=False):
    """Apply an operation once. ``build(head)`` returns ``(entry fields, [outbox entries])`` or raises.
    ``check``: verify (once for the group it joins) that the organization is active.

    Returns ``(entry, replayed)``. A repeated ``op_id`` returns the entry it produced the first time,
    or 409 if ``request`` (the operation's parameters) differs.

    Group commit: the caller queues its append; whoever finds no group being written takes every
    append queued for its stripe (``common.batching.GroupCommit``) and writes them as consecutive
    entries ``n + 1 .. n + k`` with one ordered insert, then their events are published and cleared
    (``_Publication``). So under load a group of k reservations costs one insert and one tombstone
    read instead of k of each (and no organization read once it was found active, see
    ``_ACTIVE``); a lone append is written at once."""
    entry, replayed, publication = _GROUPS[hash(org_id) % len(_GROUPS)].submit(
        (store, _Append(org_id, op_id, request, build, check)))
    if publication is not None:
        publication.finish()
    return entry, replayed


def _replay(store, org_id, op_id, request):
    """``(entry, True, None)`` if ``op_id`` was applied already; 409 if with other parameters."""
    existing = store.ledger_entry(op_id)
    if existing is None:
        return None
    if existing["org_id"] != org_id or existing.get("request") != request:
        return DomainError("conflict", "this idempotency key was already used with different parameters",
                           {"idempotency_key": ["Already used with different parameters."]})
    return existing, True, None


def _write_groups(store_items):
    """``GroupCommit`` flush of one stripe: the queued appends, organization by organization."""
    results = [None] * len(store_items)
    by_org = {}
    for index, (store, item) in enumerate(store_items):
        by_org.setdefault((id(store), item.org_id), (store, []))[1].append(index)
    for store, indexes in by_org.values():
        for index, result in zip(indexes, _write_group(store, [store_items[i][1] for i in indexes]), strict=True):
            results[index] = result
    return results


def _write_group(store, items):
    """Append ``items`` (all of one organization) in arrival order; a result per item:
    ``(entry, replayed, publication)`` or the exception its caller raises."""
    org_id = items[0].org_id
    results = [None] * len(items)
    if org_id not in _ACTIVE and any(item.check for item in items):
        try:
            require_active(store, org_id)
            remember(_ACTIVE, org_id, True, _HEADS_MAX)
        except DomainError as error:
            for index, item in enumerate(items):
                if item.check:
                    results[index] = error
    pending = [index for index, result in enumerate(results) if result is None]
    written = []
    try:
        _write_pending(store, org_id, items, pending, results, written)
        failure = DomainError("service_unavailable", "the ledger is too busy, try again")
    except Exception as error:  # what was written stands (its events are published below); the rest fail
        failure = error
    for index in pending:
        results[index] = failure
    publication = _Publication(store, org_id, written) if written else None
    return [(result, False, publication) if isinstance(result, dict) else result for result in results]


def _write_pending(store, org_id, items, pending, results, written):
    """The append loop of one organization's group: fills ``results`` and ``written`` and removes
    from ``pending`` whatever it answered; raises only what the database raised."""
    head, proven = _HEADS.get(org_id), False  # a hint is never grounds for a refusal; a read or an insert is
    conflicts = 0
    while pending:
        if head is None:
            head, proven = store.ledger_head(org_id) or EMPTY_HEAD, True
        batch, refused = _build(items, pending[:GROUP_MAX], head, org_id)
        inserted = store.insert_ledger_entries([(entry, queued) for _, entry, queued in batch]) if batch else 0
        for index, entry, queued in batch[:inserted]:
            metrics.LEDGER_WRITES.labels(entry.get("kind") or "unknown").inc()
            written.append((entry, queued))
            results[index] = entry
            head, proven = entry, True  # the insert proved it the real head
        del pending[:inserted]
        if inserted:
            remember(_HEADS, org_id, head, _HEADS_MAX)
        if inserted < len(batch):  # seq n + 1 was taken by another writer, or this key was applied
            index = batch[inserted][0]
            replay = _replay(store, org_id, items[index].op_id, items[index].request)
            if replay is not None:
                results[index] = replay
                pending.remove(index)
                continue
            _HEADS.pop(org_id, None)
            head, conflicts = None, conflicts + 1
            if conflicts >= MAX_ATTEMPTS:
                break
            step_aside(conflicts)
            continue
        if refused is not None:  # build() refused the next append on the head it would follow
            index, error = refused
            replay = _replay(store, org_id, items[index].op_id, items[index].request)  # answers as the first time
            if replay is not None or proven or error.code != "insufficient_credits":
                results[index] = replay if replay is not None else error
                pending.remove(index)
            else:
                head = None  # never refuse on a hint: another process may have granted since


def _build(items, indexes, head, org_id):
    """Entries for ``indexes`` chained on ``head``: ``([(index, entry, events)], (index, error) or
    None)``, stopping at the first append that ``build`` refuses."""
    batch = []
    for index in indexes:
        item = items[index]
        try:
            entry, pending_events = item.context.run(_entry, item, head)
        except DomainError as error:
            return batch, (index, error)
        batch.append((index, entry, pending_events))
        head = entry
    return batch, None


def _entry(item, head):
    """The entry ``item`` appends after ``head``, and its events (run in the item's own context)."""
    fields, pending_events = item.build(head)
    entry = dict(fields, _id=item.op_id, org_id=item.org_id, seq=head["seq"] + 1, request=item.request,
                 created_at=utcnow())
    entry["balance_after"] = head["balance_after"] + entry["amount"]
    if entry["balance_after"] < 0:  # build() refuses first; this is the invariant, stated once more
        raise DomainError("insufficient_credits", "not enough credits")
    pending_events = list(pending_events)
    if entry["amount"] != 0:
        pending_events.append(outbox.pending(
            events.CREDITS_CHANGED, item.org_id, balance=entry["balance_after"], sequence=entry["seq"],
            kind=entry["kind"], amount=entry["amount"], entry_id=item.op_id, job_id=entry.get("job_id"),
            job_type=entry.get("job_type"), comment=entry.get("comment")))
    return entry, pending_events


_GROUPS = [GroupCommit(_write_groups, max_batch=GROUP_MAX) for _ in range(64)]


def _lots_after_debit(lots, amount):
    """Spend expiring grants first, soonest expiry first; returns (new lots, allocation)."""
    lots = {gid: dict(lot) for gid, lot in lots.items()}
    allocation, left = {}, amount
    for gid, lot in sorted(lots.items(), key=lambda item: (item[1]["expires_at"], item[0])):
        if left == 0:
            break
        take = min(lot["remaining"], left)
        if take:
            lot["remaining"] -= take
            allocation[gid] = take
            left -= take
    return lots, allocation


# -- operations ------------------------------------------------------------------------------

def grant(store, org_id, actor_id, amount, idempotency_key, comment=None, expires_at=None):
    amount = _amount(amount)
    key = _text(idempotency_key, "idempotency_key", MAX_KEY)
    comment = _text(comment, "comment", 500, required=False)
    expires = _parse_time(expires_at, "expires_at")
    require_active(store, org_id)
    request = {"op": "grant", "amount": amount, "comment": comment, "expires_at": isoformat(expires)}
    op_id = entry_id(org_id, "key", key)
    existing = store.ledger_entry(op_id)
    if existing is None and expires is not None:
        if expires <= utcnow():
            raise _invalid("expires_at", "Must be in the future.")
        # registered before the grant exists, so no crash can leave an expiring grant unscheduled
        store.schedule_expiry(op_id, org_id, expires, utcnow())

    def build(head):
        lots = dict(head.get("lots") or {})
        if expires is not None:
            lots[op_id] = {"remaining": amount, "expires_at": expires}
        return {"kind": "grant", "amount": amount, "actor": actor_id, "reference": None,
                "idempotency_key": key, "comment": comment, "expires_at": expires, "lots": lots}, []
    return _append(store, org_id, op_id, request, build)


def reserve(store, org_id, actor_id, amount, job_id, job_type, idempotency_key):
    amount = _amount(amount)
    job_id = _text(job_id, "job_id", 200)
    job_type = _text(job_type, "job_type", 100)
    key = _text(idempotency_key, "idempotency_key", MAX_KEY)
    request = {"op": "reservation", "amount": amount, "job_id": job_id, "job_type": job_type}

    def build(head):
        if head["balance_after"] < amount:
            raise DomainError("insufficient_credits", "not enough credits for this reservation",
                              {"balance": head["balance_after"], "required": amount})
        lots, allocation = _lots_after_debit(head.get("lots") or {}, amount)
        return {"kind": "reservation", "amount": -amount, "actor": actor_id, "reference": job_id,
                "idempotency_key": key, "job_id": job_id, "job_type": job_type, "allocation": allocation,
                "lots": lots}, []
    # the organization is checked by the group this append joins: one read for concurrent reservations
    return _append(store, org_id, entry_id(org_id, "key", key), request, build, check=True)


def settle(store, org_id, actor_id, reservation_id, outcome):
    if outcome not in ("succeeded", "failed"):
        raise _invalid("outcome", "Must be one of: succeeded, failed.")
    require_active(store, org_id)
    reservation = store.ledger_entry(reservation_id) if isinstance(reservation_id, str) else None
    if reservation is None or reservation["org_id"] != org_id or reservation["kind"] != "reservation":
        raise not_found("reservation")
    reserved = -reservation["amount"]

    def build(head):
        completed = outbox.pending(events.AI_JOB_COMPLETED, org_id, job_id=reservation["job_id"],
                                   job_type=reservation["job_type"], initiator_user_id=reservation["actor"],
                                   outcome=outcome, credits=reserved, reservation_id=reservation_id)
        common = {"actor": actor_id, "reference": reservation_id, "idempotency_key": None, "outcome": outcome,
                  "job_id": reservation["job_id"], "job_type": reservation["job_type"]}
        if outcome == "succeeded":  # the reserved credits stay spent
            return dict(common, kind="settlement", amount=0, lots=head.get("lots") or {}), [completed]
        lots = {gid: dict(lot) for gid, lot in (head.get("lots") or {}).items()}
        for gid, taken in (reservation.get("allocation") or {}).items():
            if gid in lots:  # back to its grant if that has not expired; else into the general balance
                lots[gid]["remaining"] += taken
        return dict(common, kind="refund", amount=reserved, lots=lots), [completed]
    return _append(store, org_id, entry_id(org_id, "settle", reservation_id), {"op": "settle", "outcome": outcome},
                   build)


def expire_grant(store, org_id, grant_id):
    """Revoke what is left of one expiring grant (idempotent: one expiry entry per grant)."""
    def build(head):
        lots = {gid: dict(lot) for gid, lot in (head.get("lots") or {}).items()}
        lot = lots.pop(grant_id, None)
        remaining = lot["remaining"] if lot else 0
        return {"kind": "expiry", "amount": -remaining, "actor": None, "reference": grant_id,
                "idempotency_key": None, "lots": lots}, []
    return _append(store, org_id, entry_id(org_id, "expiry", grant_id), {"op": "expiry", "grant": grant_id}, build)


def expire_due(store, now=None):
    """Timer: expire every due grant. Safe with several replicas (the expiry entry is unique)."""
    now = now or utcnow()
    expired = 0
    for schedule in store.due_expiries(now):
        grant_id, org_id = schedule["_id"], schedule["org_id"]
        try:
            if store.ledger_entry(grant_id) is None:
                # scheduled by a grant request that never completed; give a slow writer time first
                if schedule["created_at"] < now - timedelta(seconds=ORPHAN_SCHEDULE_SECONDS):
                    store.drop_expiry(grant_id)
                continue
            organization = store.organization(org_id)
            if organization is not None and organization.get("status") == "active":
                expire_grant(store, org_id, grant_id)
                expired += 1
            store.drop_expiry(grant_id)
        except Exception:
            log.exception("expiring grant %s of %s failed; next tick retries", grant_id, org_id)
    return expired


# -- reads -------------------------------------------------------------------------------------

_ENTRY = LedgerEntrySchema()  # one instance: building a marshmallow schema costs more than a dump


def present(entry):
    data = _ENTRY.dump(entry)
    for field in ("actor", "reference", "idempotency_key", "comment", "job_id", "job_type", "outcome",
                  "expires_at"):
        data.setdefault(field, None)
    return data


def write_result(result):
    entry, replayed = result
    return {"entry": present(entry), "balance": entry["balance_after"], "replayed": replayed}


def ledger(store, org_id, limit=50, cursor=None):
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise _invalid("limit", f"Must be between 1 and {MAX_PAGE}.")
    before = decode_sequence(cursor) if cursor is not None else None
    organization = require_active(store, org_id)
    head = store.ledger_head(org_id, organization) or EMPTY_HEAD  # its top page is in the copy just read
    page = store.ledger_page(org_id, limit + 1, before, top_seq=head["seq"])
    items = [present(entry) for entry in page[:limit]]
    next_cursor = encode_sequence(page[limit - 1]["seq"]) if len(page) > limit else None
    return {"balance": head["balance_after"], "items": items, "next_cursor": next_cursor}
