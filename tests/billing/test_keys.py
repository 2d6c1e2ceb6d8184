"""The signing key: from a file, an environment variable or AWS Secrets Manager (moto server);
rotation by `kid` keeps earlier licenses valid; the private key never reaches a log."""

from __future__ import annotations

import logging
from dataclasses import replace

import boto3
import jwt
import pytest

from billing.api import create_app
from billing.config import BillingSettings, ConfigError
from billing.context import build
from billing.keys import load_signing_key
from licensing import verify_license
from licensing.keys import generate_private_key_pem
from tests.billing.conftest import KID, signup
from tests.billing.test_signup_api import JwksKeys


def test_the_key_comes_from_a_file_or_an_environment_variable(settings, signing_key):
    from_file = load_signing_key(settings)
    pem = signing_key.private_file.read_text()
    from_env = load_signing_key(
        BillingSettings.from_env(
            {"DATABASE_URL": settings.database_url, "LICENSE_SIGNING_KEY": pem, "LICENSE_KEY_ID": KID}
        )
    )
    assert from_file.public_pem == from_env.public_pem == signing_key.public_pem
    assert pem.splitlines()[1] not in repr(from_env) and "LICENSE_SIGNING_KEY" not in repr(settings)


def test_the_key_comes_from_aws_secrets_manager(
    settings, signing_key, moto_endpoint, no_ambient_aws, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    boto3.client("secretsmanager").create_secret(
        Name="iotistic/license-signing-key", SecretString=signing_key.private_file.read_text()
    )
    env = {
        "DATABASE_URL": settings.database_url,
        "LICENSE_SIGNING_KEY_SECRET_ID": "iotistic/license-signing-key",
        "LICENSE_KEY_ID": KID,
    }
    assert load_signing_key(BillingSettings.from_env(env)).public_pem == signing_key.public_pem
    missing = BillingSettings.from_env({**env, "LICENSE_SIGNING_KEY_SECRET_ID": "iotistic/nope"})
    with pytest.raises(
        ConfigError, match="cannot read the signing key from AWS Secrets Manager secret 'iotistic/nope'"
    ):
        load_signing_key(missing)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"signing_key_file": None}, "set exactly one of"),
        ({"signing_key_pem": "-----BEGIN PRIVATE KEY-----\nnot a key\n"}, "set exactly one of"),
        (
            {"signing_key_file": None, "signing_key_pem": "not a key"},
            "LICENSE_SIGNING_KEY is not an unencrypted PEM",
        ),
    ],
)
def test_a_missing_or_bad_key_is_a_clear_error_without_the_key(settings, changes, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_signing_key(replace(settings, **changes))
    assert "not a key" not in str(e.value)


def test_rotation_keeps_licenses_of_the_previous_key_valid_until_they_expire(billing, client, tmp_path):
    old = signup(client).json
    new_file = tmp_path / "new.pem"
    new_file.write_bytes(generate_private_key_pem())
    rotated = build(
        replace(billing.settings, signing_key_file=new_file, signing_key_id="billing-2"),
        apply_migrations=False,
    )
    try:
        new_client = create_app(rotated).test_client()
        jwks = new_client.get("/.well-known/jwks.json").json
        assert [k["kid"] for k in jwks["keys"]] == ["billing-2", KID]
        keys = JwksKeys(jwks)
        assert verify_license(old["license"], keys, customer_id=old["customer_id"]).key_id == KID
        fresh = signup(new_client, email="it@globex.example").json
        assert jwt.get_unverified_header(fresh["license"])["kid"] == "billing-2"
        assert verify_license(fresh["license"], keys, customer_id=fresh["customer_id"]).key_id == "billing-2"
    finally:
        rotated.pool.close()


def test_a_kid_that_names_another_key_is_refused(billing, tmp_path):
    other = tmp_path / "other.pem"
    other.write_bytes(generate_private_key_pem())
    with pytest.raises(ConfigError, match=f"LICENSE_KEY_ID '{KID}' already names another key"):
        build(replace(billing.settings, signing_key_file=other), apply_migrations=False)


def test_the_private_key_never_reaches_the_logs(settings, signing_key, caplog):
    caplog.set_level(logging.DEBUG)
    pem = signing_key.private_file.read_text()
    b = build(replace(settings, signing_key_file=None, signing_key_pem=pem), apply_migrations=False)
    try:
        client = create_app(b).test_client()
        signup(client)
        client.post("/api/customers/signup", json={"email": "bad"})
    finally:
        b.pool.close()
    body = pem.splitlines()[1]
    assert caplog.records and all(
        body not in r.getMessage() and body not in str(r.__dict__) for r in caplog.records
    )
