"""Access tokens: short-lived RS256 JWTs that sign a person (or the dashboard) into an instance.

The billing service issues one at login; the customer's instance verifies it locally with the same
keys it trusts for its license (JWKS, chosen by `kid`), without calling billing per request.

Header: `{"alg": "RS256", "typ": "at+jwt", "kid": "<key id>"}` (the `typ` of RFC 9068).
Claims:

| claim | meaning |
| --- | --- |
| `iss` | the billing service (`iotistic-billing`) |
| `aud` | the customer id: the one instance that accepts the token |
| `sub` | who signed in (the customer's account id, or an operator's name) |
| `customer_id` | the customer id (equal to `aud`) |
| `role` | `admin` (everything) or `read` (GET only) |
| `token_use` | always `access`: a license (which has no such claim) is never an access token |
| `iat`, `exp` | issued / expires (Unix seconds); lifetime 15 minutes by default |
| `jti` | a random id, for audit logs |

A license presented as an access token, an access token presented as a license, another
customer's token, an expired one, `alg: none` and HS256 are all refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from licensing.tokens import (
    ACCESS_TOKEN_TYPE,
    ALGORITHM,
    DEFAULT_ISSUER,
    KeySource,
    LicenseError,
    load_private_key,
    to_timestamp,
)

TOKEN_USE = "access"
ROLE_ADMIN = "admin"
ROLE_READ = "read"
ROLES = (ROLE_ADMIN, ROLE_READ)
DEFAULT_TTL = timedelta(minutes=15)
MAX_TTL = timedelta(hours=12)
REQUIRED_CLAIMS = ("iss", "aud", "sub", "customer_id", "role", "token_use", "iat", "exp", "jti")


class AccessTokenError(LicenseError):
    """An access token was refused; the message says why (never echoes the token)."""


@dataclass(frozen=True)
class AccessToken:
    """The verified content of an access token."""

    customer_id: str
    subject: str
    role: str
    issued_at: datetime
    expires_at: datetime
    token_id: str
    key_id: str | None
    token: str = field(default="", repr=False)

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN


def sign_access_token(
    private_key_pem: bytes | str | RSAPrivateKey,
    *,
    kid: str,
    customer_id: str,
    subject: str,
    role: str = ROLE_ADMIN,
    ttl: timedelta = DEFAULT_TTL,
    issued_at: datetime | None = None,
    issuer: str = DEFAULT_ISSUER,
) -> str:
    """A signed access token for `customer_id`'s instance, valid for `ttl` (at most 12 hours)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if not timedelta(0) < ttl <= MAX_TTL:
        raise ValueError(f"an access token lives between 0 and {MAX_TTL} (got {ttl})")
    now = issued_at or datetime.now(UTC)
    claims = {
        "iss": issuer,
        "aud": customer_id,
        "sub": subject,
        "customer_id": customer_id,
        "role": role,
        "token_use": TOKEN_USE,
        "iat": to_timestamp(now),
        "exp": to_timestamp(now + ttl),
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(
        claims,
        load_private_key(private_key_pem),
        algorithm=ALGORITHM,
        headers={"kid": kid, "typ": ACCESS_TOKEN_TYPE},
    )


def verify_access_token(
    token: str,
    keys: KeySource,
    *,
    customer_id: str,
    issuer: str = DEFAULT_ISSUER,
    now: datetime | None = None,
    leeway: timedelta = timedelta(seconds=30),
) -> AccessToken:
    """Verify signature, type, audience, issuer and expiry; return the token or raise AccessTokenError."""
    token = token.strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise AccessTokenError(f"access token is not a well-formed JWT: {e}") from e
    if header.get("alg") != ALGORITHM:
        raise AccessTokenError(f"access token algorithm {header.get('alg')!r} is not accepted (only RS256)")
    if header.get("typ") != ACCESS_TOKEN_TYPE:
        raise AccessTokenError(
            f"not an access token (typ {header.get('typ')!r}, expected {ACCESS_TOKEN_TYPE!r})"
        )
    kid = header.get("kid")
    key = keys.key_for(token, kid)
    when = now or datetime.now(UTC)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=customer_id,
            issuer=issuer,
            leeway=leeway,
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError as e:
        raise AccessTokenError("access token signature is not valid for the billing service's key") from e
    except jwt.InvalidAudienceError as e:
        raise AccessTokenError(f"access token is not for this instance ({customer_id!r})") from e
    except jwt.InvalidIssuerError as e:
        raise AccessTokenError(f"access token was not issued by {issuer!r}") from e
    except jwt.MissingRequiredClaimError as e:
        raise AccessTokenError(f"access token is missing a claim: {e}") from e
    except jwt.PyJWTError as e:
        raise AccessTokenError(f"access token refused: {e}") from e
    if claims["token_use"] != TOKEN_USE or claims["customer_id"] != customer_id:
        raise AccessTokenError("not an access token for this instance")
    if claims["role"] not in ROLES:
        raise AccessTokenError(f"access token has an unknown role {claims['role']!r}")
    if not isinstance(claims["exp"], int | float) or not isinstance(claims["iat"], int | float):
        raise AccessTokenError("access token claims 'iat' and 'exp' must be numeric dates")
    expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    issued_at = datetime.fromtimestamp(claims["iat"], UTC)
    # Times are judged against our own clock (injectable), with a little leeway for clock skew.
    if when >= expires_at + leeway:
        raise AccessTokenError(f"access token expired at {expires_at.isoformat()}")
    if issued_at > when + leeway:
        raise AccessTokenError(f"access token is issued in the future ({issued_at.isoformat()})")
    return AccessToken(
        customer_id=customer_id,
        subject=str(claims["sub"]),
        role=claims["role"],
        issued_at=issued_at,
        expires_at=expires_at,
        token_id=str(claims["jti"]),
        key_id=kid,
        token=token,
    )
