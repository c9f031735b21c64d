"""The SMTP sender's connection pool, the fast message composer and the reply codes, against a real SMTP sink
(stack/smtp_sink.py's handler on a free port, started and stopped here)."""
import email
import email.policy
import os

import pymongo
import pytest
from aiosmtpd.controller import Controller

from services.notifications import dispatch, mail, preferences
from services.notifications.settings import NotificationsSettings
from services.notifications.store import NotificationsStore
from stack.smtp_sink import SaveToDirectory
from tests.support import Mail, free_port, wait_until

SENDER = "no-reply@orgplatform.localhost"


class Sink:
    def __init__(self, directory, port):
        self.directory, self.port = directory, port
        self.controller = None

    def start(self):
        self.controller = Controller(SaveToDirectory(self.directory), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        self.controller.stop()

    def mails(self):
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(".eml") and not n.startswith("."))
        result = []
        for name in names:
            with open(os.path.join(self.directory, name), "rb") as handle:
                result.append(Mail(handle.read()))
        return result


@pytest.fixture
def sink(tmp_path):
    running = Sink(str(tmp_path), free_port())
    running.start()
    yield running
    if running.controller is not None:
        try:
            running.stop()
        except Exception:
            pass


def message(index, subject="Hello", text="Plain text\nsecond line\n", html="<p>html</p>\n"):
    return mail.compose(SENDER, f"to-{index}@example.test", subject, text, html, f"delivery-{index}")


def test_composed_message_reads_like_the_email_package_one(sink):
    subject = "Grüße from Ünïcode Lab — a long subject " + "x" * 120
    text = "Line one\n. a line starting with a dot\nÜmlaut = equals sign\n" + "long " * 40 + "\n"
    html = '<p style="a">Hi &amp; welcome</p>\n'
    composed = email.message_from_bytes(mail.compose(SENDER, "to@example.test", subject, text, html, "id-1"),
                                        policy=email.policy.default)
    built = email.message_from_bytes(mail.build_message(SENDER, "to@example.test", subject, text, html,
                                                        "id-1").as_bytes(), policy=email.policy.default)
    for header in ("From", "To", "Subject", "X-Delivery-Id"):
        assert composed[header] == built[header], header
    for kind in ("plain", "html"):
        assert composed.get_body((kind,)).get_content() == built.get_body((kind,)).get_content()
    assert composed["Message-ID"] and composed["Date"]
    sender = mail.SmtpSender(port=sink.port, sender=SENDER)
    sender.send(mail.compose(SENDER, "to@example.test", subject, text, html, "id-1"), "to@example.test")
    [received] = wait_until(lambda: sink.mails(), what="the mail in the sink")
    assert received.subject == built["Subject"] and received.text == built.get_body(("plain",)).get_content()


def test_header_values_cannot_add_headers():
    raw = mail.compose(SENDER, "to@example.test", "Hi\r\nBcc: victim@example.test", "t", "h", "id\nX-Evil: 1")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head and b"\r\nX-Evil:" not in head
    with pytest.raises(ValueError):
        mail.compose(SENDER, "to@example.test\r\nBcc: victim@example.test", "s", "t", "h")


def test_connections_are_reused_and_a_dropped_one_is_replaced(sink):
    sender = mail.SmtpSender(port=sink.port, sender=SENDER, pool_size=2)
    for index in range(5):
        sender.send(message(index), f"to-{index}@example.test")
    assert len(sender._idle) == 1  # one after the other: one kept connection did it all
    # the server goes away and comes back: the kept connection is dead, the next mail still goes out
    sink.stop()
    sink.start()
    sender.send(message(5), "to-5@example.test")
    mails = wait_until(lambda: len(sink.mails()) == 6 and sink.mails(), what="six mails")
    assert sorted(m.message["X-Delivery-Id"] for m in mails) == sorted(f"delivery-{i}" for i in range(6))
    sender.close()


def test_server_down_is_a_temporary_failure_and_recovery_needs_no_restart(sink):
    sender = mail.SmtpSender(port=sink.port, sender=SENDER)
    sender.send(message(0), "to-0@example.test")
    sink.stop()
    with pytest.raises(mail.TemporaryFailure):
        sender.send(message(1), "to-1@example.test")
    sink.start()
    sender.send(message(2), "to-2@example.test")
    mails = wait_until(lambda: len(sink.mails()) == 2 and sink.mails(), what="two mails")
    assert sorted(m.message["X-Delivery-Id"] for m in mails) == ["delivery-0", "delivery-2"]


# -- the server's reply codes -------------------------------------------------------------------

class Refusing(SaveToDirectory):
    """The sink, except that it answers with the replies scripted per recipient (RCPT) or per
    message (DATA) first; every command it saw is counted so a test knows what was attempted."""

    def __init__(self, directory, at_rcpt=None, at_data=None):
        super().__init__(directory)
        self.at_rcpt = {address: list(replies) for address, replies in (at_rcpt or {}).items()}
        self.at_data = {address: list(replies) for address, replies in (at_data or {}).items()}
        self.rcpts = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpts.append(address)
        scripted = self.at_rcpt.get(address)
        if scripted:
            return scripted.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        scripted = self.at_data.get(envelope.rcpt_tos[0])
        if scripted:
            return scripted.pop(0)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def refusing(tmp_path):
    """Start a scripted server: ``refusing(at_rcpt={...}, at_data={...})`` -> (handler, port)."""
    controllers = []

    def start(**script):
        handler = Refusing(str(tmp_path), **script)
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        controllers.append(controller)
        return handler, controller.port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.mark.parametrize("stage,reply,failure", [
    ("at_rcpt", "451 4.3.0 mailbox busy, try later", mail.TemporaryFailure),
    ("at_rcpt", "550 5.1.1 no such user", mail.PermanentFailure),
    ("at_data", "451 4.7.1 greylisted", mail.TemporaryFailure),
    ("at_data", "554 5.7.1 rejected as spam", mail.PermanentFailure),
])
def test_reply_codes_decide_temporary_or_permanent(refusing, tmp_path, stage, reply, failure):
    """4xx means try again later, 5xx means give up: the dispatcher retries on exactly that."""
    handler, port = refusing(**{stage: {"to-0@example.test": [reply]}})
    sender = mail.SmtpSender(port=port, sender=SENDER)
    with pytest.raises(failure) as raised:
        sender.send(message(0), "to-0@example.test")
    assert str(raised.value).startswith(reply[:3]) and reply[4:] in str(raised.value)
    # the refused transaction's connection is not reused, and the next mail goes through
    sender.send(message(1), "to-1@example.test")
    received = wait_until(lambda: Sink(str(tmp_path), port).mails(), what="the next mail")
    assert [m.message["X-Delivery-Id"] for m in received] == ["delivery-1"]
    sender.close()


# -- reply codes through the outbox (real store on the test stack's database) ----------------------

@pytest.fixture
def outbox_store(test_stack):
    """A notifications store on a database of its own, dropped afterwards."""
    client = pymongo.MongoClient(test_stack.mongo_url, tz_aware=True)
    name = f"{test_stack.db_prefix}sender_{os.urandom(4).hex()}"
    store = NotificationsStore(client[name])
    store.ensure_indexes()
    yield store
    client.drop_database(name)
    client.close()


def test_permanent_refusal_fails_at_once_and_temporary_ones_are_retried(refusing, outbox_store, tmp_path):
    """550: one attempt, failed. 451 twice then accepted: sent on the third attempt. 451 forever:
    failed after the policy's attempts, with the server's words as the last error."""
    rejected, greylisted, busy = "rejected@example.test", "greylisted@example.test", "busy@example.test"
    handler, port = refusing(at_rcpt={rejected: ["550 5.1.1 no such user"],
                                      greylisted: ["451 4.7.1 greylisted"] * 2,
                                      busy: ["451 4.3.0 mailbox busy"] * 100})
    sender = mail.SmtpSender(port=port, sender=SENDER)
    policy = dispatch.DispatchPolicy(base_seconds=0.1, max_seconds=0.4, max_attempts=4, lease_seconds=30)
    org_id = f"org-{os.urandom(4).hex()}"
    context = {"org_name": "Reply Lab", "org_url": "http://x.test/o", "settings_url": "http://x.test/s",
               "member_name": "Rita", "member_email": "rita@example.test", "role": "member", "via_invite": True}
    outgoing = dispatch.Outgoing(sender, policy)
    recorded = dispatch.enqueue(outbox_store, org_id, "member_joined", "event-1:member_joined",
                                [rejected, greylisted, busy], context, policy.lease_seconds)
    assert len(recorded) == 3
    dispatch.send_recorded(outbox_store, outgoing, recorded)

    def by_recipient():
        return {d["to"]: d for d in preferences.list_deliveries(outbox_store, org_id, limit=50)["items"]}

    def final():  # what the dispatcher timer does, until no mail is queued any more
        dispatch.dispatch_due(outbox_store, outgoing)
        view = by_recipient()
        return len(view) == 3 and all(d["status"] != "queued" for d in view.values()) and view
    view = wait_until(final, timeout=20, what="every mail final")
    assert (view[rejected]["status"], view[rejected]["attempts"]) == ("failed", 1)
    assert view[rejected]["last_error"].startswith("550")
    assert [a["outcome"] for a in view[rejected]["attempt_log"]] == ["permanent_failure"]
    assert (view[greylisted]["status"], view[greylisted]["attempts"]) == ("sent", 3)
    assert [a["outcome"] for a in view[greylisted]["attempt_log"]] == ["temporary_failure"] * 2 + ["sent"]
    assert view[greylisted]["last_error"].startswith("451")
    assert (view[busy]["status"], view[busy]["attempts"]) == ("failed", policy.max_attempts)
    assert view[busy]["last_error"].startswith("451")
    # what the server saw: the refused address once, the greylisted one three times
    assert handler.rcpts.count(rejected) == 1 and handler.rcpts.count(greylisted) == 3
    assert handler.rcpts.count(busy) == policy.max_attempts
    [received] = Sink(str(tmp_path), port).mails()
    assert received.rcpt_to == [greylisted]
    sender.close()


def test_backoff_doubles_from_the_base_up_to_the_cap():
    """The policy the outbox waits by between attempts (the e2e outage test checks the real gaps)."""
    policy = dispatch.DispatchPolicy(base_seconds=30, max_seconds=3600, max_attempts=8)
    assert [policy.backoff(n) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    configured = dispatch.DispatchPolicy.from_settings(NotificationsSettings.from_file(
        MAIL_RETRY_BASE_SECONDS="0.5", MAIL_RETRY_MAX_SECONDS="2", MAIL_MAX_ATTEMPTS="6"))
    assert [configured.backoff(n) for n in range(1, 6)] == [0.5, 1, 2, 2, 2] and configured.max_attempts == 6
