"""What a person types when signing up: their address, name and password.

The address rule is the platform's one rule (``common/addresses.py``): an address accepted here is
one the notifications side can mail (an invite to an address it refuses would never be sent).
"""
import re

from common.addresses import normalize_address
from common.errors import DomainError

MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalize_email(email):
    """Emails are unique case-insensitively; we store them lower-cased and trimmed."""
    normalized = normalize_address(email)
    if normalized is None:
        raise DomainError("validation_failed", "invalid input", {"email": ["Not a valid email address."]})
    return normalized


def clean_person_name(name):
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100 or _CONTROL.search(name):
        raise DomainError("validation_failed", "invalid input",
                          {"name": ["Must be 1-100 characters without control characters."]})
    return name.strip()


def check_password(password, field="password"):
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise DomainError("validation_failed", "invalid input",
                          {field: [f"Must be {MIN_PASSWORD}-{MAX_PASSWORD} characters."]})
