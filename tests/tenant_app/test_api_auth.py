"""Sign-in for every API call: people (access tokens), scripts (API keys), devices (their own credentials)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from flask import Flask, jsonify

from licensing import public_jwks, sign_access_token
from tenant_app.api.security import PUBLIC_ENDPOINTS
from tests.tenant_app.conftest import CUSTOMER, KID, new_device_id
from tests.tenant_app.helpers import Server, http
from tests.tenant_app.test_licensing import b64, claims_of

ROOT = Path(__file__).resolve().parents[2]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def every_api_route(app) -> list[tuple[str, str]]:
    """(method, path) of every /api route, path parameters filled with plausible values."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or not rule.rule.startswith("/api"):
            continue
        path = re.sub(r"<row_id:\w+>", "1", rule.rule)
        path = re.sub(r"<[^>]+>", "d1", path)
        out += [(m, path) for m in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return out


def test_every_api_route_except_health_and_the_openapi_document_needs_a_credential(api):
    routes = every_api_route(api.app)
    assert len(routes) >= 14, routes  # devices, readings, alerts, keys, telemetry, license...
    for method, path in [*routes, ("GET", "/api/no-such-route"), ("PUT", "/api/devices")]:
        r = api.call(method, path, {} if method in ("POST", "PUT") else None, token=None)
        assert r.status == 401, (method, path, r.text)
        assert r.body["error"].startswith("sign in first") and r.headers["WWW-Authenticate"].startswith(
            "Bearer"
        )
    assert http("GET", api.url + "/health").status == 200
    assert http("GET", api.url + "/api/openapi.json").status == 200
    assert sorted(PUBLIC_ENDPOINTS) == ["api-docs.openapi_json", "health.health"]


def _refused_tokens(keys) -> dict[str, str]:
    genuine = keys.token(role="read")
    claims = claims_of(genuine)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": KID}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    hs256 = hmac.new(keys.public_pem, signing_input.encode(), hashlib.sha256).digest()
    head, _, sig = genuine.split(".")
    as_admin = {**claims, "role": "admin"}
    return {
        "another customer's": keys.token(customer="globex"),
        "expired": keys.token(issued_at=datetime.now(UTC) - timedelta(minutes=20)),
        "a license": keys.license(),
        "alg none": ".".join(
            [b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode()), b64(json.dumps(claims).encode()), ""]
        ),
        "HS256 with the public key": f"{signing_input}.{b64(hs256)}",
        "signed by another key": sign_access_token(
            keys.attacker_private_pem, kid=KID, customer_id=CUSTOMER, subject="mallory"
        ),
        "tampered role": f"{head}.{b64(json.dumps(as_admin).encode())}.{sig}",
        "not a token": "hello",
        "an unknown API key": "iotk_" + "A" * 43,
    }


@pytest.mark.parametrize(
    "kind",
    [
        "another customer's",
        "expired",
        "a license",
        "alg none",
        "HS256 with the public key",
        "signed by another key",
        "tampered role",
        "not a token",
        "an unknown API key",
    ],
)
def test_a_refused_credential_is_a_401_and_changes_nothing(kind, api, keys, settings):
    r = api.call("POST", "/api/devices", {"id": new_device_id()}, token=_refused_tokens(keys)[kind])
    assert r.status == 401, r.text
    assert isinstance(r.body["error"], str) and r.body["error"]
    assert api.call("GET", "/api/devices", token=_refused_tokens(keys)[kind]).status == 401
    assert api.call("GET", "/api/devices").body["devices"] == []


def test_read_only_people_read_and_admins_change(api, keys):
    reader = keys.token(role="read")
    device = new_device_id()
    assert api.call("POST", "/api/devices", {"id": device}).status == 201  # admin
    assert api.call("GET", "/api/devices", token=reader).status == 200
    assert api.call("GET", "/api/license", token=reader).body["plan"] == "starter"
    for method, path, body in (
        ("POST", "/api/devices", {"id": new_device_id()}),
        ("DELETE", f"/api/devices/{device}", None),
        ("POST", "/api/sensor-data", {"device_id": device, "temperature": 20}),
        ("POST", "/api/alerts/rules", {"metric": "temperature", "operator": ">", "threshold": 1}),
        ("GET", "/api/keys", None),
        ("POST", "/api/keys", {"name": "x", "role": "admin"}),
    ):
        r = api.call(method, path, body, token=reader)
        assert r.status == 403, (method, path, r.text)
        assert "role read" in r.body["error"]


def test_api_keys_for_scripts_are_shown_once_stored_hashed_and_revocable(api, settings):
    created = api.call("POST", "/api/keys", {"name": "nightly export", "role": "read"})
    assert created.status == 201
    secret, key_id = created.body["secret"], created.body["key"]["id"]
    listed = api.call("GET", "/api/keys").body["keys"]
    assert [k["name"] for k in listed] == ["nightly export"] and "secret" not in json.dumps(listed)
    with psycopg.connect(settings.database_url) as conn:
        dump = json.dumps([list(map(str, row)) for row in conn.execute("SELECT * FROM api_keys")])
    assert secret not in dump
    assert api.call("GET", "/api/readings/latest", token=secret).status == 200
    assert api.call("POST", "/api/devices", {"id": new_device_id()}, token=secret).status == 403
    assert api.call("DELETE", f"/api/keys/{key_id}").body["key"]["revoked_at"]
    assert api.call("GET", "/api/readings/latest", token=secret).status == 401
    for bad in ({"name": "x", "role": "root"}, {"name": "", "role": "read"}, {"role": "read"}):
        assert api.call("POST", "/api/keys", bad).status == 400


def test_the_first_key_comes_from_the_command_line_and_works(api, settings):
    env = {
        **os.environ,
        "CUSTOMER_ID": settings.customer_id,
        "DATABASE_URL": settings.database_url,
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run(
        [sys.executable, "-m", "tenant_app.keys", "create", "--name", "ci", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    secret = run.stdout.strip()
    assert secret.startswith("iotk_") and "shown once" in run.stderr
    assert api.call("POST", "/api/devices", {"id": new_device_id()}, token=secret).status == 201
    listed = subprocess.run(
        [sys.executable, "-m", "tenant_app.keys", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "admin" in listed.stdout and "ci" in listed.stdout and secret not in listed.stdout


def test_devices_send_readings_over_http_with_their_own_credentials_only(api, mosquitto):
    a = api.call("POST", "/api/devices", {"id": new_device_id()}).body["mqtt"]
    b = api.call("POST", "/api/devices", {"id": new_device_id()}).body["mqtt"]
    as_a = basic(a["username"], a["password"])
    r = api.call("POST", "/api/sensor-data", {"temperature": 21.5}, token=None, headers=as_a)
    assert r.status == 201 and r.body["stored"] == 1
    other = {"device_id": b["username"], "temperature": 30}
    r = api.call("POST", "/api/sensor-data", other, token=None, headers=as_a)
    assert r.status == 403 and "only send its own readings" in r.body["error"]
    assert api.call("GET", "/api/devices", token=None, headers=as_a).status == 403
    wrong = basic(a["username"], b["password"])
    assert api.call("POST", "/api/sensor-data", {"temperature": 1}, token=None, headers=wrong).status == 401
    latest = {x["device_id"]: x for x in api.call("GET", "/api/readings/latest").body["readings"]}
    assert set(latest) == {a["username"]}
    api.call("DELETE", f"/api/devices/{a['username']}")
    assert api.call("POST", "/api/sensor-data", {"temperature": 1}, token=None, headers=as_a).status == 401


def test_access_tokens_are_verified_against_the_billing_jwks_by_kid(settings, keys, start_api):
    """In the cluster the instance has no PEM: license and tokens are checked against the key set."""
    billing = Flask(__name__)
    fetches: list[int] = []
    billing.get("/.well-known/jwks.json")(
        lambda: (fetches.append(1), jsonify(public_jwks(keys.public_pem, KID)))[1]
    )
    jwks = Server(billing)
    try:
        api = start_api(
            settings.with_(license_public_key_file=None, license_jwks_url=jwks.url + "/.well-known/jwks.json")
        )
        assert api.call("GET", "/api/license").body["state"] == "valid"
        assert api.call("GET", "/api/devices", token=keys.token(role="read")).status == 200
        other_kid = sign_access_token(keys.private_pem, kid="unknown-kid", customer_id=CUSTOMER, subject="x")
        r = api.call("GET", "/api/devices", token=other_kid)
        assert r.status == 401 and "unknown-kid" in r.body["error"]
        # Invented kids do not turn every request into a fetch from the billing service.
        before = len(fetches)
        for i in range(20):
            forged = sign_access_token(keys.private_pem, kid=f"kid-{i}", customer_id=CUSTOMER, subject="x")
            assert api.call("GET", "/api/devices", token=forged).status == 401
        assert len(fetches) - before <= 1
    finally:
        jwks.stop()
