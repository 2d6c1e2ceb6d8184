"""Access tokens: what billing signs at login is what an instance accepts, and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from licensing import (
    AccessTokenError,
    LicenseError,
    PemKeySource,
    sign_access_token,
    sign_license,
    verify_access_token,
    verify_license,
)
from licensing.keys import generate_private_key_pem, public_key_pem

KID = "unit-1"
PRIVATE = generate_private_key_pem()
PUBLIC = PemKeySource(public_key_pem(PRIVATE))
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def token(**kw) -> str:
    args = {"kid": KID, "customer_id": "acme", "subject": "user-1", "issued_at": NOW} | kw
    return sign_access_token(PRIVATE, **args)


def verify(tok: str, customer: str = "acme", now: datetime = NOW):
    return verify_access_token(tok, PUBLIC, customer_id=customer, now=now)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_genuine_token_names_the_customer_role_and_expiry():
    at = verify(token(role="read"))
    assert (at.customer_id, at.subject, at.role, at.key_id) == ("acme", "user-1", "read", KID)
    assert not at.is_admin
    assert at.expires_at - at.issued_at == timedelta(minutes=15)
    header = json.loads(base64.urlsafe_b64decode(token().split(".")[0] + "=="))
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": KID}


def test_another_customers_token_is_refused():
    with pytest.raises(AccessTokenError, match="not for this instance"):
        verify(token(customer_id="globex"))


def test_an_expired_token_is_refused_after_the_leeway():
    tok = token(ttl=timedelta(minutes=5))
    verify(tok, now=NOW + timedelta(minutes=5, seconds=10))  # within 30 s of leeway
    with pytest.raises(AccessTokenError, match="expired"):
        verify(tok, now=NOW + timedelta(minutes=6))


def test_a_license_is_not_an_access_token_and_an_access_token_is_not_a_license():
    lic = sign_license(
        PRIVATE, kid=KID, customer_id="acme", plan="starter", expires_at=NOW + timedelta(days=1)
    )
    with pytest.raises(AccessTokenError, match="not an access token"):
        verify(lic)
    with pytest.raises(LicenseError, match="access token"):
        verify_license(token(), PUBLIC, customer_id="acme", now=NOW)


def test_alg_none_and_hs256_with_the_public_key_are_refused():
    claims = json.loads(base64.urlsafe_b64decode(token().split(".")[1] + "=="))
    none = f"{b64(json.dumps({'alg': 'none', 'typ': 'at+jwt'}).encode())}.{b64(json.dumps(claims).encode())}."
    with pytest.raises(AccessTokenError, match="algorithm"):
        verify(none)
    head = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": KID}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(public_key_pem(PRIVATE), f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(AccessTokenError, match="algorithm"):
        verify(f"{head}.{body}.{b64(sig)}")


def test_a_token_signed_by_another_key_or_tampered_is_refused():
    other = sign_access_token(
        generate_private_key_pem(), kid=KID, customer_id="acme", subject="x", issued_at=NOW
    )
    with pytest.raises(AccessTokenError, match="signature"):
        verify(other)
    head, body, sig = token(role="read").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["role"] = "admin"
    with pytest.raises(AccessTokenError, match="signature"):
        verify(f"{head}.{b64(json.dumps(claims).encode())}.{sig}")


def test_garbage_unknown_roles_and_long_lifetimes_are_refused():
    for bad in ("", "abc", "a.b.c", "\x00"):
        with pytest.raises(AccessTokenError):
            verify(bad)
    with pytest.raises(ValueError, match="unknown role"):
        token(role="root")
    with pytest.raises(ValueError, match="lives between"):
        token(ttl=timedelta(days=2))
