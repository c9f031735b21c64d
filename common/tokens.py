"""What token issuer and verifiers must agree on: the key id of a public key."""
import base64
import hashlib


def key_id(public_key_pem):
    """Stable id of a public key, so verifiers can pick the right key during a rotation."""
    digest = hashlib.sha256(public_key_pem.strip().encode()).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode().rstrip("=")
