"""``Idempotency-Key`` for the membership service's creating operations (sign-up, organization).

A sign-up that outlives the gateway's RPC timeout still creates the account and the organization;
the client saw a 503 and retries. With a key, the first request records the ids it writes under
(chosen before anything is written) and the fingerprint of its parameters; a retry with the same
key takes the same ids, so every step it repeats finds its own earlier write (the organization is
created idempotently by id, the account and the membership are found again) and it answers like
the first request, flagged ``replayed``. The same key with other parameters is a 409. Records
hold no personal data (hashes of the key and parameters, and the ids) and expire after
``IDEMPOTENCY_SECONDS``.
"""
import hashlib
import json
from datetime import timedelta

from common.errors import DomainError
from common.events import utcnow


def _digest(value):
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def reused_with_other_parameters():
    return DomainError("conflict", "this idempotency key was already used with different parameters",
                       {"Idempotency-Key": ["Already used with different parameters."]})


def claim(store, settings, scope, key, parameters, fresh_ids):
    """``(ids, replayed)``: ``fresh_ids`` the first time a key is seen in ``scope``, else the ids the
    first request recorded. Without a key nothing is recorded."""
    if key is None:
        return fresh_ids, False
    ttl = timedelta(seconds=settings.idempotency_seconds)
    record_id = _digest(f"{scope}\x00{key}")
    fingerprint = _digest(json.dumps(parameters, sort_keys=True))
    for _ in range(3):
        now = utcnow()
        if store.insert_idempotency_record({"_id": record_id, "fingerprint": fingerprint, "ids": fresh_ids,
                                            "created_at": now, "expires_at": now + ttl}):
            return fresh_ids, False
        record = store.idempotency_record(record_id)
        if record is None:
            continue
        if record["expires_at"].replace(tzinfo=now.tzinfo) <= now:  # forgotten: the key is free again
            store.forget_idempotency_record(record_id, record["expires_at"])
            continue
        if record["fingerprint"] != fingerprint:
            raise reused_with_other_parameters()
        return record["ids"], True
    raise DomainError("conflict", "a request with this idempotency key is in progress",
                      {"Idempotency-Key": ["Retry shortly."], "retry_after": 1})
