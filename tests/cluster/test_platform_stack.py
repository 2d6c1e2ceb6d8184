"""The `platform` stack for real: the billing namespace with its API, Postgres, secrets and RBAC."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pulumi import automation as auto

from automation.provision import destroy_customer
from automation.workspace import StackSettings, open_stack
from licensing.keys import generate_private_key_pem
from tests.cluster.conftest import wait_until

pytestmark = pytest.mark.engine
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def test_platform_stack_up_and_destroy(tmp_path: Path, cluster):
    settings = StackSettings.in_folder(tmp_path, "platform-e2e", str(cluster.kubeconfig))
    state = tmp_path / "state"
    stack = open_stack("platform", settings)
    signing_key = generate_private_key_pem().decode()
    stack.set_all_config(
        {
            "iotistic:kubeconfig": auto.ConfigValue(str(cluster.kubeconfig)),
            "iotistic:stripeSecretKey": auto.ConfigValue("sk_test_platform_e2e", secret=True),
            "iotistic:stripeWebhookSecret": auto.ConfigValue("whsec_platform_e2e", secret=True),
            "iotistic:licenseSigningKey": auto.ConfigValue(signing_key, secret=True),
        }
    )
    api = cluster.api()
    try:
        up = stack.up(color="never")
        assert up.outputs["billingUrl"].value == "https://billing.iotistic.cloud"
        assert up.outputs["databasePassword"].secret

        deployment = api.get("/apis/apps/v1/namespaces/billing/deployments/billing-api")
        assert deployment["status"]["availableReplicas"] == 1
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "billing-deployer"
        worker = api.get("/apis/apps/v1/namespaces/billing/deployments/billing-worker")
        assert worker["status"]["availableReplicas"] == 1
        assert worker["spec"]["template"]["spec"]["serviceAccountName"] == "billing-deployer"
        assert up.outputs["adminToken"].secret
        postgres = api.get("/apis/apps/v1/namespaces/billing/statefulsets/postgres")
        assert postgres["status"]["readyReplicas"] == 1
        ingress = api.get("/apis/networking.k8s.io/v1/namespaces/billing/ingresses/billing")
        assert ingress["spec"]["rules"][0]["host"] == "billing.iotistic.cloud"
        assert ingress["status"]["loadBalancer"]["ingress"]
        secret = api.get("/api/v1/namespaces/billing/secrets/billing-secrets")["data"]
        assert base64.b64decode(secret["STRIPE_SECRET_KEY"]).decode() == "sk_test_platform_e2e"
        binding = api.get(f"{RBAC}/clusterrolebindings/iotistic-billing-deployer")
        deployer = {"kind": "ServiceAccount", "name": "billing-deployer", "namespace": "billing"}
        assert binding["subjects"] == [deployer]

        # The billing data is protected like a customer's: namespace, Postgres and its volume.
        protected = {
            r["type"].rsplit(":", 1)[-1]
            for r in stack.export_stack().deployment["resources"]
            if r.get("protect")
        }
        assert protected == {"Namespace", "StatefulSet"}

        # The keys never reach the stored state in plaintext.
        stored = "".join(p.read_text() for p in state.rglob("*.json"))
        for value in ("sk_test_platform_e2e", "whsec_platform_e2e", signing_key.splitlines()[1]):
            assert value not in stored
    finally:
        # Protected resources: the destroy path unprotects them first, as for a customer.
        destroyed = destroy_customer("platform", settings)
    assert destroyed.ok, destroyed.error
    wait_until(lambda: api.get("/api/v1/namespaces/billing") is None, 120, "the billing namespace to go")
    assert api.get(f"{RBAC}/clusterroles/iotistic-billing-deployer") is None
