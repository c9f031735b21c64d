"""Rendering mail from templates and talking SMTP.

Bodies come from ``templates/<kind>.txt`` (plain text) and ``templates/<kind>.html`` (HTML, Jinja2
autoescape on). Subjects are one-line templates below; every value that ends up in a header goes
through :func:`common.addresses.single_line` and ``email.policy.SMTP`` refuses CR/LF in any header
anyway, so a name or an organization name can never add a header.
"""
import os
import smtplib
import socket
import ssl
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from common.addresses import is_address, single_line

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")

SUBJECTS = {
    "invite": "You are invited to join {{ org_name }}",
    "member_joined": "{{ member_name }} joined {{ org_name }}",
    "plan_changed": "{{ org_name }}: plan changed to {{ new_plan.name }}",
    "plan_expiring": "{{ org_name }}: your {{ plan.name }} plan ends on {{ paid_until_date }}",
    "plan_expired": "{{ org_name }}: your {{ plan.name }} plan has expired",
    "storage_limit_exceeded": "{{ org_name }}: storage limit exceeded",
    "member_limit_exceeded": "{{ org_name }}: member limit exceeded",
    "ai_job_completed": "{{ org_name }}: AI job {{ job_type }} {{ outcome }}",
    "organization_deletion_requested": "{{ org_name }} is being deleted",
}
KINDS = tuple(SUBJECTS)

_text = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=False, undefined=StrictUndefined,
                    keep_trailing_newline=True)
_html = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                    undefined=StrictUndefined)
_subjects = {kind: _text.from_string(source) for kind, source in SUBJECTS.items()}


def render(kind, context):
    """``(subject, text, html)`` for a mail of ``kind``."""
    subject = single_line(_subjects[kind].render(context), limit=200)
    text = _text.get_template(kind + ".txt").render(context)
    html = _html.get_template(kind + ".html").render(context)
    return subject, text, html


def build_message(sender, recipient, subject, text, html, delivery_id=None):
    """An ``EmailMessage`` (policy SMTP, CRLF) with a plain-text and an HTML alternative."""
    if not is_address(sender) or not is_address(recipient):
        raise ValueError("not a single plain mail address")
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = single_line(subject)
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[1])
    if delivery_id:
        message["X-Delivery-Id"] = single_line(delivery_id)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class TemporaryFailure(Exception):
    """Worth retrying: a 4xx reply, a refused or dropped connection, a timeout."""


class PermanentFailure(Exception):
    """Retrying will not help: a 5xx reply, an unusable address."""


class SmtpSender:
    """Sends one message per connection (mail volume is low; no connection to keep healthy)."""

    def __init__(self, host="127.0.0.1", port=25, tls="none", username=None, password=None, timeout=10.0,
                 sender="no-reply@localhost"):
        self.host, self.port = host, int(port)
        self.tls = (tls or "none").lower()
        if self.tls not in ("none", "starttls", "ssl"):
            raise ValueError("SMTP_TLS must be none, starttls or ssl")
        self.username, self.password = username or None, password or None
        self.timeout = float(timeout)
        self.sender = sender

    @classmethod
    def from_config(cls, config):
        return cls(host=config.get("SMTP_HOST") or "127.0.0.1", port=config.get("SMTP_PORT") or 25,
                   tls=str(config.get("SMTP_TLS") or "none"), username=config.get("SMTP_USERNAME"),
                   password=config.get("SMTP_PASSWORD"), timeout=config.get("SMTP_TIMEOUT_SECONDS") or 10,
                   sender=str(config.get("MAIL_FROM") or "no-reply@localhost"))

    def _connect(self):
        if self.tls == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=ssl.create_default_context())
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.tls == "starttls":
            client.starttls(context=ssl.create_default_context())
        return client

    def send(self, message, recipient):
        """Deliver or raise TemporaryFailure / PermanentFailure with the server's words."""
        try:
            client = self._connect()
            try:
                if self.username:
                    client.login(self.username, self.password or "")
                refused = client.send_message(message, from_addr=self.sender, to_addrs=[recipient])
                if refused:
                    code, reply = refused[recipient]
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
            finally:
                try:
                    client.quit()
                except (smtplib.SMTPException, OSError):
                    client.close()
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            raise _by_code(code, reply)
        except smtplib.SMTPResponseException as error:  # sender refused, data error, auth, ...
            raise _by_code(error.smtp_code, error.smtp_error)
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, socket.timeout, OSError) as error:
            raise TemporaryFailure("%s: %s" % (type(error).__name__, error))
        except smtplib.SMTPException as error:
            raise PermanentFailure("%s: %s" % (type(error).__name__, error))


def _by_code(code, reply):
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    text = "%s %s" % (code, single_line(reply, limit=300))
    return TemporaryFailure(text) if 400 <= int(code) < 500 else PermanentFailure(text)
