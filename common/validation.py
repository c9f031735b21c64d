"""Input rules that the gateway and every service apply the same way (issue 12, item 4).

Each rule here closes a way that well-formed JSON could still crash a request with a 500:

* **Text.** JSON can spell a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it into a ``str``
  that is no Unicode text and cannot be encoded as UTF-8, so the first database write or mail
  using it raised. :func:`bad_text_path` finds such a string anywhere in a decoded document.
* **Moments.** ``0001-01-01T00:00:00+14:00`` parses, but converting it to UTC overflows, and
  year-1 dates broke later arithmetic (a reminder six weeks earlier). :func:`bounded_moment` accepts
  only aware moments inside :data:`EARLIEST` .. :data:`LATEST` after conversion to UTC.
* **Cursors.** A cursor is opaque to clients but is decoded by the service: every tampered shape
  (other JSON, wrong length, wrong types, out-of-range numbers) must be a 422 on ``cursor``, never a
  ``TypeError`` or a BSON ``OverflowError``. :func:`encode_sequence` / :func:`decode_sequence` are the one
  cursor of every list (a position in the organization's sequence).

Everything raises ``DomainError("validation_failed")`` with details naming the field.
"""
import functools
import inspect
import re
from datetime import UTC, datetime

from pymongo.errors import ConnectionFailure

from common.errors import DomainError

# lone surrogates (no UTF-8 for them) and NUL (PostgreSQL, under the embedded FerretDB, stores no
# U+0000 in text: a query holding one failed with a 500)
_SURROGATE = re.compile("[\ud800-\udfff\x00]")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
INT64_MAX = 2 ** 63 - 1
TEXT_MESSAGE = "Must be valid Unicode text (no lone surrogates, no NUL characters)."
CURSOR_MESSAGE = "Not a valid cursor."
_SEQUENCE = re.compile(r"[1-9][0-9]{0,18}")


def invalid(field, message):
    return DomainError("validation_failed", "invalid input", {field: [message]})


def is_text(value):
    """True for a ``str`` of Unicode scalar values (encodable as UTF-8) without NUL."""
    return isinstance(value, str) and not _SURROGATE.search(value)


def bad_text_path(value, path=()):
    """The path (keys and indexes) to the first string -- value or key -- that is not Unicode text,
    or None. Walked iteratively: the document may be nested as deep as the JSON parser allowed."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not is_text(item):
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not is_text(key):
                    return where + (key,)
                stack.append((child, where + (key,)))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, where + (index,)) for index, child in enumerate(item))
    return None


def require_text_everywhere(fields):
    """Refuse (422) if any value of ``fields`` (name -> decoded JSON) holds a string that is not
    Unicode text; the details name the top-level field (``_schema`` if the bad string is a key)."""
    for name, value in fields.items():
        if bad_text_path(value) is not None:
            raise invalid(name if is_text(name) else "_schema", TEXT_MESSAGE)
        if not is_text(name):
            raise invalid("_schema", TEXT_MESSAGE)


def checked_rpc(method):
    """``@rpc`` (DomainError expected) for a service method that first refuses arguments holding
    text that is not Unicode: services do not rely on the gateway having checked. The method's own
    signature is kept, so nameko still answers a call with wrong arguments ``IncorrectSignature``.
    A lost database connection is a 503 ``service_unavailable``, never a 500."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def entry(self, *args, **kwargs):
        try:
            arguments = signature.bind(self, *args, **kwargs).arguments
        except TypeError:
            return method(self, *args, **kwargs)  # let the call fail the way it always did
        arguments.pop(next(iter(signature.parameters)), None)  # self
        require_text_everywhere(arguments)
        try:
            return method(self, *args, **kwargs)
        except ConnectionFailure:
            # the database is restarting or unreachable: "try again", like a service that does not
            # answer (a pooled connection to a restarted server fails at once, not after a timeout)
            raise DomainError("service_unavailable", "the database is unavailable, try again shortly",
                              {"retry_after": 1}) from None

    entry.__signature__ = signature
    return _ReplyTolerantRpc.decorator(expected_exceptions=DomainError)(entry)


def _reply_tolerant_rpc():
    """nameko's ``Rpc`` entrypoint, except that a reply that cannot be sent because the broker
    connection just broke is logged, not raised: nameko kills the whole service container when
    sending a reply fails, and a broker restart with a call in flight then left the org service dead
    (fresh-clone CI). The request stays unacknowledged, so the broker redelivers it; the caller has
    had its RPC timeout (503) meanwhile."""
    import logging

    from amqp.exceptions import RecoverableConnectionError
    from kombu.exceptions import OperationalError
    from nameko.rpc import Rpc

    log = logging.getLogger(__name__)

    class ReplyTolerantRpc(Rpc):
        def handle_result(self, message, worker_ctx, result, exc_info):
            try:
                return super().handle_result(message, worker_ctx, result, exc_info)
            except (OSError, OperationalError, RecoverableConnectionError) as error:
                log.warning("reply to %s not sent, the broker connection broke (%s); it will be redelivered",
                            worker_ctx.entrypoint.method_name, error)
                return result, exc_info

    return ReplyTolerantRpc


_ReplyTolerantRpc = _reply_tolerant_rpc()


# -- moments -----------------------------------------------------------------------------------

def bounded_moment(value, field, earliest=EARLIEST, latest=LATEST):
    """An aware UTC ``datetime`` from an ISO 8601 string (or a datetime), else a 422 on ``field``:
    unparseable, without a timezone, or outside ``earliest`` .. ``latest`` once converted to UTC
    (the conversion itself overflows for year 1 with a positive offset, or year 9999 with a
    negative one). None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and is_text(value) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise invalid(field, "Not a valid datetime.") from None
    else:
        raise invalid(field, "Not a valid datetime.")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise invalid(field, "Must include a timezone.")
    message = f"Must be between {earliest.isoformat()} and {latest.isoformat()}."
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise invalid(field, message) from None
    if not earliest <= moment <= latest:
        raise invalid(field, message)
    return moment


# -- cursors -----------------------------------------------------------------------------------

def encode_sequence(number):
    """The one cursor shape of every list (members, deliveries, the ledger): the last item's
    position in its organization's sequence (``common/pages.py``), written as a decimal integer."""
    return str(number)


def decode_sequence(cursor, field="cursor"):
    """A ledger position: a decimal integer 1 .. 2^63-1 (BSON int64), written plainly (no sign,
    spaces, underscores or non-ASCII digits, all of which ``int()`` would take)."""
    if not isinstance(cursor, str) or not _SEQUENCE.fullmatch(cursor) or int(cursor) > INT64_MAX:
        raise invalid(field, CURSOR_MESSAGE)
    return int(cursor)
