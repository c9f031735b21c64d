"""Retention: entries older than ``AUDIT_RETENTION_DAYS`` (400 by default) leave the log.

The timer fires in every replica; each run is claimed by inserting a document named after its time
slot (``retention_claims``), which exactly one replica can do, and the work itself is idempotent
(removing removed entries changes nothing), so a run that dies half-way is finished by the next.

The chain stays verifiable: before the oldest entries go, the organization's ``retention`` document
records the first entry kept and the hash it links to (the *anchor*); verification starts there.
Entries are removed oldest first and a run stops at the first entry still young enough: after an
outage entries may have been recorded out of time order, and such an entry keeps the ones after it
a little longer rather than opening a gap in the chain.
"""
import logging
from datetime import timedelta

from common.events import isoformat, utcnow

log = logging.getLogger(__name__)


def run(store, days, interval_seconds, now=None):
    """One retention run if this replica claims it; returns ``{org_id: entries removed}`` (None if
    another replica has this slot)."""
    now = now or utcnow()
    slot = int(now.timestamp() // max(float(interval_seconds), 1.0))
    if not store.claim_run(f"retention:{slot}"):
        return None
    cutoff = isoformat(now - timedelta(days=float(days)))
    removed = {}
    for chain in store.chains():
        org_id = chain["_id"]
        retained = store.retained(org_id) or {}
        if (retained.get("first_at") or chain.get("first_at") or cutoff) >= cutoff:
            continue  # its oldest entry is young enough: nothing to read
        try:
            count = retire_older(store, org_id, cutoff, retained.get("first_seq") or 1)
        except Exception:  # one organization's failure must not stop the others; the next run retries
            log.exception("retention failed for %s", org_id)
            continue
        if count:
            removed[org_id] = count
    return removed


def retire_older(store, org_id, cutoff, first_seq):
    """Remove the organization's entries older than ``cutoff`` (oldest first, up to the first young one)."""
    head = store.head(org_id)
    if head is None:
        return 0
    old, keep_from = [], None
    for doc in store.entries_oldest_first(org_id, first_seq, head["seq"]):
        if doc["at"] >= cutoff:
            keep_from = doc
            break
        old.append(doc)
    if not old:
        return 0
    if keep_from is None:  # every entry is old: the newest stays, so the chain keeps its head
        keep_from = old.pop()
        if not old:
            return 0
    return store.retire(org_id, keep_from["seq"], old[-1]["hash"], keep_from["at"], [doc["_id"] for doc in old])
