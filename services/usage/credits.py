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
import hashlib
import logging
import random
import threading
import time
from datetime import timedelta

from common import events, metrics, outbox
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

# Within one process, appends to the same organization take turns (no wasted insert races between
# our own workers); across processes the unique (org_id, seq) index decides. The last head this
# process wrote is kept as a hint: if another process appended since, the hint's ``seq + 1`` is taken
# (the chain has no gaps) and the insert fails, so a stale hint costs one retry, never correctness.
_STRIPES = [threading.Lock() for _ in range(64)]
_HEADS = {}
_HEADS_MAX = 10_000


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


# -- the append loop ---------------------------------------------------------------------------

def _append(store, org_id, op_id, request, build):
    """Apply an operation once. ``build(head)`` returns ``(entry fields, [outbox entries])`` or raises.

    Returns ``(entry, replayed)``. A repeated ``op_id`` returns the entry it produced the first time,
    or 409 if ``request`` (the operation's parameters) differs.
    """
    with _STRIPES[hash(org_id) % len(_STRIPES)]:
        entry, pending_events, replayed = _append_locked(store, org_id, op_id, request, build)
    if replayed:
        return entry, True
    refuse_if_purged(store, org_id)
    store.outbox.publish_written("ledger", op_id, pending_events)  # a ledger entry is never updated
    return entry, False


def _replay(store, org_id, op_id, request):
    """``(entry, (), True)`` if ``op_id`` was applied already; 409 if with other parameters."""
    existing = store.ledger_entry(op_id)
    if existing is None:
        return None
    if existing["org_id"] != org_id or existing.get("request") != request:
        raise DomainError("conflict", "this idempotency key was already used with different parameters",
                          {"idempotency_key": ["Already used with different parameters."]})
    return existing, (), True


def _append_locked(store, org_id, op_id, request, build):
    for attempt in range(MAX_ATTEMPTS):
        hint = _HEADS.get(org_id) if attempt == 0 else None
        # With a hint (this process appended last) the insert itself tells whether the key was
        # applied: its ``_id`` is the key's, so a replay fails the insert and the next round reads
        # it. That saves a read per append; without a hint the key is looked up first.
        if hint is None:
            replay = _replay(store, org_id, op_id, request)
            if replay is not None:
                return replay
        head = hint or store.ledger_head(org_id) or EMPTY_HEAD
        try:
            fields, pending_events = build(head)
        except DomainError as error:
            if hint is None:
                raise
            replay = _replay(store, org_id, op_id, request)  # a replay answers as the first time did
            if replay is not None:
                return replay
            if error.code != "insufficient_credits":
                raise
            continue  # never refuse on a hint: another process may have granted since; read the real head
        now = utcnow()
        entry = dict(fields, _id=op_id, org_id=org_id, seq=head["seq"] + 1, request=request,
                     created_at=now)
        entry["balance_after"] = head["balance_after"] + entry["amount"]
        if entry["balance_after"] < 0:  # build() refuses first; this is the invariant, stated once more
            raise DomainError("insufficient_credits", "not enough credits")
        if entry["amount"] != 0:
            pending_events = list(pending_events) + [outbox.pending(
                events.CREDITS_CHANGED, org_id, balance=entry["balance_after"], sequence=entry["seq"],
                kind=entry["kind"], amount=entry["amount"], entry_id=op_id, job_id=entry.get("job_id"),
                job_type=entry.get("job_type"), comment=entry.get("comment"))]
        if store.insert_ledger_entry(entry, *pending_events):
            metrics.LEDGER_WRITES.labels(entry.get("kind") or "unknown").inc()
            if len(_HEADS) >= _HEADS_MAX:
                _HEADS.clear()
            _HEADS[org_id] = entry
            return entry, pending_events, False
        # someone else took seq n + 1 (or applied this very key): re-read and try again
        if attempt > 3:
            time.sleep(random.uniform(0, min(0.002 * attempt, 0.05)))
    raise DomainError("service_unavailable", "the ledger is too busy, try again")


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
    require_active(store, org_id)
    request = {"op": "reservation", "amount": amount, "job_id": job_id, "job_type": job_type}

    def build(head):
        if head["balance_after"] < amount:
            raise DomainError("insufficient_credits", "not enough credits for this reservation",
                              {"balance": head["balance_after"], "required": amount})
        lots, allocation = _lots_after_debit(head.get("lots") or {}, amount)
        return {"kind": "reservation", "amount": -amount, "actor": actor_id, "reference": job_id,
                "idempotency_key": key, "job_id": job_id, "job_type": job_type, "allocation": allocation,
                "lots": lots}, []
    return _append(store, org_id, entry_id(org_id, "key", key), request, build)


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
