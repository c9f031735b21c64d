"""Access-token verification: EdDSA only, keys picked by ``kid``, claims checked, revocations honoured.

The gateway holds public keys only. They come from ``JWT_PUBLIC_KEY_FILES`` or, when that is empty,
from the membership service's ``public_keys`` RPC (cached; asked again at most every 30 s when a
token names an unknown key id, which is how a key rotation reaches running gateways).

A client sends the same access token with every request for its whole lifetime, so a token whose
signature checked out is remembered (exact token string -> claims, bounded LRU): later requests pay
a dictionary look-up instead of an Ed25519 verification. Expiry and revocation are still checked on
every request; a token that failed is never remembered. Keys are only ever added to the ring, so
a remembered signature cannot become invalid.
"""
import base64
import re
import threading
import time
from collections import OrderedDict

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from common.errors import DomainError
from common.tokens import key_id

ALGORITHMS = ["EdDSA"]  # pinned: "none", HS256 with the public key as secret etc. are refused
REQUIRED_CLAIMS = ["sub", "sid", "iat", "exp", "jti"]
KEY_REFRESH_SECONDS = 30


_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def is_canonical_jws(token):
    """True if ``token`` is three base64url segments, each spelt the one way the signer spells it:
    no padding, no ``+``/``/``, no length that no byte string has, unused trailing bits zero.

    PyJWT decodes leniently (it pads, and base64 ignores set trailing bits), so ``token + "=="`` or
    a changed last character verified as the same token: one signed token had many spellings, each
    a distinct string to every cache, log filter and revocation keyed by the token text."""
    segments = token.split(".")
    if len(segments) != 3:
        return False
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
            return False
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") != segment:
            return False
    return True


class KeyRing:
    def __init__(self, pem_files=(), fetch=None):
        self._keys = {}
        self._fetch = fetch
        self._fetched_at = 0.0
        self._lock = threading.Lock()
        for path in pem_files:
            with open(path) as handle:
                self._add(handle.read())

    def _add(self, pem):
        self._keys[key_id(pem)] = load_pem_public_key(pem.encode())

    def get(self, kid):
        key = self._keys.get(kid)
        if key is None and self._fetch is not None:
            with self._lock:
                stale = time.monotonic() - self._fetched_at > KEY_REFRESH_SECONDS
                if not self._keys or (kid not in self._keys and stale):
                    self._fetched_at = time.monotonic()
                    for pem in self._fetch().values():
                        self._add(pem)
            key = self._keys.get(kid)
        return key


class TokenVerifier:
    def __init__(self, keyring, issuer, revocations, remember=10000):
        self.keyring = keyring
        self.issuer = issuer
        self.revocations = revocations
        self.remember = remember
        self._verified = OrderedDict()  # token -> claims of a token whose signature and claims checked out
        self._lock = threading.Lock()

    def verify(self, token):
        """Return the claims of a valid, unrevoked access token, else raise a 401 DomainError."""
        with self._lock:
            claims = self._verified.get(token)
            if claims is not None:
                self._verified.move_to_end(token)
        if claims is None:
            claims = self._verify_signature(token)
            with self._lock:
                self._verified[token] = claims
                while len(self._verified) > self.remember:
                    self._verified.popitem(last=False)
        elif claims["exp"] <= time.time():
            raise DomainError("token_expired", "access token has expired")
        if self.revocations.is_revoked(claims):
            raise DomainError("token_revoked", "access token has been revoked")
        return claims

    def _verify_signature(self, token):
        if not is_canonical_jws(token):
            raise DomainError("invalid_token", "access token is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise DomainError("invalid_token", "access token is malformed") from None
        if header.get("alg") not in ALGORITHMS:
            raise DomainError("invalid_token", "access token algorithm not accepted")
        key = self.keyring.get(header.get("kid"))
        if key is None:
            raise DomainError("invalid_token", "access token signed with an unknown key")
        try:
            claims = jwt.decode(token, key, algorithms=ALGORITHMS, issuer=self.issuer,
                                options={"require": REQUIRED_CLAIMS + ["iss"]})
        except jwt.ExpiredSignatureError:
            raise DomainError("token_expired", "access token has expired") from None
        except jwt.PyJWTError:
            raise DomainError("invalid_token", "access token is invalid") from None
        return claims

