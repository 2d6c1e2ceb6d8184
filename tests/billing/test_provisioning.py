"""Signup to a running instance for real: the billing API, a `python -m billing worker` process,
the Pulumi engine and the local control plane, Stripe events signed as Stripe signs them.

- signup → `deployed`, the namespace and its resources present, the license in the tenant
  Secret verifying against the JWKS;
- a failing deploy → `failed` with the engine's message; the cause fixed and a re-run → `deployed`;
- kill -9 of the worker mid-deploy → the job is retried and ends `deployed`, no stale lock, one stack;
- checkout → webhook → the new plan's license in the tenant Secret; payment failure past the grace
  period → suspended (replicas 0, volumes kept) → payment → running again; offboarding → destroyed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from licensing import verify_license
from tests.billing.conftest import (
    ADMIN,
    WEBHOOK_SECRET,
    bearer,
    login_token,
    post_webhook,
    rows,
    signup,
    stripe_event,
)
from tests.billing.test_signup_api import JwksKeys
from tests.cluster.conftest import wait_until
from tests.cluster.test_customer_stacks import assert_instance_ready

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
DEPLOY_TIMEOUT = 240


class Worker:
    """`python -m billing worker` as a process of its own, with its log kept for failures."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "billing", "worker"], cwd=ROOT, env=self.env, stdout=out, stderr=out
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def platform(settings, signing_key, stripe_mock, cluster, tmp_path):
    """The environment a worker pod gets: the billing database and keys, a state backend of its
    own, the local cluster; fast heartbeats so a killed worker's jobs come back in seconds."""
    state = tmp_path / "state"
    state.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "IOTISTIC_"))},
        "IOTISTIC_CACHE": os.environ.get("IOTISTIC_CACHE", str(ROOT / ".cache")),
        "IOTISTIC_DATA": str(tmp_path / "data"),
        "IOTISTIC_BACKEND_URL": f"file://{state}",
        "IOTISTIC_STACK_CONFIG_DIR": str(tmp_path / "stacks"),
        "IOTISTIC_KUBECONFIG": str(cluster.kubeconfig),
        "PULUMI_CONFIG_PASSPHRASE": "billing-e2e",
        "DATABASE_URL": settings.database_url,
        "LICENSE_SIGNING_KEY_FILE": str(signing_key.private_file),
        "LICENSE_KEY_ID": settings.signing_key_id,
        "BCRYPT_ROUNDS": "4",
        "STRIPE_SECRET_KEY": "sk_test_123",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe_mock.url,
        "STRIPE_PRICE_PROFESSIONAL": "price_pro",
        "PAYMENT_GRACE_DAYS": "0",
        "SUSPENSION_CHECK_CRON": "* * * * * */2",
        "WORKER_CONCURRENCY": "2",
        "WORKER_HEARTBEAT_SECONDS": "1",
        "WORKER_STALLED_AFTER_SECONDS": "4",
        "DEPLOY_TIMEOUT_SECONDS": "300",
    }
    workers: list[Worker] = []

    def start_worker() -> Worker:
        w = Worker(env, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(w)
        return w

    yield start_worker, state, cluster.api()
    for w in workers:
        w.stop()
    # Leave the shared cluster clean: destroy what the scenario left behind.
    for (cid,) in rows(
        settings.database_url, "SELECT id::text FROM customers WHERE deployment_status <> 'destroyed'"
    ):
        if cluster.api().get(f"/api/v1/namespaces/customer-{cid}") is not None:
            _destroy_leftover(env, cid)


def _destroy_leftover(env: dict[str, str], customer_id: str) -> None:
    code = (
        "from automation.deploy import DeployJob, run_job; from automation.workspace import StackSettings; "
        f"print(run_job(DeployJob('destroy', {customer_id!r}, StackSettings.from_env()), 300))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=400, check=False)


def status(client, cid: str) -> dict:
    return client.get(f"/api/customers/{cid}", headers=ADMIN).json


def wait_status(client, cid: str, wanted: str, worker: Worker, timeout: float = DEPLOY_TIMEOUT) -> dict:
    def check():
        current = status(client, cid)
        if current["deployment_status"] == "failed" and wanted != "failed":
            pytest.fail(f"deploy failed: {current['deployment_error']}\n{worker.tail()}")
        return current if current["deployment_status"] == wanted else None

    try:
        return wait_until(check, timeout, f"customer {cid} to be {wanted}", interval=1)
    except BaseException:
        print(worker.tail())
        raise


def deployments(settings, cid: str) -> list[tuple]:
    """(status, changes) of every deploy attempt of the customer, oldest first."""
    return rows(
        settings.database_url,
        "SELECT status, changes FROM deployments WHERE customer_id = %s ORDER BY id",
        cid,
    )


def tenant_license(api, cid: str) -> str:
    secret = api.get(f"/api/v1/namespaces/customer-{cid}/secrets/instance-secrets")
    return base64.b64decode(secret["data"]["IOTISTIC_LICENSE_KEY"]).decode()


def test_signup_checkout_suspension_and_offboarding_end_to_end(client, platform, settings):
    start_worker, state, api = platform
    worker = start_worker()
    signed_up = signup(client).json
    cid = signed_up["customer_id"]
    assert signed_up["deployment_status"] == "provisioning"  # answered before any deploy ran

    done = wait_status(client, cid, "deployed", worker)
    assert done["deployed_at"] and done["deployment_error"] is None
    ns = f"customer-{cid}"
    assert_instance_ready(api, ns)
    keys = JwksKeys(client.get("/.well-known/jwks.json").json)
    lic = verify_license(tenant_license(api, cid), keys, customer_id=cid)
    assert (lic.plan, lic.trial) == ("starter", True)

    # Re-running the job of a deployed customer is a no-op `up`.
    assert client.post(f"/api/admin/customers/{cid}/deploy", headers=ADMIN).status_code == 202
    wait_until(
        lambda: len(deployments(settings, cid)) == 2 and deployments(settings, cid)[-1][0] == "succeeded",
        DEPLOY_TIMEOUT,
        "the re-run deploy",
        interval=1,
    )
    assert deployments(settings, cid)[-1][1] == {}

    # --- upgrade: checkout (stripe-mock), then Stripe's webhook ------------------------------------
    token = login_token(client)
    assert (
        client.post(
            "/api/subscriptions/create-checkout-session", json={"plan": "professional"}, headers=bearer(token)
        ).status_code
        == 200
    )
    (stripe_customer,) = rows(
        settings.database_url, "SELECT stripe_customer_id FROM customers WHERE id = %s", cid
    )[0]
    now = int(time.time())
    completed = stripe_event(
        "checkout.session.completed",
        {
            "customer": stripe_customer,
            "subscription": "sub_e2e",
            "client_reference_id": cid,
            "metadata": {"customer_id": cid, "plan": "professional"},
        },
        created=now,
    )
    assert post_webhook(client, completed).status_code == 200
    wait_until(
        lambda: verify_license(tenant_license(api, cid), keys, customer_id=cid).plan == "professional",
        DEPLOY_TIMEOUT,
        "the professional license in the tenant Secret",
        interval=1,
    )
    wait_status(client, cid, "deployed", worker)
    pvc_uid = api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-postgres-0")["metadata"]["uid"]

    # --- a failed payment, no grace (PAYMENT_GRACE_DAYS=0): suspended, data kept ----------------------
    failed = stripe_event(
        "invoice.payment_failed", {"customer": stripe_customer, "subscription": "sub_e2e"}, now + 1
    )
    assert post_webhook(client, failed).status_code == 200
    wait_until(lambda: status(client, cid)["status"] == "suspended", 60, "the suspension", interval=1)

    def scaled(replicas: int) -> bool:
        deployments = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments")["items"]
        sts = api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/postgres")
        return (
            all(d["spec"]["replicas"] == replicas for d in deployments)
            and sts["spec"]["replicas"] == replicas
        )

    wait_until(lambda: scaled(0), DEPLOY_TIMEOUT, "every workload scaled to zero", interval=1)
    wait_status(client, cid, "deployed", worker)
    assert (
        api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-postgres-0")["metadata"]["uid"]
        == pvc_uid
    )

    # --- the payment arrives: running again ------------------------------------------------------------
    paid = stripe_event("invoice.paid", {"customer": stripe_customer, "subscription": "sub_e2e"}, now + 2)
    assert post_webhook(client, paid).status_code == 200
    wait_until(lambda: status(client, cid)["status"] == "active", 60, "the reactivation", interval=1)
    wait_until(lambda: scaled(1), DEPLOY_TIMEOUT, "the workloads back at one replica", interval=1)
    wait_status(client, cid, "deployed", worker)
    assert_instance_ready(api, ns)
    actions = [
        a
        for (a,) in rows(
            settings.database_url, "SELECT action FROM audit_log WHERE customer_id = %s ORDER BY id", cid
        )
    ]
    assert actions.index("suspended") < actions.index("reactivated")

    # --- offboarding: the stack goes, the customer and its history stay ---------------------------------
    assert client.delete(f"/api/customers/{cid}", headers=ADMIN).status_code == 202
    wait_status(client, cid, "destroyed", worker)
    wait_until(lambda: api.get(f"/api/v1/namespaces/{ns}") is None, 120, f"namespace {ns} to go")
    assert rows(settings.database_url, "SELECT status FROM customers WHERE id = %s", cid) == [("deleted",)]
    assert len(rows(settings.database_url, "SELECT 1 FROM license_history WHERE customer_id = %s", cid)) >= 4
    # `pulumi stack rm` keeps a .bak of the last state file; the stack itself is gone.
    assert not list((state / ".pulumi" / "stacks").rglob(f"{cid}.json")), "the stack was not removed"


VAP = "/apis/admissionregistration.k8s.io/v1"


def test_a_failing_deploy_reports_the_engine_message_and_a_rerun_after_the_fix_deploys(client, platform):
    start_worker, _, api = platform
    # The cluster refuses customer namespaces for now (an admission policy an operator set).
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "iotistic-e2e-freeze"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["namespaces"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!object.metadata.name.startsWith('customer-')",
                    "message": "customer namespaces are frozen for maintenance",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "iotistic-e2e-freeze"},
        "spec": {"policyName": "iotistic-e2e-freeze", "validationActions": ["Deny"]},
    }
    api.ensure(f"{VAP}/validatingadmissionpolicies", policy)
    api.ensure(f"{VAP}/validatingadmissionpolicybindings", binding)
    try:
        # Policies take effect once the API server has loaded them: probe with a namespace of our own.
        probe = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "customer-freeze-probe"}}

        def frozen() -> bool:
            try:
                api.request("POST", "/api/v1/namespaces", probe)
            except Exception:
                return True
            api.request("DELETE", "/api/v1/namespaces/customer-freeze-probe")
            return False

        wait_until(frozen, 30, "the admission policy to take effect")
        worker = start_worker()
        cid = signup(client).json["customer_id"]
        failed = wait_status(client, cid, "failed", worker)
        assert "customer namespaces are frozen for maintenance" in failed["deployment_error"]
        assert "Traceback" not in failed["deployment_error"]
    finally:
        api.request("DELETE", f"{VAP}/validatingadmissionpolicybindings/iotistic-e2e-freeze")
        api.request("DELETE", f"{VAP}/validatingadmissionpolicies/iotistic-e2e-freeze")

    def thawed() -> bool:
        try:
            api.request("POST", "/api/v1/namespaces", probe)
        except Exception:
            return False
        api.request("DELETE", "/api/v1/namespaces/customer-freeze-probe")
        return True

    wait_until(thawed, 30, "the admission policy to be gone")
    assert client.post(f"/api/admin/customers/{cid}/deploy", headers=ADMIN).status_code == 202
    wait_status(client, cid, "deployed", worker)
    assert_instance_ready(api, f"customer-{cid}")


def test_a_worker_killed_mid_deploy_leaves_no_lock_and_the_job_ends_deployed(client, platform, settings):
    start_worker, state, api = platform
    first = start_worker()
    cid = signup(client).json["customer_id"]
    ns = f"customer-{cid}"
    # Mid-deploy: the engine holds the stack's lock and has begun creating the instance.
    wait_until(
        lambda: api.get(f"/api/v1/namespaces/{ns}") is not None, DEPLOY_TIMEOUT, "the deploy to start", 0.2
    )
    assert status(client, cid)["deployment_status"] == "deploying"
    first.kill()

    second = start_worker()
    done = wait_status(client, cid, "deployed", second)
    assert done["deployment_error"] is None
    assert_instance_ready(api, ns)
    locks = state / ".pulumi" / "locks"
    assert not [p for p in locks.rglob("*.json")] if locks.exists() else True, "a stale lock was left"
    stacks = [p.name for p in (state / ".pulumi" / "stacks").rglob("*.json")]
    assert stacks == [f"{cid}.json"], stacks
    attempts = rows(
        settings.database_url, "SELECT status FROM deployments WHERE customer_id = %s ORDER BY id", cid
    )
    assert attempts[-1] == ("succeeded",) and len(attempts) >= 2
    print(json.dumps({"attempts": [a for (a,) in attempts]}))
