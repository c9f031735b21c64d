"""The console's session: a sealed cookie, and the CSRF token bound to it.

Why sealed and not stored: the gateway keeps nothing persistent (every replica and worker must
serve every request), so the session travels in the cookie. It holds the access and refresh
tokens, so it is *encrypted and authenticated* (AES-256-GCM under ``CONSOLE_SESSION_KEY``), not
just signed: whoever sees the cookie value (a proxy log, a copied header) learns nothing and
cannot change it. The cookie is ``HttpOnly`` (no script, ours or injected, can read a token),
``SameSite=Lax`` (a cross-site form post arrives without it) and ``Secure`` whenever the console
is served over https.

CSRF: a random secret lives inside the sealed session (anonymous visitors get one too, so the
login and sign-up forms are protected as well); every form carries it and every state-changing
request must present it (:func:`check_csrf`). An attacker's page can neither read the cookie nor
our pages, so it cannot know the value. The ``Origin`` header, when the browser sends one, must be
our own origin as a second, independent check.
"""
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("gateway.console")

COOKIE = "console_session"
_AAD = b"orgplatform console session v1"


class Sealer:
    """Encrypts a small JSON document into a cookie value and back (``None`` if tampered with)."""

    def __init__(self, secret):
        if not secret:
            # a gateway started by hand: sessions then work only within this worker process
            log.warning("CONSOLE_SESSION_KEY is empty: console sessions are sealed with a random "
                        "key of this process (set it, the same on every gateway, in production)")
            secret = secrets.token_hex(32)
        self._aead = AESGCM(hashlib.sha256(secret.encode()).digest())

    def seal(self, data):
        nonce = os.urandom(12)
        blob = self._aead.encrypt(nonce, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(), _AAD)
        return base64.urlsafe_b64encode(nonce + blob).decode().rstrip("=")

    def open(self, value):
        if not value or len(value) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            data = json.loads(self._aead.decrypt(raw[:12], raw[12:], _AAD))
        except Exception:  # any garbage, truncation or tampering: no session
            return None
        return data if isinstance(data, dict) else None


class Session(dict):
    """The request's session. Keys: ``a``/``r`` access and refresh token, ``c`` CSRF secret,
    ``n`` the user's display name, ``m`` the avatar menu's data (see ``views.me``), ``f`` a one-time message,
    ``d``/``dn`` the deletion receipt and
    the deleted organization's name (the progress page outlives the organization's tokens)."""

    def __init__(self, data=None):
        super().__init__(data or {})
        self.changed = False
        if "c" not in self:
            self["c"] = secrets.token_urlsafe(24)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.changed = True

    def pop(self, key, default=None):
        if key in self:
            self.changed = True
        return super().pop(key, default)

    def log_out(self):
        """Forget the tokens (and rotate the CSRF secret: a new identity gets a new one)."""
        for key in ("a", "r", "n"):
            self.pop(key)
        self["c"] = secrets.token_urlsafe(24)

    @property
    def csrf_token(self):
        return self["c"]

    def csrf_ok(self, presented):
        return isinstance(presented, str) and hmac.compare_digest(presented.encode(), self["c"].encode())

    def flash(self, message, kind="ok"):
        self["f"] = [kind, message]

    def take_flash(self):
        value = self.pop("f")
        return tuple(value) if isinstance(value, list) and len(value) == 2 else None
