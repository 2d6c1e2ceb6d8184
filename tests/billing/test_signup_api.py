"""The billing API over HTTP on a real Postgres: signup, login, status, admin, and hostile input."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from billing.api import create_app
from licensing import LicenseError, verify_access_token, verify_license
from tests.billing.conftest import ADMIN, KID, bearer, jobs, login_token, rows, signup
from tests.tenant_app.helpers import Server, http


class JwksKeys:
    """A licensing KeySource over a JWKS document fetched from the service under test."""

    def __init__(self, document: dict) -> None:
        self._set = jwt.PyJWKSet.from_dict(document)

    def key_for(self, token: str, kid: str | None):
        for key in self._set.keys:
            if key.key_id == kid:
                return key.key
        raise LicenseError(f"no key {kid!r}")


def customers(url: str) -> int:
    return rows(url, "SELECT count(*) FROM customers")[0][0]


def test_signup_answers_at_once_with_a_license_that_verifies_against_the_jwks(client, settings):
    resp = signup(client)
    assert resp.status_code == 201, resp.json
    body = resp.json
    cid = body["customer_id"]
    assert body["deployment_status"] == "provisioning"
    assert body["instance_url"] == f"https://{cid}.iotistic.cloud"
    keys = JwksKeys(client.get("/.well-known/jwks.json").json)
    lic = verify_license(body["license"], keys, customer_id=cid)
    assert (lic.plan, lic.trial, lic.key_id) == ("starter", True, KID)
    assert abs(lic.expires_at - (datetime.now(UTC) + timedelta(days=14))) < timedelta(minutes=1)

    url = settings.database_url
    assert rows(url, "SELECT status, deployment_status FROM customers WHERE id = %s", cid) == [
        ("active", "provisioning")
    ]
    subscription = rows(url, "SELECT plan, status FROM subscriptions WHERE customer_id = %s", cid)
    assert subscription == [("starter", "trialing")]
    assert rows(url, "SELECT action, reason, plan, kid FROM license_history WHERE customer_id = %s", cid) == [
        ("generated", "trial_signup", "starter", KID)
    ]
    audit = rows(url, "SELECT actor, action FROM audit_log WHERE customer_id = %s", cid)
    assert audit == [("customer", "signup")]
    (job,) = jobs(url, "deploy")
    assert job["args"] == {"customer_id": cid, "reason": "signup"} and job["lock"] == f"stack:{cid}"
    # The password is stored as a bcrypt hash of the configured cost, never as given.
    (stored,) = rows(url, "SELECT password_hash FROM customers WHERE id = %s", cid)[0]
    assert stored.startswith("$2b$04$") and "correct horse" not in stored


GOOD = {"email": "ops@acme.example", "password": "correct horse", "company_name": "A"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"password": "short"}, "password"),
        ({"password": "é" * 40}, "password"),
        ({"company_name": " "}, "company_name"),
        ({"company_name": None}, "company_name"),
        ({"password": 12345678}, "password"),
        ({"email": "o'; DROP TABLE customers;--@x.io"}, "email"),
        ({"email": "ops@acme.example\x00"}, "email"),
        ({"company_name": "\ud800"}, "company_name"),
        ({"admin": True}, "admin"),
    ],
)
def test_every_signup_rule_is_a_400_naming_the_field_and_writes_nothing(client, settings, changes, field):
    body = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    resp = client.post("/api/customers/signup", json=body)
    assert resp.status_code == 400, resp.json
    assert resp.json["field"] == field and resp.json["error"]
    assert customers(settings.database_url) == 0 and jobs(settings.database_url) == []


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b'{"email": "ops@acme.example", ', "application/json", 400),
        (b'{"email": NaN}', "application/json", 400),
        (b'{"email": 1e999}', "application/json", 400),
        (b'{"email": ' + b"9" * 5000 + b"}", "application/json", 400),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'"just a string"', "application/json", 400),
        (b'{"email": "ops@acme.example"}', "text/plain", 415),
        (b'{"company_name": "' + b"x" * 20000 + b'"}', "application/json", 413),
    ],
)
def test_malformed_bodies_get_a_json_4xx_and_nothing_is_written(client, settings, raw, content_type, status):
    resp = client.post("/api/customers/signup", data=raw, headers={"Content-Type": content_type})
    assert resp.status_code == status
    assert resp.is_json and resp.json["error"]
    assert customers(settings.database_url) == 0


def test_sql_metacharacters_in_a_company_name_are_stored_as_written(client, settings):
    name = "Robert'); DROP TABLE customers;--"
    assert signup(client, company=name).status_code == 201
    assert rows(settings.database_url, "SELECT company_name FROM customers") == [(name,)]


def test_an_email_is_taken_whatever_its_case(client):
    assert signup(client, email="Ops@Acme.Example").status_code == 201
    again = signup(client, email="ops@acme.example")
    assert again.status_code == 409 and "exists" in again.json["error"]


def test_concurrent_signups_of_one_address_give_one_201_and_409s(billing, settings):
    server = Server(create_app(billing))
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def one(i: int) -> None:
        barrier.wait()
        body = {"email": "race@acme.example", "password": "correct horse", "company_name": f"ACME {i}"}
        statuses.append(http("POST", f"{server.url}/api/customers/signup", body).status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        server.stop()
    assert sorted(statuses) == [201] + [409] * 7
    assert customers(settings.database_url) == 1
    assert len(jobs(settings.database_url, "deploy")) == 1


def test_login_gives_an_access_token_the_instance_verifies_locally(client):
    cid = signup(client).json["customer_id"]
    login = {"email": "OPS@acme.example", "password": "correct horse"}
    resp = client.post("/api/customers/login", json=login)
    assert resp.status_code == 200
    body = resp.json
    assert (body["token_type"], body["expires_in"], body["customer_id"]) == ("Bearer", 900, cid)
    keys = JwksKeys(client.get("/.well-known/jwks.json").json)
    token = verify_access_token(body["access_token"], keys, customer_id=cid)
    assert token.is_admin and token.key_id == KID


@pytest.mark.parametrize(
    "password",
    ["wrong password", "a" * 73, "é" * 40, "pass\x00word1", "\ud800" * 9],
)
def test_wrong_password_and_unknown_email_answer_alike(client, password):
    signup(client)
    wrong = client.post("/api/customers/login", json={"email": "ops@acme.example", "password": password})
    stranger = {"email": "nobody@acme.example", "password": "correct horse"}
    unknown = client.post("/api/customers/login", json=stranger)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json == {"error": "wrong email or password"}


def test_customer_status_is_for_that_customer_or_an_admin(client):
    cid = signup(client).json["customer_id"]
    token = login_token(client)
    mine = client.get(f"/api/customers/{cid}", headers=bearer(token))
    assert mine.status_code == 200
    assert {k: mine.json[k] for k in ("status", "deployment_status", "plan", "deployed_at")} == {
        "status": "active",
        "deployment_status": "provisioning",
        "plan": "starter",
        "deployed_at": None,
    }
    assert mine.json["subscription"]["status"] == "trialing" and mine.json["license_expires_at"]
    assert client.get(f"/api/customers/{cid}", headers=ADMIN).status_code == 200

    other = signup(client, email="it@globex.example").json["customer_id"]
    assert client.get(f"/api/customers/{other}", headers=bearer(token)).status_code == 403
    assert client.get(f"/api/customers/{cid}").status_code == 401
    assert client.get(f"/api/customers/{cid}", headers=bearer("garbage")).status_code == 401
    # A license is not a sign-in: it only proves identity to the checkout endpoint.
    lic = signup(client, email="x@initech.example").json["license"]
    assert client.get(f"/api/customers/{cid}", headers=bearer(lic)).status_code == 401
    assert client.get("/api/customers/not-a-uuid", headers=ADMIN).status_code == 404
    assert client.get("/api/customers/00000000-0000-0000-0000-000000000000", headers=ADMIN).status_code == 404


def test_admin_lists_customers_and_requeues_a_deploy_once(client, settings):
    cid = signup(client).json["customer_id"]
    listed = client.get("/api/admin/customers?limit=10", headers=ADMIN)
    assert listed.status_code == 200 and listed.json["total"] == 1
    assert listed.json["customers"][0]["id"] == cid and listed.json["customers"][0]["plan"] == "starter"
    assert client.get("/api/admin/customers", headers=bearer(login_token(client))).status_code == 403
    for bad in ("limit=0", "limit=%D9%A3", "offset=-1", "limit=" + "9" * 300):
        resp = client.get(f"/api/admin/customers?{bad}", headers=ADMIN)
        assert resp.status_code == 400, (bad, resp.json)
    # One deploy is already waiting (the signup's): a re-run request does not queue a second.
    assert client.post(f"/api/admin/customers/{cid}/deploy", headers=ADMIN).status_code == 202
    assert len(jobs(settings.database_url, "deploy")) == 1


def test_offboarding_keeps_the_history_queues_the_destroy_and_frees_the_email(client, settings):
    cid = signup(client).json["customer_id"]
    assert client.delete(f"/api/customers/{cid}", headers=bearer(login_token(client))).status_code == 403
    resp = client.delete(f"/api/customers/{cid}", headers=ADMIN)
    assert resp.status_code == 202 and resp.json["deployment_status"] == "destroying"
    url = settings.database_url
    assert rows(url, "SELECT status FROM customers WHERE id = %s", cid) == [("deleted",)]
    assert len(rows(url, "SELECT 1 FROM license_history WHERE customer_id = %s", cid)) == 1
    assert [j["args"] for j in jobs(url, "destroy")] == [{"customer_id": cid}]
    assert client.post(f"/api/admin/customers/{cid}/deploy", headers=ADMIN).status_code == 409
    assert signup(client).status_code == 201  # the address can sign up again


def test_the_openapi_document_lists_every_endpoint(client):
    doc = client.get("/openapi.json").json
    assert set(doc["paths"]) >= {
        "/api/customers/signup",
        "/api/customers/login",
        "/api/customers/{customer_id}",
        "/api/subscriptions/create-checkout-session",
        "/api/webhooks/stripe",
        "/api/admin/customers",
        "/api/admin/customers/{customer_id}/deploy",
        "/.well-known/jwks.json",
        "/health",
    }
    signup_doc = doc["paths"]["/api/customers/signup"]["post"]
    assert {"201", "400", "409"} <= set(signup_doc["responses"])
