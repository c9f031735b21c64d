"""Fixed-window attempt counters (login, sign-up, invitations) kept in the store."""
import time
from datetime import timedelta

from common.errors import DomainError
from common.events import utcnow


class Counted:
    """What :func:`rate_limit` counted, so that a caller can give it back (:meth:`refund`)."""

    def __init__(self, store, start, expires, amount):
        self.store, self.start, self.expires, self.amount = store, start, expires, amount
        self.keys = []

    def refund(self, *keys):
        """Take back this request's count on ``keys`` (all counted keys if none are named)."""
        for key in keys or list(self.keys):
            if key in self.keys:
                self.store.count_attempt(key, self.start, self.expires, -self.amount)
                self.keys.remove(key)


def rate_limit(store, counters, window, message, amount=1, refund_refused=False):
    """Fixed-window counters in the database, so every replica enforces the same limit.

    ``counters`` is ``[(key, limit)]``, counted in that order; the first one over its limit
    refuses (429 + ``Retry-After``) and the keys after it are not counted at all: a refused
    request costs the key that refused it -- the attacker's address, say -- and nobody else. With
    ``refund_refused`` a refused request gives back what it counted (a batch that does not fit
    must not use up what is left of the window). Returns a :class:`Counted`.
    """
    now = time.time()
    start = int(now // window * window)
    counted = Counted(store, start, utcnow() + timedelta(seconds=2 * window), amount)
    for key, limit in counters:
        counted.keys.append(key)
        if store.count_attempt(key, start, counted.expires, amount) > limit:
            if refund_refused:
                counted.refund()
            raise DomainError("rate_limited", message, {"retry_after": max(1, int(start + window - now) + 1)})
    return counted


def check_login_rate(store, settings, email, client_address):
    """Per address first, then per email. An attempt the address limit refuses does not count
    against the email: otherwise anyone could lock a victim out for free, from an address that is
    itself already refused."""
    limits = []
    if client_address:
        limits.append(("addr:" + client_address, settings.login_limit_per_address))
    if email:
        limits.append(("email:" + email, settings.login_limit_per_email))
    return rate_limit(store, limits, settings.login_limit_window,
                      "too many login attempts, try again later")


def login_succeeded(counted, email):
    """A right password gives its count on the email back: the per-email limit is there against
    guessing, and should not lock out someone who simply logs in often (every tab, every device)."""
    if email:
        counted.refund("email:" + email)


def check_signup_rate(store, settings, client_address):
    """Every sign-up costs a password hash (and may store an account): bounded per address."""
    if not client_address:
        return None
    return rate_limit(store, [("signup-addr:" + client_address,
                               settings.signup_limit_per_address)],
                      settings.signup_limit_window, "too many sign-ups, try again later")
