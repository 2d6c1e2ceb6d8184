"""Who is calling and what they may do: credentials, principals and roles (no HTTP, no SQL).

Three kinds of caller present a credential in the `Authorization` header:

- people (and the dashboard): `Bearer <access token>` signed by the billing service at login
  (`licensing.access`), verified locally against the keys the instance trusts for its license;
- scripts: `Bearer iotk_...`, an instance API key created through the API (stored hashed);
- devices: `Basic <device id>:<password>`, the MQTT credentials issued at registration, for HTTP
  ingestion of their own readings only.

Roles: `admin` may do everything, `read` may only read, a device may only ingest as itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from licensing.access import ROLE_ADMIN, ROLE_READ, ROLES
from tenant_app.errors import Forbidden, Unauthenticated

ROLE_DEVICE = "device"
API_KEY_PREFIX = "iotk_"

# What an action needs. Reads need `read`; changes need `write`; device HTTP ingestion needs
# `ingest`; managing API keys needs `admin` (a read-only key cannot mint an admin key).
READ, WRITE, INGEST, ADMIN = "read", "write", "ingest", "admin"
_GRANTS = {
    ROLE_ADMIN: frozenset({READ, WRITE, INGEST, ADMIN}),
    ROLE_READ: frozenset({READ}),
    ROLE_DEVICE: frozenset({INGEST}),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    kind: str  # "user" (access token), "api_key" or "device"
    name: str  # the token's subject, the key's name, or the device id
    role: str  # admin, read or device
    device_id: str | None = None  # set for devices: the only device they may ingest for

    def describe(self) -> str:
        return f"{self.kind} {self.name!r} (role {self.role})"


@dataclass(frozen=True)
class Credential:
    """What the Authorization header carries: a bearer token, or a device's id and password."""

    scheme: str  # "bearer" or "basic"
    token: str = ""
    username: str = ""
    password: str = ""

    @property
    def is_api_key(self) -> bool:
        return self.scheme == "bearer" and self.token.startswith(API_KEY_PREFIX)


def parse_authorization(header: str | None) -> Credential:
    """Parse an Authorization header; Unauthenticated says what is missing or malformed."""
    if not header:
        raise Unauthenticated(
            "sign in first: send 'Authorization: Bearer <access token or API key>' "
            "(devices: Basic with their MQTT credentials)"
        )
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        if len(value) > 8192:
            raise Unauthenticated("the bearer token is too long")
        return Credential("bearer", token=value)
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Unauthenticated("the Basic credential is not base64 of 'device-id:password'") from None
        username, sep, password = decoded.partition(":")
        if not sep or not username or not password:
            raise Unauthenticated("the Basic credential must be 'device-id:password'")
        return Credential("basic", username=username, password=password)
    raise Unauthenticated("unsupported Authorization scheme: use Bearer (people, scripts) or Basic (devices)")


def authorize(principal: Principal, permission: str) -> None:
    """Forbidden unless the principal's role grants `permission`."""
    if permission not in _GRANTS.get(principal.role, frozenset()):
        what = {
            READ: "read data",
            WRITE: "make changes",
            INGEST: "send readings",
            ADMIN: "manage API keys",
        }[permission]
        raise Forbidden(f"{principal.describe()} may not {what}")


def permission_for(method: str) -> str:
    """The permission an HTTP method needs by default: safe methods read, the rest write."""
    return READ if method in ("GET", "HEAD", "OPTIONS") else WRITE


def check_role(role: object) -> str:
    """A role that API keys may have (admin or read)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def new_api_key() -> str:
    """A fresh API key: the prefix (so scanners and people recognise it) and 256 random bits."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_device_password() -> str:
    """A device's MQTT (and HTTP ingestion) password: 144 random bits."""
    return secrets.token_urlsafe(18)


def hash_secret(secret: str) -> bytes:
    """The stored form of a random secret (API key, device password).

    SHA-256 suffices: these secrets carry 144+ random bits, so there is nothing to brute-force,
    and a fast hash keeps per-request authentication cheap.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def secret_matches(secret: str, stored: bytes | None) -> bool:
    """Constant-time comparison of a presented secret with its stored hash."""
    return stored is not None and hmac.compare_digest(hash_secret(secret), bytes(stored))


__all__ = [
    "ADMIN",
    "API_KEY_PREFIX",
    "INGEST",
    "READ",
    "ROLE_ADMIN",
    "ROLE_DEVICE",
    "ROLE_READ",
    "WRITE",
    "Credential",
    "Principal",
    "authorize",
    "check_role",
    "hash_secret",
    "new_api_key",
    "new_device_password",
    "parse_authorization",
    "permission_for",
    "secret_matches",
]
