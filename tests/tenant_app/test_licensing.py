"""The license format: what the billing service signs is what the instance accepts, and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask, jsonify

from licensing import (
    PLANS,
    JwksKeySource,
    LicenseError,
    LicenseExpired,
    PemKeySource,
    get_plan,
    public_jwks,
    sign_license,
    verify_license,
)
from tests.tenant_app.conftest import CUSTOMER, KID
from tests.tenant_app.helpers import Server


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def verify(token: str, keys, **kw):
    return verify_license(
        token, PemKeySource(keys.public_pem), customer_id=kw.pop("customer", CUSTOMER), **kw
    )


def test_genuine_license_round_trips_with_plan_features_and_limits(keys):
    lic = verify(keys.license(plan="professional", trial=True), keys)
    assert lic.customer_id == CUSTOMER and lic.plan == "professional" and lic.trial
    assert lic.features == frozenset(PLANS["professional"].features)
    assert lic.limit("maxDevices") == PLANS["professional"].limits["maxDevices"]
    assert lic.key_id == KID
    claims = claims_of(lic.token)
    assert claims["sub"] == claims["customer_id"] == CUSTOMER
    assert claims["iss"] == "iotistic-billing"
    assert {"iat", "exp", "features", "limits", "plan"} <= set(claims)


def test_plans_are_data_in_one_place():
    assert list(PLANS) == ["starter", "professional", "enterprise"]
    for a, b in (("starter", "professional"), ("professional", "enterprise")):
        assert set(PLANS[a].features) <= set(PLANS[b].features)
        assert PLANS[a].limits["maxDevices"] < PLANS[b].limits["maxDevices"]
    with pytest.raises(KeyError, match="plans are starter"):
        get_plan("platinum")


def test_signed_by_another_key_is_refused(keys):
    forged = sign_license(
        keys.attacker_private_pem,
        kid=KID,
        customer_id=CUSTOMER,
        plan="enterprise",
        expires_at=datetime.now(UTC) + timedelta(days=365),
    )
    with pytest.raises(LicenseError, match="signature is not valid"):
        verify(forged, keys)


def test_tampered_claims_are_refused(keys):
    header, _, signature = keys.license().split(".")
    claims = claims_of(keys.license())
    claims["limits"]["maxDevices"] = 100000
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(LicenseError, match="signature is not valid"):
        verify(tampered, keys)


def test_license_of_another_customer_is_refused(keys):
    with pytest.raises(LicenseError, match="is for customer 'globex'"):
        verify(keys.license(customer="globex"), keys)


def test_alg_none_is_refused(keys):
    claims = claims_of(keys.license(plan="enterprise"))
    with pytest.raises(LicenseError, match="algorithm 'none' is not accepted"):
        verify(forge({"alg": "none", "typ": "JWT", "kid": KID}, claims), keys)


def test_hs256_signed_with_the_public_key_is_refused(keys):
    claims = claims_of(keys.license(plan="enterprise"))
    header = {"alg": "HS256", "typ": "JWT", "kid": KID}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}".encode()
    signature = hmac.new(keys.public_pem, signing_input, hashlib.sha256).digest()
    with pytest.raises(LicenseError, match="algorithm 'HS256' is not accepted"):
        verify(f"{signing_input.decode()}.{b64(signature)}", keys)


def test_garbage_and_wrong_issuer_are_refused(keys):
    with pytest.raises(LicenseError, match="not a well-formed JWT"):
        verify("not-a-token", keys)
    with pytest.raises(LicenseError, match="not issued by"):
        verify(keys.license(issuer="someone-else"), keys)


def test_expired_license_is_refused_unless_allowed_and_still_tells_its_plan(keys):
    token = keys.license(days=-1)
    with pytest.raises(LicenseExpired) as caught:
        verify(token, keys)
    assert caught.value.license.plan == "starter"
    lic = verify(token, keys, allow_expired=True)
    assert lic.is_expired(datetime.now(UTC))


def test_pem_source_can_pin_the_key_id(keys):
    with pytest.raises(LicenseError, match="expected 'other-kid'"):
        verify_license(keys.license(), PemKeySource(keys.public_pem, kid="other-kid"), customer_id=CUSTOMER)


def test_jwks_url_selects_the_key_by_kid(keys):
    app = Flask(__name__)
    app.get("/.well-known/jwks.json")(lambda: jsonify(public_jwks(keys.public_pem, KID)))
    server = Server(app)
    try:
        source = JwksKeySource(server.url + "/.well-known/jwks.json")
        assert verify_license(keys.license(), source, customer_id=CUSTOMER).plan == "starter"
        unknown = sign_license(
            keys.private_pem,
            kid="rotated-away",
            customer_id=CUSTOMER,
            plan="starter",
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        with pytest.raises(LicenseError, match="no usable key 'rotated-away'"):
            verify_license(unknown, source, customer_id=CUSTOMER)
    finally:
        server.stop()
