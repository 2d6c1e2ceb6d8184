"""Sign and verify Iotistic licenses: RS256 JWTs with a `kid` header.

Claims: `iss` (the billing service), `sub` and `customer_id` (the same id), `plan`, `features`
(list of names), `limits` (name -> integer), `iat`, `exp`, and `trial` (true while the customer is
on a trial). Only RS256 is ever accepted, so `alg: none` and HS256 tokens made with the public key
are refused before any key is used.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from licensing.plans import Plan, get_plan

ALGORITHM = "RS256"
DEFAULT_ISSUER = "iotistic-billing"
REQUIRED_CLAIMS = ("iss", "sub", "customer_id", "plan", "features", "limits", "iat", "exp")
# The `typ` header of access tokens (licensing/access.py); a license never carries it.
ACCESS_TOKEN_TYPE = "at+jwt"


class LicenseError(Exception):
    """A license was refused; the message says why in words an operator can act on."""


class LicenseExpired(LicenseError):
    """A genuine license whose `exp` has passed; `.license` still tells its plan and limits."""

    def __init__(self, license: License) -> None:
        super().__init__(f"license expired at {license.expires_at.isoformat()}")
        self.license = license


@dataclass(frozen=True)
class License:
    """The verified content of a license token."""

    customer_id: str
    plan: str
    features: frozenset[str]
    limits: Mapping[str, int]
    issued_at: datetime
    expires_at: datetime
    issuer: str
    key_id: str | None
    trial: bool = False
    token: str = field(default="", repr=False)

    def has(self, feature: str) -> bool:
        return feature in self.features

    def limit(self, name: str, default: int | None = None) -> int | None:
        return self.limits.get(name, default)

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def seconds_left(self, now: datetime) -> float:
        """Seconds until expiry (negative once expired)."""
        return (self.expires_at - now).total_seconds()

    def summary(self, now: datetime) -> dict:
        """A JSON-ready description (no token) for health checks and the dashboard."""
        return {
            "customer_id": self.customer_id,
            "plan": self.plan,
            "features": sorted(self.features),
            "limits": dict(self.limits),
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "trial": self.trial,
            "expired": self.is_expired(now),
            "days_left": max(0.0, round(self.seconds_left(now) / 86400, 2)),
        }


class KeySource(Protocol):
    """Where the billing service's public key comes from."""

    def key_for(self, token: str, kid: str | None) -> RSAPublicKey: ...


@dataclass(frozen=True)
class PemKeySource:
    """One public key from a PEM; with `kid` set, tokens must name that key id."""

    pem: bytes
    kid: str | None = None

    def key_for(self, token: str, kid: str | None) -> RSAPublicKey:
        if self.kid is not None and kid != self.kid:
            raise LicenseError(f"license is signed with key {kid!r}, expected {self.kid!r}")
        key = serialization.load_pem_public_key(self.pem)
        if not isinstance(key, RSAPublicKey):
            raise LicenseError("the configured license public key is not an RSA key")
        return key


class JwksKeySource:
    """Public keys published by the billing service as a JWKS document, chosen by `kid`."""

    def __init__(self, url: str, timeout: float = 5.0, cache_seconds: int = 300) -> None:
        self.url = url
        # PyJWKClient caches the key set and refetches it when it meets an unknown kid (key rotation).
        self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=cache_seconds, timeout=timeout)

    def key_for(self, token: str, kid: str | None) -> RSAPublicKey:
        if not kid:
            raise LicenseError("license has no 'kid' header, so no key of the key set can be chosen")
        try:
            jwk = self._client.get_signing_key(kid)
        except jwt.PyJWKClientError as e:
            raise LicenseError(f"no usable key {kid!r} in {self.url}: {e}") from e
        if not isinstance(jwk.key, RSAPublicKey):
            raise LicenseError(f"key {kid!r} in {self.url} is not an RSA key")
        return jwk.key


def load_private_key(private_key: bytes | str | RSAPrivateKey) -> RSAPrivateKey:
    """The key of a PEM (or the key itself). Parsed once per PEM: cryptography validates an RSA key
    as it loads it (~40 ms), which would otherwise be paid for every token signed."""
    if isinstance(private_key, RSAPrivateKey):
        return private_key
    if isinstance(private_key, str):
        private_key = private_key.encode()
    return _load_pem_private_key(private_key)


@functools.lru_cache(maxsize=16)
def _load_pem_private_key(pem: bytes) -> RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("a license signing key must be an RSA private key")
    return key


def to_timestamp(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("license times must be timezone-aware")
    return int(value.timestamp())


def sign_license(
    private_key_pem: bytes | str | RSAPrivateKey,
    *,
    kid: str,
    customer_id: str,
    plan: Plan | str,
    expires_at: datetime,
    issued_at: datetime | None = None,
    issuer: str = DEFAULT_ISSUER,
    trial: bool = False,
    features: list[str] | None = None,
    limits: Mapping[str, int] | None = None,
) -> str:
    """A signed license for `customer_id`; features and limits default to the plan's."""
    plan = get_plan(plan) if isinstance(plan, str) else plan
    claims = plan.claims()
    if features is not None:
        claims["features"] = list(features)
    if limits is not None:
        claims["limits"] = {**claims["limits"], **limits}
    now = issued_at or datetime.now(UTC)
    claims.update(
        iss=issuer,
        sub=customer_id,
        customer_id=customer_id,
        iat=to_timestamp(now),
        exp=to_timestamp(expires_at),
        trial=trial,
    )
    return jwt.encode(claims, load_private_key(private_key_pem), algorithm=ALGORITHM, headers={"kid": kid})


def _parse_claims(claims: dict, token: str, kid: str | None) -> License:
    features = claims["features"]
    limits = claims["limits"]
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise LicenseError("license claim 'features' must be a list of names")
    if not isinstance(limits, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in limits.items()
    ):
        raise LicenseError("license claim 'limits' must map names to integers")
    if not isinstance(claims["plan"], str):
        raise LicenseError("license claim 'plan' must be a string")
    return License(
        customer_id=claims["customer_id"],
        plan=claims["plan"],
        features=frozenset(features),
        limits=MappingProxyType(dict(limits)),
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        issuer=claims["iss"],
        key_id=kid,
        trial=bool(claims.get("trial", False)),
        token=token,
    )


def verify_license(
    token: str,
    keys: KeySource,
    *,
    customer_id: str,
    issuer: str = DEFAULT_ISSUER,
    now: datetime | None = None,
    allow_expired: bool = False,
) -> License:
    """Verify signature, issuer, customer and expiry; return the license or raise LicenseError.

    With `allow_expired`, a genuine but expired license is returned instead of raising
    LicenseExpired, so a running instance can keep serving reads and report its expiry.
    """
    token = token.strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise LicenseError(f"license is not a well-formed JWT: {e}") from e
    alg = header.get("alg")
    # pyjwt enforces `algorithms` too; refusing here first means no key is ever fed to HMAC or "none".
    if alg != ALGORITHM:
        raise LicenseError(f"license algorithm {alg!r} is not accepted (only {ALGORITHM})")
    if header.get("typ") == ACCESS_TOKEN_TYPE:
        raise LicenseError("this is an access token, not a license")
    kid = header.get("kid")
    key = keys.key_for(token, kid)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            # Expiry is judged below with an explicit clock, after the signature is known good.
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": True},
        )
    except jwt.InvalidSignatureError as e:
        raise LicenseError("license signature is not valid for the billing service's key") from e
    except jwt.InvalidIssuerError as e:
        raise LicenseError(f"license was not issued by {issuer!r}") from e
    except jwt.MissingRequiredClaimError as e:
        raise LicenseError(f"license is missing a claim: {e}") from e
    except jwt.PyJWTError as e:
        raise LicenseError(f"license refused: {e}") from e
    if claims["customer_id"] != customer_id or claims["sub"] != customer_id:
        raise LicenseError(
            f"license is for customer {claims['customer_id']!r}, this instance is {customer_id!r}"
        )
    if not isinstance(claims["exp"], int | float) or not isinstance(claims["iat"], int | float):
        raise LicenseError("license claims 'iat' and 'exp' must be numeric dates")
    lic = _parse_claims(claims, token, kid)
    if not allow_expired and lic.is_expired(now or datetime.now(UTC)):
        raise LicenseExpired(lic)
    return lic


def public_jwk(public_pem: bytes, kid: str) -> dict:
    """One RSA public key as a JWK with its `kid`."""
    key = serialization.load_pem_public_key(public_pem)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update(kid=kid, use="sig", alg=ALGORITHM)
    return jwk


def public_jwks(public_pem: bytes, kid: str) -> dict:
    """A JWKS document publishing one RSA public key under `kid` (served by the billing service)."""
    return {"keys": [public_jwk(public_pem, kid)]}
