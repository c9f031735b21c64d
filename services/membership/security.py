"""Passwords (argon2id) and token signing (EdDSA JWTs), as nameko dependencies.

Argon2 is deliberately slow; it runs in eventlet's OS thread pool so one login does not stall
every other request the service is handling. At most ``ARGON2_CONCURRENCY`` hashes (default: the
number of cores) run at once: each holds ``ARGON2_MEMORY_KIB`` (64 MiB by default), and hashing is
CPU-bound, so the 20 threads of that pool hashing at once would only multiply the memory (1.3 GB)
without finishing any sooner. At most ``ARGON2_QUEUE`` more wait their turn, each at most
``ARGON2_QUEUE_WAIT`` seconds: a burst beyond that (40 sign-ups at once) is refused at once with a
503 and ``Retry-After`` instead of holding every worker of the service -- and with them every other
request, ``/me`` included -- until the RPC timeout.
"""
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from eventlet import tpool
from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider

from common.errors import DomainError
from common.settings_provider import settings_of
from common.tokens import key_id
from services.membership.keys import load_private_key, public_pem


def token_hash(token):
    """Refresh and invite tokens are stored only as this hash (they carry >=256 random bits)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret_token():
    return secrets.token_urlsafe(32)


def busy(retry_after=1):
    """The answer to a hash that was shed: the service is busy, the client may retry shortly."""
    return DomainError("service_unavailable", "too many password checks at once, try again shortly",
                       {"retry_after": retry_after})


class Passwords:
    def __init__(self, time_cost=3, memory_kib=65536, concurrency=None, queue=None, queue_wait=2.0):
        self.hasher = PasswordHasher(time_cost=int(time_cost), memory_cost=int(memory_kib))
        self._dummy = self.hasher.hash(secrets.token_hex(16))
        self.concurrency = int(concurrency or os.cpu_count() or 2)
        self.queue = int(queue) if queue not in (None, "") else 4 * self.concurrency
        self.queue_wait = float(queue_wait if queue_wait not in (None, "") else 2.0)
        self._slots = Semaphore(self.concurrency)
        # hashes running or waiting; only green threads of this process touch it, and nothing
        # yields between its check and its change, so no lock is needed
        self._admitted = 0

    def _run(self, function, *args):
        """Run ``function`` in a hashing slot, or shed the call (503) when the queue is full or
        the wait for a slot is over: waiting longer would only outlast the caller's RPC timeout."""
        if self._admitted >= self.concurrency + self.queue:
            raise busy()
        self._admitted += 1
        try:
            if not self._slots.acquire(timeout=self.queue_wait):
                raise busy()
            try:
                return tpool.execute(function, *args)
            finally:
                self._slots.release()
        finally:
            self._admitted -= 1

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

    def access_token(self, user_id, org_id, role, is_owner, is_superuser, session_id,
                     account_cutoff=0.0, membership_cutoff=None):
        """Sign an access token.

        ``av``/``mv`` are the account's and the membership's revocation cut-offs
        (``tokens_not_before``) as read together with the role and flags the token states. A
        revocation publishes the cut-off it wrote, and gateways refuse tokens carrying an older one.
        So a token signed from a document read just before a role change, removal or password
        change dies with that change however late it was signed: no clock and no ordering between
        the change and a concurrent refresh is involved.
        """
        # iat keeps milliseconds (RFC 7519 allows fractions); tokens of older releases lack av/mv
        # and are judged by iat
        now = round(time.time(), 3)
        claims = {"iss": self.issuer, "sub": user_id, "org": org_id, "role": role,
                  "owner": bool(is_owner), "su": bool(is_superuser), "sid": session_id,
                  "jti": uuid.uuid4().hex, "iat": now, "exp": int(now) + self.access_ttl,
                  "av": float(account_cutoff or 0.0)}
        if org_id is not None and membership_cutoff is not None:
            claims["mv"] = float(membership_cutoff)
        token = jwt.encode(claims, self.private_key, algorithm="EdDSA", headers={"kid": self.kid})
        return token, self.access_ttl


def _sealing_key(refresh_token):
    """A Fernet key only the holder of ``refresh_token`` can derive (the database keeps its SHA-256)."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"orgplatform-refresh-grace\x00" + refresh_token.encode()).digest())


def seal_for(refresh_token, data):
    """Encrypt ``data`` (JSON) so that presenting ``refresh_token`` again recovers it."""
    return Fernet(_sealing_key(refresh_token)).encrypt(json.dumps(data).encode()).decode()


def unseal_for(refresh_token, sealed):
    """The data :func:`seal_for` sealed for ``refresh_token``, or None."""
    try:
        return json.loads(Fernet(_sealing_key(refresh_token)).decrypt(sealed.encode()))
    except (InvalidToken, ValueError, TypeError, AttributeError):
        return None


class SecurityProvider(DependencyProvider):
    """Injects ``Security(passwords, tokens)`` built once from the service's settings."""

    def setup(self):
        settings = settings_of(self.container)
        self.security = Security(
            Passwords(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_concurrency,
                      settings.argon2_queue, settings.argon2_queue_wait),
            TokenIssuer(settings.jwt_private_key_file, list(settings.jwt_retired_key_files), settings.jwt_issuer,
                        settings.access_token_ttl),
            settings.refresh_token_ttl, settings.refresh_reuse_grace_seconds)

    def get_dependency(self, worker_ctx):
        return self.security


class Security:
    def __init__(self, passwords, tokens, refresh_ttl, refresh_grace=10.0):
        self.passwords = passwords
        self.tokens = tokens
        self.refresh_ttl = refresh_ttl
        self.refresh_grace = refresh_grace


class InviteTokensProvider(DependencyProvider):
    """Injects the :class:`InviteTokens` built once from the service's settings, and has the store's
    outbox add each invite's link to ``invite_created`` only when it is published (never stored)."""

    def setup(self):
        self.invite_tokens = InviteTokens.from_settings(settings_of(self.container))

    def start(self):
        from common.mongo import StoreProvider
        for dependency in self.container.dependencies:
            if isinstance(dependency, StoreProvider):
                dependency.store.outbox.enrichers["invite_created"] = self.invite_tokens.with_accept_url

    def get_dependency(self, worker_ctx):
        return self.invite_tokens


class InviteTokens:
    """Invite tokens are derived from the invite id with a server secret (HMAC-SHA256, 256 bits).

    The database keeps only the token's hash; the token itself can be re-derived when the
    ``invite_created`` event is published, so not even the outbox holds it in plain text.
    """

    def __init__(self, secret, public_base_url):
        self.secret = secret
        self.public_base_url = public_base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings):
        secret = settings.invite_token_secret
        if secret:
            secret = str(secret).encode()
        else:  # derive from the signing key so a default install needs no extra secret
            with open(settings.jwt_private_key_file, "rb") as handle:
                secret = hashlib.sha256(b"orgplatform-invites\x00" + handle.read()).digest()
        return cls(secret, settings.public_base_url)

    def token(self, invite_id):
        digest = hmac.new(self.secret, invite_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def accept_url(self, invite_id):
        return f"{self.public_base_url}/invites/{self.token(invite_id)}"

    def with_accept_url(self, body):
        body["accept_url"] = self.accept_url(body["invite_id"])
        return body
