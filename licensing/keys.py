"""RSA key pairs for license signing: generation and PEM conversions (dev set-up and tests)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_BITS = 2048


def generate_private_key_pem(bits: int = KEY_BITS) -> bytes:
    """A new RSA private key as unencrypted PKCS#8 PEM (store it as a secret)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(private_pem: bytes) -> bytes:
    """The SubjectPublicKeyInfo PEM of a private key (what customer instances are given)."""
    from licensing.tokens import load_private_key  # parsed (and validated) once per key

    key = load_private_key(private_pem)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
