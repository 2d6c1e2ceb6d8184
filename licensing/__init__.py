"""The Iotistic license format: plan data and the RS256 JWT that carries it.

One package for both sides: the billing service signs licenses with `sign_license`, the customer
instance verifies them with `verify_license`. Nothing here talks to a network except an optional
JWKS fetch, and nothing reads the environment.
"""

from licensing.access import (
    ROLE_ADMIN,
    ROLE_READ,
    ROLES,
    AccessToken,
    AccessTokenError,
    sign_access_token,
    verify_access_token,
)
from licensing.plans import PLANS, Plan, get_plan
from licensing.tokens import (
    ALGORITHM,
    DEFAULT_ISSUER,
    JwksKeySource,
    KeySource,
    License,
    LicenseError,
    LicenseExpired,
    PemKeySource,
    public_jwk,
    public_jwks,
    sign_license,
    verify_license,
)

__all__ = [
    "ALGORITHM",
    "ROLES",
    "ROLE_ADMIN",
    "ROLE_READ",
    "AccessToken",
    "AccessTokenError",
    "DEFAULT_ISSUER",
    "PLANS",
    "JwksKeySource",
    "KeySource",
    "License",
    "LicenseError",
    "LicenseExpired",
    "PemKeySource",
    "Plan",
    "get_plan",
    "public_jwk",
    "public_jwks",
    "sign_access_token",
    "sign_license",
    "verify_access_token",
    "verify_license",
]
