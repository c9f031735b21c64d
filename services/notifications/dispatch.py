"""The mail outbox: record first, send after, retry with backoff, log every attempt.

A mail is a ``deliveries`` document created ``queued`` with ``_id = "<key>:<recipient>"`` where
``key`` identifies the cause (an event id, a reminder's ``paid_until``): a redelivered event or a
second replica finds the document already there and queues nothing. Sending claims the document
with a lease (conditional ``find_one_and_update``), so two replicas never send the same mail at
once; the outcome is written only while the lease is still held. A temporary failure (4xx reply,
refused connection, timeout) schedules the next attempt after an exponential backoff until
``MAIL_MAX_ATTEMPTS``; a permanent one (5xx) fails at once. If the process dies anywhere between
recording and sending, the dispatcher timer finds the due ``queued`` document and sends it.
"""
import logging
from datetime import timedelta

from cryptography.fernet import InvalidToken

from common.events import utcnow
from services.notifications import mail

log = logging.getLogger(__name__)


class DispatchPolicy:
    def __init__(self, base_seconds=30.0, max_seconds=3600.0, max_attempts=8, lease_seconds=120.0):
        self.base_seconds = float(base_seconds)
        self.max_seconds = float(max_seconds)
        self.max_attempts = int(max_attempts)
        self.lease_seconds = float(lease_seconds)

    @classmethod
    def from_config(cls, config):
        return cls(base_seconds=config.get("MAIL_RETRY_BASE_SECONDS") or 30,
                   max_seconds=config.get("MAIL_RETRY_MAX_SECONDS") or 3600,
                   max_attempts=config.get("MAIL_MAX_ATTEMPTS") or 8,
                   lease_seconds=config.get("MAIL_LEASE_SECONDS") or 120)

    def backoff(self, attempts):
        """Delay before attempt ``attempts + 1``: base, 2*base, 4*base, ... capped."""
        return min(self.base_seconds * 2 ** (attempts - 1), self.max_seconds)


def enqueue(store, org_id, kind, key, recipients, context, secret=False):
    """Record one mail per recipient (idempotent by ``key``); returns the ids now queued by us.

    ``secret``: the body holds a secret (an invite link), so it is stored encrypted."""
    subject, text, html = mail.render(kind, context)
    if secret:
        text, html = seal(store, text), seal(store, html)
    now = utcnow()
    created = []
    for recipient in recipients:
        delivery_id = "%s:%s" % (key, recipient)
        doc = {"_id": delivery_id, "org_id": org_id, "kind": kind, "to": recipient, "subject": subject,
               "text": text, "html": html, "status": "queued", "attempts": 0, "attempt_log": [],
               "last_error": None, "created_at": now, "sent_at": None, "next_attempt_at": now,
               "lease_until": None, "lease_id": None, "sealed": bool(secret)}
        if store.insert_delivery(doc):
            created.append(delivery_id)
    return created


def seal(store, text):
    return store.cipher.encrypt(text.encode("utf-8")).decode("ascii")


def unseal(store, token):
    try:
        return store.cipher.decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise ValueError("stored mail cannot be decrypted (MAIL_SECRET_KEY changed?)")


def deliver(store, sender, policy, delivery_id):
    """Claim one due delivery and make one attempt; returns its status or None if not ours."""
    now = utcnow()
    doc = store.claim_delivery(delivery_id, now, policy.lease_seconds)
    if doc is None:
        return None
    attempts = doc.get("attempts", 0) + 1
    try:
        text, html = doc["text"], doc["html"]
        if doc.get("sealed"):
            text, html = unseal(store, text), unseal(store, html)
        message = mail.build_message(sender.sender, doc["to"], doc["subject"], text, html, delivery_id)
        sender.send(message, doc["to"])
    except mail.TemporaryFailure as error:
        outcome, reason = "temporary_failure", str(error)
    except (mail.PermanentFailure, ValueError) as error:
        outcome, reason = "permanent_failure", str(error)
    else:
        outcome, reason = "sent", None
    finished = utcnow()
    attempt = {"at": finished, "outcome": outcome, "error": reason}
    if outcome == "sent":
        fields = {"status": "sent", "sent_at": finished}
    elif outcome == "temporary_failure" and attempts < policy.max_attempts:
        fields = {"status": "queued", "last_error": reason,
                  "next_attempt_at": finished + timedelta(seconds=policy.backoff(attempts))}
    else:
        fields = {"status": "failed", "last_error": reason}
    if not store.finish_attempt(delivery_id, doc["lease_id"], fields, attempt):
        log.warning("lease on delivery %s expired during the attempt (%s)", delivery_id, outcome)
        return None
    if outcome != "sent":
        log.warning("mail %s attempt %d: %s %s", delivery_id, attempts, outcome, reason)
    return fields["status"]


def deliver_all(store, sender, policy, delivery_ids):
    for delivery_id in delivery_ids:
        try:
            deliver(store, sender, policy, delivery_id)
        except Exception:  # the dispatcher timer will retry; recording succeeded already
            log.exception("delivery %s could not be attempted", delivery_id)


def dispatch_due(store, sender, policy, limit=50):
    """What the dispatcher timer runs: every due queued mail, including ones a crash left behind."""
    ids = store.due_delivery_ids(utcnow(), limit)
    deliver_all(store, sender, policy, ids)
    return len(ids)
