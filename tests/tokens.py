"""Forging tokens for tests: with the stack's real signing key, or deliberately wrong ones."""
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.tokens import key_id
from services.membership.keys import load_private_key, public_pem


def real_key(test_stack):
    key = load_private_key(test_stack.key_file)
    return key, key_id(public_pem(key))


def forge(test_stack, key=None, kid=None, algorithm="EdDSA", session_of=None, **overrides):
    """A token like the membership service issues, with ``overrides`` applied to the claims.

    ``session_of`` (an Account) makes it belong to that account's real session, as every token the
    service signs does; gateways may check a token's session with the membership service.
    """
    if key is None:
        key, kid = real_key(test_stack)
    now = int(time.time())
    claims = {"iss": "orgplatform", "sub": str(uuid.uuid4()), "org": None, "role": None, "owner": False,
              "su": False, "sid": uuid.uuid4().hex, "jti": uuid.uuid4().hex, "iat": now, "exp": now + 300}
    if session_of is not None:
        issued = jwt.decode(session_of.token, options={"verify_signature": False})
        claims.update({key_: issued[key_] for key_ in ("sub", "sid", "org", "role", "owner", "su", "iat")})
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def stranger_key():
    key = Ed25519PrivateKey.generate()
    return key, key_id(public_pem(key))
