"""The mail outbox: record first, send after, retry with backoff, log every attempt.

A mail is recorded as a ``mail_queue`` entry (recipient, subject, bodies, lease) plus a
``deliveries`` log entry, both with ``_id = "<key>:<recipient>"`` where ``key`` identifies the cause
(an event id, a reminder's ``paid_until``): a redelivered event or a second replica finds the mail
already there and records nothing. The entry is created already leased (``lease_id``, ``due_at`` =
the lease's end) to the handler that recorded it, which sends it right away. Every attempt is a
``delivery_attempts`` document ``<id>#<n>`` (unique: one outcome per attempt, whoever sends). A
temporary failure (4xx reply, refused connection, timeout) moves the entry's ``due_at`` by an
exponential backoff until ``MAIL_MAX_ATTEMPTS``; a permanent one (5xx) fails at once; a final
outcome deletes the entry. If the process dies anywhere between recording and sending, the entry
stays until its lease ends; then the dispatcher timer (which scans only ``mail_queue``) claims it
with a fresh lease and sends it.
"""
import logging
import uuid
from datetime import timedelta

from cryptography.fernet import InvalidToken

from common import context as work  # the request and event id of the work in hand
from common import metrics
from common.events import utcnow
from services.notifications import mail

log = logging.getLogger(__name__)

#: mail about an organization that no longer exists (its deletion completed): once final, its log
#: entry and attempts are deleted too, so the organization leaves nothing behind
EPHEMERAL_KINDS = ("organization_deleted",)


class DispatchPolicy:
    def __init__(self, base_seconds=30.0, max_seconds=3600.0, max_attempts=8, lease_seconds=120.0):
        self.base_seconds = float(base_seconds)
        self.max_seconds = float(max_seconds)
        self.max_attempts = int(max_attempts)
        self.lease_seconds = float(lease_seconds)

    @classmethod
    def from_settings(cls, settings):
        return cls(base_seconds=settings.mail_retry_base_seconds, max_seconds=settings.mail_retry_max_seconds,
                   max_attempts=settings.mail_max_attempts, lease_seconds=settings.mail_lease_seconds)

    def backoff(self, attempts):
        """Delay before attempt ``attempts + 1``: base, 2*base, 4*base, ... capped."""
        return min(self.base_seconds * 2 ** (attempts - 1), self.max_seconds)


class Outgoing:
    """What sending needs besides the store, built once per process (the service's ``Mailer``):
    the SMTP sender, the retry policy and the cipher sealing bodies that hold a secret."""

    def __init__(self, sender, policy, cipher=None):
        self.sender, self.policy, self.cipher = sender, policy, cipher


def enqueue(store, org_id, kind, key, recipients, context, lease_seconds, cipher=None):
    """Record one mail per recipient (idempotent by ``key``), leased to the caller for
    ``lease_seconds``; returns the queue entries now recorded by us, for :func:`send_recorded`.

    ``cipher``: the body holds a secret (an invite link), so it is stored sealed with it."""
    if not recipients:
        return []
    subject, text, html = mail.render(kind, context)
    secret = cipher is not None
    if secret:
        text, html = seal(cipher, text), seal(cipher, html)
    now = utcnow()
    created = []
    for recipient in recipients:
        delivery_id = f"{key}:{recipient}"
        log_doc = {"_id": delivery_id, "org_id": org_id, "kind": kind, "to": recipient, "subject": subject,
                   "created_at": now,
                   # what caused it: the request (X-Request-ID) behind the event, and the event
                   "request_id": work.request_id(), "event_id": work.event_id()}
        entry = dict(log_doc, text=text, html=html, sealed=bool(secret), attempts=0,
                     due_at=now + timedelta(seconds=lease_seconds), lease_id=uuid.uuid4().hex)
        if store.record_delivery(entry, log_doc):
            created.append(entry)
    return created


def seal(cipher, text):
    return cipher.encrypt(text.encode("utf-8")).decode("ascii")


def unseal(cipher, token):
    try:
        return cipher.decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise ValueError("stored mail cannot be decrypted (MAIL_SECRET_KEY changed?)") from None


def attempt(store, outgoing, entry):
    """One attempt at a queued mail whose lease we hold; returns its status (queued, sent,
    failed), or None if this attempt was recorded by someone else meanwhile (lease ran out)."""
    sender, policy = outgoing.sender, outgoing.policy
    delivery_id = entry["_id"]
    attempts = entry.get("attempts", 0) + 1
    try:
        text, html = entry["text"], entry["html"]
        if entry.get("sealed"):
            text, html = unseal(outgoing.cipher, text), unseal(outgoing.cipher, html)
        message = mail.compose(sender.sender, entry["to"], entry["subject"], text, html, delivery_id)
    except Exception as error:  # composing is deterministic: another attempt would fail the same way
        message, outcome, reason = None, "permanent_failure", f"cannot be composed: {type(error).__name__}: {error}"
    if message is not None:
        try:
            sender.send(message, entry["to"])
        except mail.TemporaryFailure as error:
            outcome, reason = "temporary_failure", str(error)
        except (mail.PermanentFailure, ValueError) as error:
            outcome, reason = "permanent_failure", str(error)
        else:
            outcome, reason = "sent", None
    metrics.MAIL.labels(outcome).inc()
    finished = utcnow()
    record = {"at": finished, "outcome": outcome, "error": reason, "next_attempt_at": None}
    if outcome == "sent":
        record["status"] = "sent"
    elif outcome == "temporary_failure" and attempts < policy.max_attempts:
        record.update(status="queued", next_attempt_at=finished + timedelta(seconds=policy.backoff(attempts)))
    else:
        record["status"] = "failed"
    if not store.finish_attempt(entry, record):
        log.warning("lease on delivery %s expired during the attempt (%s)", delivery_id, outcome)
        return None
    if record["status"] != "queued" and entry.get("kind") in EPHEMERAL_KINDS:
        store.forget_delivery(delivery_id)  # final: nothing of a deleted organization stays behind
    if outcome != "sent":
        log.warning("mail %s attempt %d: %s %s", delivery_id, attempts, outcome, reason)
    return record["status"]


def send_recorded(store, outgoing, entries):
    """Send the mail just recorded (and leased) by this handler."""
    for entry in entries:
        try:
            attempt(store, outgoing, entry)
        except Exception:  # recorded already: the dispatcher sends it once the lease expires
            log.exception("delivery %s could not be attempted", entry["_id"])


def deliver(store, outgoing, delivery_id):
    """Claim one due queue entry and make one attempt; returns its status or None if not ours."""
    entry = store.claim_delivery(delivery_id, utcnow(), outgoing.policy.lease_seconds)
    if entry is None:
        return None
    # a crash may have come between the entry and the log entry: the log must show this mail
    store.ensure_logged({key: entry[key] for key in ("_id", "org_id", "kind", "to", "subject", "created_at",
                                                     "ordinal", "pk") if key in entry})
    status = attempt(store, outgoing, entry)
    if store.was_purged(entry["org_id"]):  # the attempt raced the organization's purge
        store.scrub(entry["org_id"])
    return status


def dispatch_due(store, outgoing, limit=50):
    """What the dispatcher timer runs: retries whose backoff is over, and mail a crash left leased
    past its lease. Scans only ``mail_queue`` (unfinished mail)."""
    entries = store.due_queue(utcnow(), limit)
    for entry in entries:
        try:
            deliver(store, outgoing, entry["_id"])
        except Exception:  # the next tick tries again
            log.exception("delivery %s could not be attempted", entry["_id"])
    return len(entries)


def delivery_view(log_doc, attempts):
    """A log entry as the API shows it, its state derived from its attempts."""
    view = dict(log_doc, attempts=len(attempts), status="queued", last_error=None, sent_at=None,
                attempt_log=[{"at": a["at"], "outcome": a["outcome"], "error": a.get("error")} for a in attempts])
    for doc in attempts:
        view["status"] = doc["status"]
        if doc.get("error"):
            view["last_error"] = doc["error"]
        if doc["outcome"] == "sent":
            view["sent_at"] = doc["at"]
    return view
