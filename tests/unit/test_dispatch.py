"""The mail outbox's decisions on an in-memory store: what an attempt's outcome does to the mail,
and that notifications' purge waits for the deletion's confirmation mail."""
import pytest

from common.events import utcnow
from services.notifications import deletion, dispatch, mail


class Sender:
    """An SMTP sender that answers what it is told to."""
    sender = "no-reply@example.org"

    def __init__(self, *outcomes):
        self.outcomes, self.sent = list(outcomes), []

    def send(self, message, recipient):
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.sent.append(recipient)


def queued(store, org_id, kind="member_joined"):
    context = {"org_name": "Lab", "org_url": "u", "settings_url": "s", "member_name": "M",
               "member_email": "m@example.org", "role": "member", "via_invite": True, "org_id": org_id}
    return dispatch.enqueue(store, org_id, kind, f"e1:{kind}", ["to@example.org"], context, 30.0)


@pytest.fixture
def policy():
    return dispatch.DispatchPolicy(base_seconds=1, max_seconds=4, max_attempts=3, lease_seconds=30)


def test_a_temporary_failure_is_retried_with_backoff_until_the_attempts_run_out(notifications_store, policy,
                                                                                new_org_id):
    [entry] = queued(notifications_store, new_org_id)
    outgoing = dispatch.Outgoing(Sender(*[mail.TemporaryFailure("451 busy")] * 3), policy)
    assert dispatch.attempt(notifications_store, outgoing, entry) == "queued"
    entry = notifications_store.queue[entry["_id"]]
    assert (entry["due_at"] - utcnow()).total_seconds() == pytest.approx(1, abs=0.5)
    assert dispatch.attempt(notifications_store, outgoing, entry) == "queued"
    assert dispatch.attempt(notifications_store, outgoing, notifications_store.queue[entry["_id"]]) == "failed"
    assert notifications_store.queue == {}


def test_a_permanent_failure_fails_at_once(notifications_store, policy, new_org_id):
    [entry] = queued(notifications_store, new_org_id)
    outgoing = dispatch.Outgoing(Sender(mail.PermanentFailure("550 no such user")), policy)
    assert dispatch.attempt(notifications_store, outgoing, entry) == "failed"


def test_a_mail_is_recorded_once_per_key(notifications_store, new_org_id):
    assert len(queued(notifications_store, new_org_id)) == 1
    assert queued(notifications_store, new_org_id) == []  # a redelivered event records nothing


def test_the_purge_waits_for_the_deletion_confirmation_mail(notifications_store, policy, new_org_id):
    [entry] = queued(notifications_store, new_org_id, deletion.KIND)
    assert deletion.purge_when_mailed(notifications_store, new_org_id) is None
    assert notifications_store.purge_pending_ids() == [new_org_id]
    dispatch.attempt(notifications_store, dispatch.Outgoing(Sender(), policy), entry)
    deletion.purge_ready(notifications_store)
    assert notifications_store.was_purged(new_org_id) and notifications_store.purge_pending_ids() == []
    assert notifications_store.outbox.types() == ["organization_purged"]
