"""Deploys that fail half-way, for real: the API server refuses one write in the middle of an `up`.

The refusals come from ValidatingAdmissionPolicies (built into the API server) that the tests
create and lift, the way the 1,000-customer run's quota admission refused one Service:
- a reconcile never counts a stack whose last deploy failed as unchanged: the next run deploys it
  again, a create as a create and an update as an update;
- a write refused with the API server's optimistic-concurrency conflict is tried again by the
  deploy path, in the same job.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from automation.bookkeeping import deployed_stacks
from automation.deploy import DeployJob, run_job
from automation.provision import SOURCE_TENANTS_FILE, tenant_hash
from automation.reconcile import LicenseSigner, reconcile
from automation.workspace import StackSettings
from devenv.kubeapi import KubeAPI, KubeAPIError
from licensing.keys import generate_private_key_pem
from tenancy.schema import load_tenants
from tests.cluster.conftest import wait_until

pytestmark = pytest.mark.engine

POLICIES = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
# The `default` namespace stands in for the customer's in a dry-run probe, so the test knows when
# the API server enforces (or no longer enforces) a policy before it deploys.
PROBE_NAMESPACE = "default"


def _probe_refused(api: KubeAPI, probe: tuple[str, str, dict, str]) -> bool:
    method, path, body, content_type = probe
    try:
        api.request(method, path + "?dryRun=All", body, content_type)
        return False
    except KubeAPIError as e:
        if e.status in (403, 422):
            return True
        raise


@contextlib.contextmanager
def refusing(
    api: KubeAPI,
    rule: dict,
    expression: str,
    message: str,
    probe: tuple[str, str, dict, str],
) -> Iterator[None]:
    """The API server refuses the writes `rule` matches where `expression` is false, until exit."""
    name = f"test-refuse-{secrets.token_hex(3)}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rule]},
            "validations": [{"expression": expression, "message": message}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    api.request("POST", POLICIES, policy)
    api.request("POST", BINDINGS, binding)
    try:
        wait_until(lambda: _probe_refused(api, probe), 30, f"the API server to enforce {name}")
        yield
    finally:
        api.delete(f"{BINDINGS}/{name}")
        api.delete(f"{POLICIES}/{name}")
        wait_until(lambda: not _probe_refused(api, probe), 30, f"the API server to drop {name}")


def refusing_service_create(api: KubeAPI, namespace: str, service: str, message: str):
    """Creating the Service `service` in `namespace` is refused with `message`."""
    probe_body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service},
        "spec": {"ports": [{"port": 1883}]},
    }
    return refusing(
        api,
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["services"]},
        f"!(object.metadata.name == '{service}' && "
        f"request.namespace in ['{namespace}', '{PROBE_NAMESPACE}'])",
        message,
        ("POST", f"/api/v1/namespaces/{PROBE_NAMESPACE}/services", probe_body, "application/json"),
    )


def refusing_namespace_update(api: KubeAPI, namespace: str, message: str):
    """Any change to the Namespace object `namespace` is refused with `message`."""
    return refusing(
        api,
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["namespaces"]},
        f"!(object.metadata.name in ['{namespace}', '{PROBE_NAMESPACE}'])",
        message,
        (
            "PATCH",
            f"/api/v1/namespaces/{PROBE_NAMESPACE}",
            {"metadata": {"labels": {"iotistic.io/probe": "1"}}},
            "application/merge-patch+json",
        ),
    )


@pytest.fixture
def one_tenant(tmp_path, cluster):
    tenant_id = f"fd-{secrets.token_hex(3)}"
    settings = StackSettings.in_folder(tmp_path, "failed-deploys", str(cluster.kubeconfig))
    signer = LicenseSigner(generate_private_key_pem(), "fd-1")
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        f"tenants:\n  - id: {tenant_id}\n    email: ops@{tenant_id}.example\n"
        "    company: FD\n    plan: starter\n"
    )
    yield tenant_id, settings, signer, tenants, cluster.api()
    tenants.write_text("tenants: []\n")
    reconcile(tenants, settings, signer, parallel=1, destroy_removed=True)


def _only(results):
    (result,) = [r for r in results if not r.action.startswith("none (removed")]
    return result


def test_a_failed_deploy_is_never_counted_as_unchanged(one_tenant):
    tenant_id, settings, signer, tenants, api = one_tenant
    namespace = f"customer-{tenant_id}"

    # --- a create refused half-way: nothing recorded, the next run creates it -----------------
    with refusing_service_create(api, namespace, "mosquitto", "refused by the test"):
        failed = _only(reconcile(tenants, settings, signer, parallel=1, destroy_removed=False))
    assert (failed.action, failed.ok) == ("create", False)
    assert "refused by the test" in failed.error
    assert api.get(f"/api/v1/namespaces/{namespace}") is not None, "the create did not get half-way"
    assert deployed_stacks(settings)[tenant_id].tenant_hash is None

    created = _only(reconcile(tenants, settings, signer, parallel=1, destroy_removed=False))
    assert (created.action, created.ok) == ("create", True), created.error
    assert api.get(f"/api/v1/namespaces/{namespace}/services/mosquitto") is not None
    (tenant,) = load_tenants(tenants)
    assert deployed_stacks(settings)[tenant_id].tenant_hash == tenant_hash(tenant)

    # --- an update refused: the previous fingerprint stays, the next run updates -----------------
    tenants.write_text(tenants.read_text().replace("plan: starter", "plan: professional"))
    with refusing_namespace_update(api, namespace, "namespace frozen by the test"):
        failed = _only(reconcile(tenants, settings, signer, parallel=1, destroy_removed=False))
    assert (failed.action, failed.ok) == ("update", False)
    assert "namespace frozen by the test" in failed.error
    assert deployed_stacks(settings)[tenant_id].tenant_hash == tenant_hash(tenant)  # the old one

    updated = _only(reconcile(tenants, settings, signer, parallel=1, destroy_removed=False))
    assert (updated.action, updated.ok) == ("update", True), updated.error
    labels = api.get(f"/api/v1/namespaces/{namespace}")["metadata"]["labels"]
    assert labels["iotistic.io/plan"] == "professional"

    again = _only(reconcile(tenants, settings, signer, parallel=1, destroy_removed=False))
    assert again.action == "none (unchanged)"


# What the API server says when a write loses an optimistic-concurrency race (the 1,000-customer
# run's failure: the ResourceQuota admission plugin updating the quota's usage).
CONFLICT = (
    'Operation cannot be fulfilled on resourcequotas "instance-quota": the object has been modified; '
    "please apply your changes to the latest version and try again"
)


def test_a_write_refused_on_a_conflict_is_tried_again_in_the_same_deploy(one_tenant):
    tenant_id, settings, signer, tenants, api = one_tenant
    (tenant,) = load_tenants(tenants)
    license_key = signer.license_for(tenant, None, datetime.now(UTC))
    job = DeployJob("up", tenant_id, settings, tenant, license_key, SOURCE_TENANTS_FILE)
    lines: list[str] = []
    results: list = []
    deploy = threading.Thread(target=lambda: results.append(run_job(job, 300, lines.append)))
    with refusing_service_create(api, f"customer-{tenant_id}", "mosquitto", CONFLICT):
        deploy.start()
        # The conflict clears while the deploy waits to try again, as a real one does.
        wait_until(
            lambda: any("lost a conflict" in ln for ln in lines), 240, "the deploy to meet the conflict"
        )
    deploy.join(300)
    (result,) = results
    assert result.ok, result.error
    assert api.get(f"/api/v1/namespaces/customer-{tenant_id}/services/mosquitto") is not None
