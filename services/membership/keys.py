"""Signing keys: Ed25519, identified by a key id derived from the public key.

``python -m services.membership.keys generate PRIVATE [PUBLIC]`` writes a new private key (0600)
unless one exists, and its public half -- used by ``make up`` and by the compose ``keygen`` step.
"""
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def load_private_key(path):
    with open(path, "rb") as handle:
        return serialization.load_pem_private_key(handle.read(), password=None)


def public_pem(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def generate(path):
    if os.path.exists(path):
        return False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return True


def write_public(private_path, public_path):
    """Write the public half for verifiers (gateways) that get keys from files."""
    with open(public_path, "w") as handle:
        handle.write(public_pem(load_private_key(private_path)))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] != "generate":
        sys.exit("usage: python -m services.membership.keys generate PRIVATE_PEM [PUBLIC_PEM]")
    print("generated" if generate(sys.argv[2]) else "exists", sys.argv[2])
    if len(sys.argv) == 4:
        write_public(sys.argv[2], sys.argv[3])
