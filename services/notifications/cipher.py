"""The key that seals queued mail bodies holding a secret (an invite's accept link).

Its own module (built once by the service's ``Mailer`` dependency), not the store's: the store keeps
what it is given, sealed or not; sealing is the dispatcher's business (``dispatch.enqueue``).
"""
import base64
import hashlib
import logging

from cryptography.fernet import Fernet

log = logging.getLogger(__name__)


def mail_cipher(settings):
    """Encrypts mail bodies that carry a secret (an invite's accept link) while they are stored.

    ``MAIL_SECRET_KEY`` (any string) is the key; without it the key is derived from the signing key
    file when this process can read it, else from a built-in constant (then the link is only
    obfuscated at rest -- set MAIL_SECRET_KEY in production)."""
    secret = settings.mail_secret_key
    if secret:
        material = secret.encode()
    else:
        try:
            with open(settings.jwt_private_key_file, "rb") as handle:
                material = handle.read()
        except OSError:
            log.warning("MAIL_SECRET_KEY is not set: invite links in queued mail are only obfuscated")
            material = b"orgplatform-default"
    key = hashlib.sha256(b"orgplatform-mail\x00" + material).digest()
    return Fernet(base64.urlsafe_b64encode(key))
