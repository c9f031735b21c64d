"""The SMTP sender's connection pool and the fast message composer, against a real SMTP sink
(stack/smtp_sink.py's handler on a free port, started and stopped here)."""
import email
import email.policy
import os
import socket

import pytest
from aiosmtpd.controller import Controller

from services.notifications import mail
from stack.smtp_sink import SaveToDirectory
from tests.support import Mail, wait_until

SENDER = "no-reply@orgplatform.localhost"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    return mail.compose(SENDER, "to-%d@example.test" % index, subject, text, html, "delivery-%d" % index)


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
        sender.send(message(index), "to-%d@example.test" % index)
    assert len(sender._idle) == 1  # one after the other: one kept connection did it all
    # the server goes away and comes back: the kept connection is dead, the next mail still goes out
    sink.stop()
    sink.start()
    sender.send(message(5), "to-5@example.test")
    mails = wait_until(lambda: len(sink.mails()) == 6 and sink.mails(), what="six mails")
    assert sorted(m.message["X-Delivery-Id"] for m in mails) == sorted("delivery-%d" % i for i in range(6))
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
