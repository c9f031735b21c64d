"""Passwords (argon2id) and token signing (EdDSA JWTs), as nameko dependencies.

Argon2 is deliberately slow; it runs in eventlet's OS thread pool so one login does not stall
every other request the service is handling. At most ``ARGON2_CONCURRENCY`` hashes (default: the
number of cores) run at once: each holds ``ARGON2_MEMORY_KIB`` (64 MiB by default), and hashing is
CPU-bound, so the 20 threads of that pool hashing at once would only multiply the memory (1.3 GB)
without finishing any sooner; further logins wait their turn.
"""
import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from eventlet import tpool
from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider

from common.tokens import key_id
from services.membership.keys import load_private_key, public_pem


def token_hash(token):
    """Refresh and invite tokens are stored only as this hash (they carry >=256 random bits)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret_token():
    return secrets.token_urlsafe(32)


class Passwords:
    def __init__(self, time_cost=3, memory_kib=65536, concurrency=None):
        self.hasher = PasswordHasher(time_cost=int(time_cost), memory_cost=int(memory_kib))
        self._dummy = self.hasher.hash(secrets.token_hex(16))
        self._slots = Semaphore(int(concurrency or os.cpu_count() or 2))

    def _run(self, function, *args):
        with self._slots:
            return tpool.execute(function, *args)

    def hash(self, password):
        return self._run(self.hasher.hash, password)

    def verify(self, password_hash, password):
        """Constant work whether or not the account exists (``password_hash`` None)."""
        try:
            return self._run(self.hasher.verify, password_hash or self._dummy, password) \
                and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False


class TokenIssuer:
    def __init__(self, private_key_file, retired_key_files=(), issuer="orgplatform", access_ttl=900):
        self.private_key = load_private_key(private_key_file)
        self.public_key_pem = public_pem(self.private_key)
        self.kid = key_id(self.public_key_pem)
        self.issuer = issuer
        self.access_ttl = int(access_ttl)
        self.published = {self.kid: self.public_key_pem}
        for path in retired_key_files:
            pem = public_pem(load_private_key(path))
            self.published[key_id(pem)] = pem

    def access_token(self, user_id, org_id, role, is_owner, is_superuser, session_id):
        # iat keeps milliseconds (RFC 7519 allows fractions) so a revocation's not_before can void
        # tokens issued before it without voiding those issued a moment after it
        now = round(time.time(), 3)
        claims = {"iss": self.issuer, "sub": user_id, "org": org_id, "role": role,
                  "owner": bool(is_owner), "su": bool(is_superuser), "sid": session_id,
                  "jti": uuid.uuid4().hex, "iat": now, "exp": int(now) + self.access_ttl}
        token = jwt.encode(claims, self.private_key, algorithm="EdDSA", headers={"kid": self.kid})
        return token, self.access_ttl


class SecurityProvider(DependencyProvider):
    """Injects ``Security(passwords, tokens)`` built once from the service config."""

    def setup(self):
        config = self.container.config
        retired = [p.strip() for p in str(config.get("JWT_RETIRED_KEY_FILES") or "").split(",") if p.strip()]
        self.security = Security(
            Passwords(config.get("ARGON2_TIME_COST", 3), config.get("ARGON2_MEMORY_KIB", 65536),
                      config.get("ARGON2_CONCURRENCY")),
            TokenIssuer(config["JWT_PRIVATE_KEY_FILE"], retired, config.get("JWT_ISSUER", "orgplatform"),
                        config.get("ACCESS_TOKEN_TTL", 900)),
            int(config.get("REFRESH_TOKEN_TTL", 2592000)))

    def get_dependency(self, worker_ctx):
        return self.security


class Security:
    def __init__(self, passwords, tokens, refresh_ttl):
        self.passwords = passwords
        self.tokens = tokens
        self.refresh_ttl = refresh_ttl


class InviteTokens:
    """Invite tokens are derived from the invite id with a server secret (HMAC-SHA256, 256 bits).

    The database keeps only the token's hash; the token itself can be re-derived when the
    ``invite_created`` event is published, so not even the outbox holds it in plain text.
    """

    def __init__(self, secret, public_base_url):
        self.secret = secret
        self.public_base_url = public_base_url.rstrip("/")

    @classmethod
    def from_config(cls, config):
        secret = config.get("INVITE_TOKEN_SECRET")
        if secret:
            secret = str(secret).encode()
        else:  # derive from the signing key so a default install needs no extra secret
            with open(config["JWT_PRIVATE_KEY_FILE"], "rb") as handle:
                secret = hashlib.sha256(b"orgplatform-invites\x00" + handle.read()).digest()
        return cls(secret, str(config.get("PUBLIC_BASE_URL") or "http://127.0.0.1:8080"))

    def token(self, invite_id):
        digest = hmac.new(self.secret, invite_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def accept_url(self, invite_id):
        return "%s/invites/%s" % (self.public_base_url, self.token(invite_id))

    def with_accept_url(self, body):
        body["accept_url"] = self.accept_url(body["invite_id"])
        return body
