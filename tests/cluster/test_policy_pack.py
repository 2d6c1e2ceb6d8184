"""Every rule of the policy pack on the real engine: a stack that breaks it is refused, through the
CLI (`pulumi preview --policy-pack policy`, which scripts/env.sh adds) and through the Automation
API path that reconcile and the signup worker share (automation.provision.up_customer).

The rules' details are unit-tested in tests/unit/test_policy_rules.py.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from automation.provision import SOURCE_SIGNUP, up_customer
from automation.reconcile import LicenseSigner
from automation.workspace import POLICY_PACK, StackSettings, list_stacks
from licensing.keys import generate_private_key_pem
from tenancy.schema import Tenant

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def project(tmp_path_factory, engine, cluster):
    from tests.conftest import make_project

    p = make_project("policy_stack", tmp_path_factory.mktemp("policy") / "policy_stack", engine)
    p.run("stack", "init", "dev")
    p.run("config", "set", "--secret", "kubeconfig", cluster.kubeconfig.read_text())
    return p


def preview(project, broken: str = "", environment: str = "development"):
    project.run("config", "set", "break", broken)
    project.run("config", "set", "environment", environment)
    return project.run("preview", "--policy-pack", str(POLICY_PACK), check=False)


def test_a_stack_that_keeps_every_rule_previews_cleanly(project):
    proc = preview(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "iotistic@v1.0.0" in proc.stdout and "mandatory" not in proc.stdout


@pytest.mark.parametrize(
    ("broken", "policy", "messages"),
    [
        (
            "guardrails",
            "customer-namespace-guardrails",
            ["customer namespace customer-policy has no LimitRange"],
        ),
        (
            "container",
            "container-resources-and-security",
            [
                "container 'app' of Deployment customer-policy/",
                "has no cpu limit, memory limit",
                "allows privilege escalation: set allowPrivilegeEscalation: false",
            ],
        ),
        (
            "service",
            "no-external-services",
            ["is of type NodePort: customer instances are reached through their Ingress only"],
        ),
        (
            "credentials",
            "no-credentials-in-config",
            [
                "env DB_PASSWORD of container 'app' in Deployment customer-policy/",
                "is a credential as a literal value: use valueFrom.secretKeyRef",
                "key 'app.ini' holds a URL with a password: keep credentials in a Secret",
            ],
        ),
        (
            "volume",
            "postgres-volume-size",
            [
                "volume data of StatefulSet customer-policy/postgres is 5Gi, smaller than the starter "
                "plan's 10Gi"
            ],
        ),
        (
            "unprotected",
            "stateful-resources-protected",
            [
                "Namespace customer-policy holds data and is not protected",
                "StatefulSet customer-policy/postgres",
            ],
        ),
    ],
)
def test_breaking_a_mandatory_rule_fails_the_preview_with_its_message(project, broken, policy, messages):
    proc = preview(project, broken)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"- [mandatory]  {policy}  (" in proc.stdout, out
    for message in messages:
        assert message in out, out


def test_latest_images_are_advisory_in_development_and_refused_in_production(project):
    advisory = preview(project, "image")
    assert advisory.returncode == 0, advisory.stdout + advisory.stderr
    assert "- [advisory]  image-tags  (" in advisory.stdout, advisory.stdout
    assert "image docker.io/iotistic/api:latest of container 'app'" in advisory.stdout
    refused = preview(project, "image", environment="production")
    assert refused.returncode != 0
    assert "- [mandatory]  image-tags-production  (" in refused.stdout, refused.stdout


def test_the_deploy_path_of_reconcile_and_the_worker_refuses_a_violation_before_creating_anything(
    tmp_path, cluster
):
    settings = StackSettings.in_folder(tmp_path, "policy-passphrase", str(cluster.kubeconfig))
    tenant = Tenant(
        f"pol-{secrets.token_hex(3)}",
        "ops@small.example",
        "Small",
        "starter",
        {"storage": {"postgres_size": "5Gi"}},
    )
    signer = LicenseSigner(generate_private_key_pem(), "policy-1")
    result = up_customer(
        tenant, signer.license_for(tenant, None, datetime.now(UTC)), settings, source=SOURCE_SIGNUP
    )
    assert not result.ok
    assert result.error.startswith(
        "refused by the policy pack:\n- postgres-volume-size: volume data of StatefulSet "
        f"customer-{tenant.id}/postgres is 5Gi, smaller than the starter plan's 10Gi"
    ), result.error
    assert cluster.api().get(f"/api/v1/namespaces/customer-{tenant.id}") is None, "the violation was deployed"
    assert tenant.id in list_stacks(settings)  # the stack exists, empty: a fixed entry deploys into it
