"""Customer stacks for real: tenants.yaml → reconcile → CustomerInstance on the local control plane.

One long scenario (deploys are the expensive part): two customers up, a re-run that does
nothing, a plan change with exactly the expected diff, drift found by refresh and repaired by
up, no plaintext secret in state or logs, a removed tenant reported then destroyed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi import automation as auto

from automation.provision import deployed_license
from automation.reconcile import LicenseSigner, reconcile
from automation.workspace import StackSettings, open_stack
from licensing.keys import generate_private_key_pem
from tests.cluster.conftest import wait_until

pytestmark = pytest.mark.engine

TENANTS = """\
tenants:
  - id: acme
    email: ops@acme.example
    company: ACME Corp
    plan: starter
    overrides:
      storage: {storage_class: standard}
  - id: globex
    email: it@globex.example
    company: Globex
    plan: professional
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory, cluster):
    root = tmp_path_factory.mktemp("customers")
    settings = StackSettings.in_folder(root, "e2e-passphrase", str(cluster.kubeconfig))
    signer = LicenseSigner(generate_private_key_pem(), "test-1")
    tenants = root / "tenants.yaml"
    yield settings, signer, tenants, cluster.api()
    # Leave the shared cluster clean even when an assertion failed half-way.
    tenants.write_text("tenants: []\n")
    reconcile(tenants, settings, signer, parallel=2, destroy_removed=True)


def _by_stack(results):
    return {r.stack: r for r in results}


def _namespace_objects(api, ns: str) -> dict:
    get = api.get
    return {
        "deployments": get(f"/apis/apps/v1/namespaces/{ns}/deployments")["items"],
        "statefulset": get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/postgres"),
        "pvcs": get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims")["items"],
        "ingress": get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/instance"),
        "quota": get(f"/api/v1/namespaces/{ns}/resourcequotas/instance-quota"),
        "policies": get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")["items"],
        "secret": get(f"/api/v1/namespaces/{ns}/secrets/instance-secrets"),
    }


def assert_instance_ready(api, ns: str) -> None:
    objs = _namespace_objects(api, ns)
    names = sorted(d["metadata"]["name"] for d in objs["deployments"])
    assert names == ["api", "billing-exporter", "dashboard", "mosquitto"]
    for d in objs["deployments"]:
        assert d["status"].get("availableReplicas") == 1, d["metadata"]["name"]
    assert objs["statefulset"]["status"]["readyReplicas"] == 1
    assert sorted(p["status"]["phase"] for p in objs["pvcs"]) == ["Bound", "Bound"]
    assert objs["ingress"]["status"]["loadBalancer"]["ingress"], "ingress has no load-balancer status"
    assert objs["quota"]["status"]["hard"] == objs["quota"]["spec"]["hard"]
    assert len(objs["policies"]) == 3
    assert set(objs["secret"]["data"]) >= {"IOTISTIC_LICENSE_KEY", "DATABASE_URL", "POSTGRES_PASSWORD"}


def test_customer_stacks_end_to_end(env):
    settings, signer, tenants, api = env
    tenants.write_text(TENANTS)

    # --- two customers up, in parallel processes ------------------------------------------------
    first = _by_stack(reconcile(tenants, settings, signer, parallel=2, destroy_removed=False))
    assert {k: (r.action, r.ok) for k, r in first.items()} == {
        "acme": ("create", True),
        "globex": ("create", True),
    }, [r.error for r in first.values()]
    assert first["acme"].outputs["instanceUrl"] == "https://acme.iotistic.cloud"
    for ns in ("customer-acme", "customer-globex"):
        assert_instance_ready(api, ns)

    # --- nothing changed: nothing deployed ------------------------------------------------------
    again = _by_stack(reconcile(tenants, settings, signer, parallel=2, destroy_removed=False))
    assert {r.action for r in again.values()} == {"none (unchanged)"}

    # --- a plan change: exactly the expected diff, Postgres and its volume untouched -------------
    pvc_uid = api.get("/api/v1/namespaces/customer-acme/persistentvolumeclaims/data-postgres-0")["metadata"][
        "uid"
    ]
    sts_uid = api.get("/apis/apps/v1/namespaces/customer-acme/statefulsets/postgres")["metadata"]["uid"]
    tenants.write_text(TENANTS.replace("plan: starter", "plan: professional", 1))
    stack = open_stack("acme", settings)
    stack.set_config("iotistic:plan", auto.ConfigValue("professional"))
    preview = stack.preview()
    # A plan change is an in-place update: nothing is replaced or deleted.
    assert set(preview.change_summary) <= {"same", "update"}, preview.change_summary
    changed = _by_stack(reconcile(tenants, settings, signer, parallel=2, destroy_removed=False))
    assert changed["acme"].action == "update" and changed["acme"].ok, changed["acme"].error
    assert changed["acme"].changes == {"update": 3}  # namespace label, secret (new license), API deployment
    assert changed["globex"].action == "none (unchanged)"
    assert (
        api.get("/api/v1/namespaces/customer-acme/persistentvolumeclaims/data-postgres-0")["metadata"]["uid"]
        == pvc_uid
    )
    assert (
        api.get("/apis/apps/v1/namespaces/customer-acme/statefulsets/postgres")["metadata"]["uid"] == sts_uid
    )
    ns_labels = api.get("/api/v1/namespaces/customer-acme")["metadata"]["labels"]
    assert ns_labels["iotistic.io/plan"] == "professional"

    # --- drift: an edit behind Pulumi's back is found by refresh and repaired by up --------------
    api.request(
        "PATCH",
        "/apis/apps/v1/namespaces/customer-globex/deployments/dashboard",
        {"spec": {"replicas": 3}},
        content_type="application/merge-patch+json",
    )
    globex = open_stack("globex", settings)
    refreshed = globex.refresh(color="never")
    assert refreshed.summary.resource_changes.get("update") == 1
    assert globex.preview().change_summary.get("update") == 1
    repaired = globex.up(color="never")
    assert repaired.summary.resource_changes.get("update") == 1
    assert api.get("/apis/apps/v1/namespaces/customer-globex/deployments/dashboard")["spec"]["replicas"] == 1

    # --- no plaintext secret in the state or the deployment logs --------------------------------
    logs: list[str] = []
    open_stack("acme", settings).up(on_output=logs.append, color="never")
    password = deployed_outputs_secret(settings, "acme", "databasePassword")
    license_key = deployed_license("acme", settings)
    exported = export_without_secrets(settings, "acme")
    stored = "".join(
        p.read_text() for p in Path(settings.backend_url.removeprefix("file://")).rglob("*.json")
    )
    for secret in (password, license_key):
        assert secret and secret not in exported and secret not in stored and secret not in "\n".join(logs)

    # --- a removed tenant is reported, and destroyed only when asked -----------------------------
    tenants.write_text(TENANTS.split("  - id: globex")[0].replace("plan: starter", "plan: professional"))
    reported = _by_stack(reconcile(tenants, settings, signer, parallel=2, destroy_removed=False))
    assert reported["globex"].action.startswith("none (removed")
    assert api.get("/api/v1/namespaces/customer-globex") is not None
    tenants.write_text("tenants: []\n")
    gone = _by_stack(reconcile(tenants, settings, signer, parallel=2, destroy_removed=True))
    assert {k: (r.action, r.ok) for k, r in gone.items()} == {
        "acme": ("destroy", True),
        "globex": ("destroy", True),
    }
    for ns in ("customer-acme", "customer-globex"):
        wait_until(
            lambda ns=ns: api.get(f"/api/v1/namespaces/{ns}") is None, 120, f"namespace {ns} to be deleted"
        )


def deployed_outputs_secret(settings: StackSettings, stack_name: str, key: str) -> str:
    return open_stack(stack_name, settings).outputs()[key].value


def export_without_secrets(settings: StackSettings, stack_name: str) -> str:
    """`pulumi stack export` as a user would run it (no --show-secrets)."""
    from automation.engine import locate_engine

    engine = locate_engine()
    proc = engine.cli(
        "stack",
        "export",
        "--stack",
        stack_name,
        cwd=settings.work_root / stack_name,
        env=engine.env(settings.backend_url, settings.passphrase),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
