"""The key that signs licenses and access tokens, and the key set billing publishes as JWKS.

The private key comes from exactly one place: a file, an environment variable, or AWS Secrets
Manager. It is never logged and never leaves this module but as a signature. Rotation is by `kid`:
a new key gets a new LICENSE_KEY_ID, and every key that signed something still valid stays in the
JWKS (its public half is kept in the database), so licenses signed by the previous key keep
verifying until they expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from billing.config import BillingSettings, ConfigError
from licensing import LicenseError, public_jwk

MIN_KEY_BITS = 2048


@dataclass(frozen=True)
class SigningKey:
    """The current private key (PEM) and its `kid`."""

    kid: str
    private_pem: bytes = field(repr=False)
    public_pem: bytes

    @classmethod
    def from_pem(cls, kid: str, pem: bytes, where: str) -> SigningKey:
        """Check the PEM is an RSA private key of at least 2048 bits; errors never echo the key."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{where} is not an unencrypted PEM private key") from None
        if not isinstance(key, RSAPrivateKey) or key.key_size < MIN_KEY_BITS:
            raise ConfigError(f"{where} must be an RSA key of at least {MIN_KEY_BITS} bits")
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(kid, pem, public)


def _from_secrets_manager(secret_id: str) -> bytes:
    """The PEM stored as the secret's string (boto3's usual credentials and AWS_* settings)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except (BotoCoreError, ClientError) as e:
        raise ConfigError(
            f"cannot read the signing key from AWS Secrets Manager secret {secret_id!r}: {e}"
        ) from None
    text = value.get("SecretString")
    if not text:
        raise ConfigError(
            f"AWS Secrets Manager secret {secret_id!r} has no SecretString (store the PEM as text)"
        )
    return text.encode()


def load_signing_key(settings: BillingSettings) -> SigningKey:
    """The signing key from LICENSE_SIGNING_KEY_FILE, LICENSE_SIGNING_KEY or ..._SECRET_ID (one of them)."""
    chosen = [
        name
        for name, value in (
            ("LICENSE_SIGNING_KEY_FILE", settings.signing_key_file),
            ("LICENSE_SIGNING_KEY", settings.signing_key_pem),
            ("LICENSE_SIGNING_KEY_SECRET_ID", settings.signing_key_secret_id),
        )
        if value
    ]
    if len(chosen) != 1:
        raise ConfigError(
            "set exactly one of LICENSE_SIGNING_KEY_FILE, LICENSE_SIGNING_KEY, LICENSE_SIGNING_KEY_SECRET_ID"
            + (f" (got {', '.join(chosen)})" if chosen else "")
        )
    if settings.signing_key_file is not None:
        try:
            pem = settings.signing_key_file.read_bytes()
        except OSError as e:
            raise ConfigError(f"LICENSE_SIGNING_KEY_FILE {settings.signing_key_file}: {e.strerror}") from None
    elif settings.signing_key_pem:
        pem = settings.signing_key_pem.encode()
    else:
        pem = _from_secrets_manager(settings.signing_key_secret_id or "")
    return SigningKey.from_pem(settings.signing_key_id, pem, chosen[0])


class KeyRing:
    """The current signing key plus the published public keys, as a licensing KeySource.

    `load_published()` returns kid -> public PEM of every key that signed something still valid
    (from the database); it is re-read at most every `refresh_seconds`, or at once for an unknown kid.
    """

    def __init__(
        self,
        current: SigningKey,
        load_published: Callable[[], dict[str, str]],
        refresh_seconds: float = 60.0,
    ) -> None:
        self.current = current
        self._load = load_published
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._published: dict[str, bytes] = {}
        self._loaded_at = float("-inf")

    def _keys(self, force: bool = False) -> dict[str, bytes]:
        with self._lock:
            if force or time.monotonic() - self._loaded_at >= self._refresh:
                self._published = {kid: pem.encode() for kid, pem in self._load().items()}
                self._loaded_at = time.monotonic()
            return {**self._published, self.current.kid: self.current.public_pem}

    def key_for(self, token: str, kid: str | None) -> RSAPublicKey:
        keys = self._keys()
        if kid not in keys:
            keys = self._keys(force=True)  # a key registered by another replica since the last read
        if kid not in keys:
            raise LicenseError(f"token is signed with an unknown key {kid!r}")
        key = serialization.load_pem_public_key(keys[kid])
        assert isinstance(key, RSAPublicKey)
        return key

    def jwks(self) -> dict:
        """The JWKS document: the current key first, then every other key still published."""
        keys = self._keys()
        order = [self.current.kid, *sorted(k for k in keys if k != self.current.kid)]
        return {"keys": [public_jwk(keys[kid], kid) for kid in order]}
