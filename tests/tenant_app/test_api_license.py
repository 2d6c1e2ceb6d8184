"""The API under every kind of license: refused attacks, expiry (reads only), renewal without restart."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from licensing import sign_license
from tests.tenant_app.conftest import KID, new_device_id
from tests.tenant_app.test_licensing import b64, claims_of, forge


def _attacks(keys) -> dict[str, str]:
    genuine = keys.license(plan="enterprise")
    header, _, signature = genuine.split(".")
    claims = claims_of(genuine)
    tampered_claims = {**claims, "limits": {**claims["limits"], "maxDevices": 10**6}}
    hs_header = {"alg": "HS256", "typ": "JWT", "kid": KID}
    hs_input = f"{b64(json.dumps(hs_header).encode())}.{b64(json.dumps(claims).encode())}"
    hs_sig = hmac.new(keys.public_pem, hs_input.encode(), hashlib.sha256).digest()
    return {
        "forged": sign_license(
            keys.attacker_private_pem,
            kid=KID,
            customer_id="acme",
            plan="enterprise",
            expires_at=datetime.now(UTC) + timedelta(days=365),
        ),
        "tampered": f"{header}.{b64(json.dumps(tampered_claims).encode())}.{signature}",
        "wrong-customer": keys.license(customer="globex"),
        "alg-none": forge({"alg": "none", "typ": "JWT"}, claims),
        "hs256-with-public-key": f"{hs_input}.{b64(hs_sig)}",
    }


@pytest.mark.parametrize(
    "attack", ["forged", "tampered", "wrong-customer", "alg-none", "hs256-with-public-key"]
)
def test_refused_license_blocks_every_endpoint_and_health_says_why(attack, keys, license_file, start_api):
    license_file.write_text(_attacks(keys)[attack])
    api = start_api()
    health = api.call("GET", "/health")
    assert health.status == 200
    assert health.body["license"]["state"] == "invalid"
    assert health.body["status"] == "degraded"
    assert "plan" not in health.body["license"]  # nothing from a refused token is trusted
    for method, path, body in (
        ("GET", "/api/devices", None),
        ("POST", "/api/devices", {"id": new_device_id()}),
        ("POST", "/api/sensor-data", {"device_id": "d1", "temperature": 20}),
        ("GET", "/api/readings/latest", None),
    ):
        r = api.call(method, path, body)
        assert r.status == 403, (path, r.body)
        assert r.body["error"].startswith("license invalid")


def test_expired_license_answers_402_for_writes_keeps_reads_and_health_reports_it(
    keys, license_file, start_api
):
    api = start_api()
    device = new_device_id()
    assert api.call("POST", "/api/devices", {"id": device}).status == 201
    assert api.call("POST", "/api/sensor-data", {"device_id": device, "temperature": 21.0}).status == 201

    license_file.write_text(keys.license(days=-2))
    r = api.call("POST", "/api/sensor-data", {"device_id": device, "temperature": 22.0})
    assert r.status == 402
    assert "license expired on" in r.body["error"] and "reading existing data still works" in r.body["error"]
    assert api.call("POST", "/api/devices", {"id": new_device_id()}).status == 402
    assert api.call("DELETE", f"/api/devices/{device}").status == 402

    latest = api.call("GET", "/api/readings/latest")
    assert latest.status == 200 and latest.body["readings"][0]["temperature"] == 21.0
    assert api.call("GET", f"/api/devices/{device}/readings").status == 200
    health = api.call("GET", "/health").body
    assert health["license"]["state"] == "expired" and health["license"]["expired"] is True


def test_renewed_license_file_is_picked_up_without_restart(keys, license_file, start_api):
    license_file.write_text(keys.license(days=-1))
    api = start_api()
    device = new_device_id()
    assert api.call("POST", "/api/devices", {"id": device}).status == 402

    # Kubernetes swaps the mounted secret's file; write the renewed token the same way (atomic rename).
    renewed = license_file.with_name("renewed.tmp")
    renewed.write_text(keys.license(plan="professional", days=30))
    renewed.replace(license_file)

    assert api.call("POST", "/api/devices", {"id": device}).status == 201
    lic = api.call("GET", "/api/license").body
    assert (lic["state"], lic["plan"]) == ("valid", "professional")


def test_missing_license_is_reported_not_crashed(settings, start_api):
    api = start_api(settings.with_(license_key_file=settings.license_key_file.with_name("absent")))
    health = api.call("GET", "/health").body
    assert health["license"]["state"] == "missing"
    assert api.call("GET", "/api/devices").status == 403
