"""The root program under Pulumi mocks: which inputs it reads, and what it declares for each stack."""

from __future__ import annotations

import runpy
from pathlib import Path

import pulumi
import pytest

from tests.pulumi_mocks import install_mocks, run_program

ROOT = Path(__file__).resolve().parents[2]


def run_main(stack: str, config: dict[str, str], secret_keys: tuple[str, ...] = ()):
    mocks = install_mocks(stack=stack)
    pulumi.runtime.set_all_config(
        {f"iotistic:{k}": v for k, v in config.items()}, [f"iotistic:{k}" for k in secret_keys]
    )
    try:
        run_program(lambda: runpy.run_path(str(ROOT / "__main__.py")))
    finally:
        pulumi.runtime.set_all_config({}, [])
    return mocks


def namespaces(mocks) -> list[str]:
    return [r.inputs["metadata"]["name"] for r in mocks.of_type("kubernetes:core/v1:Namespace")]


def test_customer_from_stack_config():
    mocks = run_main(
        "signup1",
        {"email": "a@b.io", "company": "B", "plan": "enterprise", "licenseKey": "jwt"},
        ("licenseKey",),
    )
    assert namespaces(mocks) == ["customer-signup1"]
    ns = mocks.of_type("kubernetes:core/v1:Namespace")[0]
    assert ns.inputs["metadata"]["labels"]["iotistic.io/plan"] == "enterprise"


def test_customer_from_tenants_file(tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  - id: acme\n    email: ops@acme.io\n    company: ACME\n"
        "    overrides: {networking: {base_domain: eu.example}}\n"
    )
    mocks = run_main("acme", {"tenantsFile": str(tenants), "licenseKey": "jwt"}, ("licenseKey",))
    assert namespaces(mocks) == ["customer-acme"]
    (ing,) = mocks.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    assert ing.inputs["spec"]["rules"][0]["host"] == "acme.eu.example"


def test_unknown_customer_is_a_clear_error(tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants: []\n")
    with pytest.raises(Exception, match="no entry with id 'ghost'"):
        run_main("ghost", {"tenantsFile": str(tenants), "licenseKey": "jwt"}, ("licenseKey",))


def test_platform_stack_declares_the_billing_namespace():
    mocks = run_main(
        "platform",
        {"stripeSecretKey": "sk", "stripeWebhookSecret": "wh", "licenseSigningKey": "pem"},
        ("stripeSecretKey", "stripeWebhookSecret", "licenseSigningKey"),
    )
    assert namespaces(mocks) == ["billing"]
    (ing,) = mocks.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    assert ing.inputs["spec"]["rules"][0]["host"] == "billing.iotistic.cloud"
    (secret,) = mocks.of_type("kubernetes:core/v1:Secret")
    assert {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "LICENSE_SIGNING_KEY", "DATABASE_URL"} <= set(
        secret.inputs["stringData"]
    )
    assert mocks.of_type("kubernetes:apps/v1:StatefulSet")[0].inputs["metadata"]["name"] == "postgres"


def test_platform_stack_runs_the_billing_api_and_its_provisioning_worker():
    mocks = run_main(
        "platform",
        {
            "stripeSecretKey": "sk",
            "stripeWebhookSecret": "wh",
            "licenseSigningKey": "pem",
            "stateBackendUrl": "s3://iotistic-state?region=eu-central-1",
            "statePassphrase": "pp",
            "workerReplicas": "3",
        },
        ("stripeSecretKey", "stripeWebhookSecret", "licenseSigningKey", "statePassphrase"),
    )
    by_name = {d.inputs["metadata"]["name"]: d.inputs for d in mocks.of_type("kubernetes:apps/v1:Deployment")}
    assert set(by_name) == {"billing-api", "billing-worker"}
    worker = by_name["billing-worker"]
    assert worker["spec"]["replicas"] == 3
    commands = {
        name: d["spec"]["template"]["spec"]["containers"][0]["command"] for name, d in by_name.items()
    }
    assert commands == {
        "billing-api": ["python", "-m", "billing", "serve"],
        "billing-worker": ["python", "-m", "billing", "worker"],
    }
    # The worker deploys customer stacks with the deployer's in-cluster credentials.
    assert worker["spec"]["template"]["spec"]["serviceAccountName"] == "billing-deployer"
    env = {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["IOTISTIC_BACKEND_URL"]["value"] == "s3://iotistic-state?region=eu-central-1"
    for secret in ("DATABASE_URL", "LICENSE_SIGNING_KEY", "ADMIN_TOKEN", "PULUMI_CONFIG_PASSPHRASE"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "billing-secrets", secret
    (secret,) = mocks.of_type("kubernetes:core/v1:Secret")
    assert secret.is_secret("stringData", "PULUMI_CONFIG_PASSPHRASE")
    assert secret.is_secret("stringData", "ADMIN_TOKEN")
