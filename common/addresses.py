"""One mail address, checked the same way wherever one enters the system (a form, an event).

Deliberately stricter than RFC 5322: exactly one bare ``local@domain`` address, no display name,
no comments, no list, no whitespace or control characters -- so an address can never smuggle a
second recipient or a header into a message.
"""
import re

_ADDRESS = re.compile(r"^[^@\s\x00-\x1f\x7f<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LENGTH = 254


def is_address(value):
    """True for one plain address (``a.b+tag@example.org``); never raises."""
    return (isinstance(value, str) and len(value) <= MAX_LENGTH and not _CONTROL.search(value)
            and _ADDRESS.match(value) is not None)


def normalize_address(value):
    """The address trimmed and lower-cased, or None if it is not exactly one plain address."""
    if not isinstance(value, str) or _CONTROL.search(value):
        return None  # a CR/LF is an injection attempt, not whitespace to trim
    value = value.strip()
    return value.lower() if is_address(value) else None


def single_line(value, limit=200):
    """Text that is safe in a header: control characters (CR, LF, ...) become spaces, length capped."""
    text = " ".join(_CONTROL.sub(" ", str(value or "")).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
