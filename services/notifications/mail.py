"""Rendering mail from templates and talking SMTP.

Bodies come from ``templates/<kind>.txt`` (plain text) and ``templates/<kind>.html`` (HTML, Jinja2
autoescape on). Subjects are one-line templates below; every value that ends up in a header goes
through :func:`common.addresses.single_line`, and :func:`compose` (like ``email.policy.SMTP`` in
:func:`build_message`) refuses CR/LF in any header anyway, so a name or an organization name can
never add a header. A subject holding ``=?`` is itself RFC 2047 encoded (:func:`subject_header`), so
a name spelling encoded words reaches the reader as the literal text. From and To are bare
addresses (no display names), so no name reaches them.
"""
import binascii
import os
import smtplib
import ssl
import threading
import time
import uuid
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import SMTPUTF8 as SMTPUTF8_POLICY
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
    "organization_deleted": "{{ org_name }} has been deleted",
}

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


def subject_header(subject):
    """The Subject header's value, as ASCII: RFC 2047 encoded when the text is not ASCII *or* holds
    ``=?``. A name such as ``=?UTF-8?Q?...?=`` written raw would be decoded by every mail client
    (and by Python's own parser), showing text the name's author chose to hide; inside our encoded
    word it decodes to exactly the characters that were typed."""
    subject = single_line(subject)
    if subject.isascii() and "=?" not in subject:
        return subject
    return Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")


def build_message(sender, recipient, subject, text, html, delivery_id=None):
    """An ``EmailMessage`` (policy SMTP, CRLF) with a plain-text and an HTML alternative."""
    if not is_address(sender) or not is_address(recipient):
        raise ValueError("not a single plain mail address")
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = recipient
    # raw, already encoded: the email package would decode encoded words in a plain value and write
    # them back out unprotected (it never re-encodes text that merely looks like an encoded word)
    message.set_raw("Subject", subject_header(subject))
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[1])
    if delivery_id:
        message["X-Delivery-Id"] = single_line(delivery_id)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def compose(sender, recipient, subject, text, html, delivery_id=None):
    """The same message as :func:`build_message`, as the bytes to send (CRLF, quoted-printable).

    Written directly because ``email``'s header machinery costs about a millisecond per message,
    which is most of what the service spends on a mail. Every header value is one line (checked
    here, on top of ``single_line``); a non-ASCII subject is RFC 2047 encoded; the MIME boundary
    contains ``=_``, which quoted-printable output can never contain. Addresses outside ASCII take
    the ``email`` package's path (SMTPUTF8)."""
    if not is_address(sender) or not is_address(recipient):
        raise ValueError("not a single plain mail address")
    if not (sender + recipient).isascii():
        return build_message(sender, recipient, subject, text, html, delivery_id).as_bytes(policy=SMTPUTF8_POLICY)
    headers = [("From", sender), ("To", recipient), ("Subject", subject_header(subject)),
               ("Date", format_datetime(datetime.now(UTC))),
               ("Message-ID", make_msgid(domain=sender.rsplit("@", 1)[1]))]
    if delivery_id:
        headers.append(("X-Delivery-Id", single_line(delivery_id)))
    boundary = f"=_{uuid.uuid4().hex}"
    head = []
    for name, value in headers:
        if "\n" in value.replace("\r\n ", "") or "\r" in value.replace("\r\n ", ""):
            raise ValueError(f"line break in the {name} header")
        head.append(f"{name}: {value}")
    head += ["MIME-Version: 1.0", f"Content-Type: multipart/alternative; boundary=\"{boundary}\""]
    parts = [("\r\n".join(head) + "\r\n\r\n").encode("ascii")]
    for subtype, body in (("plain", text), ("html", html)):
        body = "\r\n".join(body.splitlines()) + "\r\n"
        parts.append((f"--{boundary}\r\nContent-Type: text/{subtype}; charset=\"utf-8\"\r\nContent-Transfer-Encoding: "
                      "quoted-printable\r\n\r\n").encode("ascii"))
        parts.append(binascii.b2a_qp(body.encode("utf-8"), istext=True) + b"\r\n")
    parts.append((f"--{boundary}--\r\n").encode("ascii"))
    return b"".join(parts)


class TemporaryFailure(Exception):
    """Worth retrying: a 4xx reply, a refused or dropped connection, a timeout."""


class PermanentFailure(Exception):
    """Retrying will not help: a 5xx reply, an unusable address."""


class SmtpSender:
    """Sends messages over a small pool of kept-open SMTP connections.

    At most ``pool_size`` connections are open at once; a connection idle for longer than
    ``idle_seconds`` is closed rather than reused. A kept connection the server dropped meanwhile
    shows at the first command of the next message (``MAIL FROM``, before anything of the message
    went out): that message then gets a fresh connection, so a stale connection never counts as a
    failed attempt. Any failure after ``MAIL FROM`` is the attempt's outcome and the connection is
    discarded."""

    def __init__(self, host="127.0.0.1", port=25, tls="none", username=None, password=None, timeout=10.0,
                 sender="no-reply@localhost", pool_size=4, idle_seconds=30.0):
        self.host, self.port = host, int(port)
        self.tls = (tls or "none").lower()
        if self.tls not in ("none", "starttls", "ssl"):
            raise ValueError("SMTP_TLS must be none, starttls or ssl")
        self.username, self.password = username or None, password or None
        self.timeout = float(timeout)
        self.sender = sender
        self.pool_size = max(1, int(pool_size))
        self.idle_seconds = float(idle_seconds)
        self._slots = threading.BoundedSemaphore(self.pool_size)
        self._idle = []  # (client, released at)
        self._idle_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings):
        return cls(host=settings.smtp_host, port=settings.smtp_port, tls=settings.smtp_tls,
                   username=settings.smtp_username, password=settings.smtp_password,
                   timeout=settings.smtp_timeout_seconds, sender=settings.mail_from,
                   pool_size=settings.smtp_pool_size, idle_seconds=settings.smtp_idle_seconds)

    def _connect(self):
        if self.tls == "ssl":
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
            client.ehlo_or_helo_if_needed()
            if self.username:
                client.login(self.username, self.password or "")
        except BaseException:
            _close(client)
            raise
        return client

    def _checkout(self):
        """A kept connection (reused=True) or None; stale ones are closed."""
        now = time.monotonic()
        with self._idle_lock:
            while self._idle:
                client, released = self._idle.pop()
                if now - released <= self.idle_seconds:
                    return client
                _close(client)
        return None

    def _checkin(self, client):
        with self._idle_lock:
            self._idle.append((client, time.monotonic()))

    def close(self):
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for client, _ in idle:
            _close(client)

    def send(self, message, recipient):
        """Deliver (``message``: bytes from :func:`compose`, or an ``EmailMessage``) or raise
        TemporaryFailure / PermanentFailure with the server's words."""
        data = message if isinstance(message, bytes) else message.as_bytes(policy=SMTP_POLICY)
        utf8 = not (self.sender + recipient).isascii()
        if utf8 and not isinstance(message, bytes):
            data = message.as_bytes(policy=SMTPUTF8_POLICY)
        with self._slots:
            client = None
            try:
                client = self._checkout()
                code, reply, client = self._mail_from(client, utf8)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, reply, self.sender)
                code, reply = client.rcpt(recipient)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
                code, reply = client.data(data)
                if code != 250:
                    raise smtplib.SMTPDataError(code, reply)
            except smtplib.SMTPRecipientsRefused as error:
                _discard(client)
                code, reply = next(iter(error.recipients.values()))
                raise _by_code(code, reply) from error
            except smtplib.SMTPResponseException as error:  # sender refused, data error, auth, ...
                _discard(client)
                raise _by_code(error.smtp_code, error.smtp_error) from error
            except (TimeoutError, smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as error:
                _discard(client)
                raise TemporaryFailure(f"{type(error).__name__}: {error}") from error
            except smtplib.SMTPException as error:
                _discard(client)
                raise PermanentFailure(f"{type(error).__name__}: {error}") from error
            except BaseException:
                _discard(client)
                raise
            self._checkin(client)

    def _mail_from(self, client, utf8):
        if client is not None:
            try:
                return self._mail_command(client, utf8) + (client,)
            except (smtplib.SMTPServerDisconnected, OSError):
                _close(client)  # dropped while idle: nothing of this message went out yet
        client = self._connect()
        try:
            return self._mail_command(client, utf8) + (client,)
        except BaseException:
            _close(client)
            raise

    def _mail_command(self, client, utf8):
        options = []
        if utf8:
            if not client.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError("the server does not accept non-ASCII addresses")
            options.append("SMTPUTF8")
        return client.mail(self.sender, options)


def _close(client):
    try:
        client.close()
    except Exception:
        pass


def _discard(client):
    """After a failed transaction the connection's state is unknown: never reuse it."""
    if client is not None:
        _close(client)


def _by_code(code, reply):
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    text = f"{code} {single_line(reply, limit=300)}"
    return TemporaryFailure(text) if 400 <= int(code) < 500 else PermanentFailure(text)
