"""Real pods on the local cluster: a customer instance that actually runs, end to end.

One module, one real node, tests in the order a reviewer would look: the node beside the
simulated ones; two customers placed on it through tenants.yaml and reconcile (the unchanged
CustomerInstance); a device's reading crossing MQTT -> consumer -> Postgres -> API and the
exporter; tenant isolation by NetworkPolicy; Postgres' volume surviving its pod; one real node per
machine; and `cluster stop` leaving nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from automation.reconcile import LicenseSigner, reconcile
from automation.workspace import StackSettings
from components.placement import REAL_NODE_LABEL, REAL_NODE_TAINT
from devenv import node_host
from devenv.__main__ import cluster_command
from devenv.cluster import LocalCluster
from devenv.node import NODE_NAME
from devenv.node_host import NodeBusy
from licensing import sign_access_token
from licensing.keys import generate_private_key_pem, public_key_pem
from tenant_app.simulator import publish_readings
from tests.cluster.conftest import wait_until
from tests.node.conftest import PortForward, host_snapshot, pods_report, ready
from tests.tenant_app.helpers import http

pytestmark = pytest.mark.engine

CUSTOMERS = ("real-a", "real-b")
TENANTS = "tenants:\n" + "".join(
    f"  - id: {c}\n    email: ops@{c}.example\n    company: {c.upper()}\n    plan: professional\n"
    "    overrides:\n      placement: {node: real}\n"
    for c in CUSTOMERS
)
WORKLOADS = ("api", "billing-exporter", "dashboard", "mosquitto", "postgres")


def ns(customer: str) -> str:
    return f"customer-{customer}"


def pods(api, namespace: str) -> dict[str, dict]:
    """The namespace's pods by app label (one pod per workload)."""
    items = api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    return {
        p["metadata"]["labels"]["app"]: p for p in items if p["metadata"].get("deletionTimestamp") is None
    }


@pytest.fixture(scope="module")
def customers(real_cluster: LocalCluster, kubectl, tmp_path_factory) -> dict:
    """Both customers provisioned through tenants.yaml -> reconcile, as a platform engineer would."""
    root = tmp_path_factory.mktemp("real-customers")
    signer = LicenseSigner(generate_private_key_pem(), "real-1")
    settings = replace(
        StackSettings.in_folder(root, "real-node-passphrase", str(real_cluster.kubeconfig)),
        # The instances cannot reach a billing service here: they are given its public key.
        license_public_key=public_key_pem(signer.private_pem).decode(),
    )
    tenants = root / "tenants.yaml"
    tenants.write_text(TENANTS)
    began = time.monotonic()
    results = reconcile(tenants, settings, signer, parallel=2, destroy_removed=False)
    failed = [f"{r.stack}: {r.error}" for r in results if not r.ok]
    if failed:
        report = pods_report(kubectl, [ns(c) for c in CUSTOMERS], "real-node-customers")
        node_logs = real_cluster.data_dir / "node" / "logs"
        pytest.fail("\n".join([*failed, f"node logs: {node_logs}", report[-6000:]]))
    # An operator signed in to each instance: the billing login's token format, the same key.
    tokens = {
        customer: sign_access_token(
            signer.private_pem,
            kid=signer.kid,
            customer_id=customer,
            subject="real-node-test",
            ttl=timedelta(hours=1),
        )
        for customer in ("real-a", "real-b")
    }
    return {"seconds": time.monotonic() - began, "settings": settings, "tokens": tokens}


def test_the_real_node_runs_beside_the_simulated_ones(real_cluster: LocalCluster, kubectl):
    api = real_cluster.api()
    nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes")["items"]}
    real = nodes[NODE_NAME]
    assert real["metadata"]["labels"][REAL_NODE_LABEL] == "real"
    assert {"key": REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"} in real["spec"]["taints"]
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    assert real["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert sum(1 for name in nodes if name.startswith("kwok-node-")) == real_cluster.nodes
    # Cluster DNS is a real pod on it.
    dns = api.get("/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app=kube-dns")["items"]
    assert dns and all(p["spec"]["nodeName"] == NODE_NAME and ready(p) for p in dns)
    # A pod that does not ask for the real node never lands there (scale tests stay simulated).
    kubectl("create", "namespace", "placement-check")
    kubectl("-n", "placement-check", "run", "plain", "--image=registry.k8s.io/pause:3.10", "--restart=Never")
    pod = wait_until(
        lambda: (
            (api.get("/api/v1/namespaces/placement-check/pods/plain") or {}).get("spec", {}).get("nodeName")
        ),
        30,
        "the plain pod to be scheduled",
    )
    assert pod.startswith("kwok-node-")
    kubectl("delete", "namespace", "placement-check", "--wait=false")


def test_a_real_customer_runs_for_real_and_its_api_verifies_the_license(real_cluster, kubectl, customers):
    api = real_cluster.api()
    for customer in CUSTOMERS:
        found = pods(api, ns(customer))
        assert sorted(found) == list(WORKLOADS), customer
        for app, pod in found.items():
            assert pod["spec"]["nodeName"] == NODE_NAME, (customer, app)
            assert ready(pod), (customer, app, pod["status"])
            for status in pod["status"]["containerStatuses"]:
                assert status["ready"] and status["containerID"].startswith("containerd://"), (app, status)
                assert status["image"].startswith("iotistic.local/"), (app, status["image"])
        pvcs = api.get(f"/api/v1/namespaces/{ns(customer)}/persistentvolumeclaims")["items"]
        assert sorted(p["status"]["phase"] for p in pvcs) == ["Bound", "Bound"]
        assert {p["spec"]["storageClassName"] for p in pvcs} == {"local-path"}
    with PortForward(kubectl, ns("real-a"), "svc/api", 3001) as fwd:
        health = http("GET", fwd.url + "/health")
        assert health.status == 200, health.text
        assert health.body["database"] == "ok"
        assert health.body["license"]["state"] == "valid", health.body
        assert health.body["license"]["plan"] == "professional"
        assert health.body["customer_id"] == "real-a"
    print(f"two real customer instances Ready in {customers['seconds']:.0f} s (reconcile, parallel 2)")


def test_a_device_reading_crosses_the_cluster_into_postgres_and_the_exporter(kubectl, customers):
    device = f"sensor-{uuid.uuid4().hex[:8]}"
    with PortForward(kubectl, ns("real-a"), "svc/api", 3001) as api_fwd:
        token = customers["tokens"]["real-a"]
        registered = http(
            "POST", api_fwd.url + "/api/devices", {"id": device, "name": "real node test"}, token=token
        )
        assert registered.status == 201, registered.text
        creds = registered.body["mqtt"]
        assert creds["host"] == "mosquitto.customer-real-a.svc.cluster.local"
        with PortForward(kubectl, ns("real-a"), "svc/mosquitto", 1883) as mqtt_fwd:
            broker = f"mqtt://127.0.0.1:{mqtt_fwd.port}"
            sent = publish_readings(broker, creds["username"], creds["password"], count=3, interval=0.2)
        assert sent == 3

        def stored():
            r = http("GET", api_fwd.url + f"/api/devices/{device}/readings", token=token)
            return r.body if r.status == 200 and len(r.body.get("readings", [])) >= 3 else None

        body = wait_until(stored, 60, "the readings to come back from the API")
        assert all(15.0 <= r["temperature"] <= 32.0 for r in body["readings"])
    with PortForward(kubectl, ns("real-a"), "svc/billing-exporter", 9090) as metrics_fwd:

        def counted():
            text = http("GET", metrics_fwd.url + "/metrics").text
            for line in text.splitlines():
                if line.startswith("iotistic_readings_ingested_total{"):
                    return float(line.rsplit(" ", 1)[1]) >= 3
            return False

        wait_until(counted, 60, "the exporter to count the readings")


PROBE = """
import json, socket
out = {}
for name, host, port in %s:
    try:
        socket.create_connection((host, port), timeout=4).close()
        out[name] = "open"
    except OSError as e:
        out[name] = type(e).__name__
print(json.dumps(out))
"""


BLOCKED = ("TimeoutError", "ConnectionRefusedError")


def probe_from(kubectl, namespace: str, targets: list[tuple[str, str, int]]) -> dict[str, str]:
    """TCP connections attempted from inside the namespace's API pod (kubectl exec)."""
    proc = kubectl("-n", namespace, "exec", "deploy/api", "-c", "api", "--", "python", "-c", PROBE % targets)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_network_policy_refuses_other_tenants_and_allows_the_own_namespace(kubectl, customers):
    svc = "svc.cluster.local"
    targets = [
        ("own postgres", f"postgres.customer-real-a.{svc}", 5432),
        ("own mosquitto", f"mosquitto.customer-real-a.{svc}", 1883),
        ("other postgres", f"postgres.customer-real-b.{svc}", 5432),
        ("other mosquitto", f"mosquitto.customer-real-b.{svc}", 1883),
    ]
    result = probe_from(kubectl, ns("real-a"), targets)
    assert result["own postgres"] == "open" and result["own mosquitto"] == "open", result
    # The names resolve (DNS is allowed); the connections themselves are dropped or rejected.
    assert result["other postgres"] in BLOCKED and result["other mosquitto"] in BLOCKED, result
    # And the other way round.
    back = probe_from(kubectl, ns("real-b"), [("a's postgres", f"postgres.customer-real-a.{svc}", 5432)])
    assert back["a's postgres"] in BLOCKED, back


def test_a_deleted_postgres_pod_comes_back_with_its_data(real_cluster, kubectl, customers):
    api = real_cluster.api()
    namespace = ns("real-a")
    with PortForward(kubectl, namespace, "svc/api", 3001) as fwd:
        token = customers["tokens"]["real-a"]
        before = http("GET", fwd.url + "/api/devices", token=token).body["devices"]
    assert before, "the device test registered at least one device"
    old_uid = pods(api, namespace)["postgres"]["metadata"]["uid"]
    kubectl("-n", namespace, "delete", "pod", "postgres-0", "--wait=true", timeout=120)

    def back():
        pod = pods(api, namespace).get("postgres")
        return pod if pod and pod["metadata"]["uid"] != old_uid and ready(pod) else None

    wait_until(back, 120, "a new postgres-0 to be Ready")
    # The volume is a real folder on this machine, bound to the node.
    pvc = api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/data-postgres-0")
    pv = api.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    folder = Path(pv["spec"].get("hostPath", pv["spec"].get("local", {}))["path"])
    assert folder.is_relative_to(real_cluster.real_node.volumes)
    assert (folder / "pgdata" / "PG_VERSION").read_text().strip() == "15"

    def same_devices():
        with PortForward(kubectl, namespace, "svc/api", 3001) as fwd:
            r = http("GET", fwd.url + "/api/devices", token=token)
            return r.body["devices"] if r.status == 200 else None

    assert wait_until(same_devices, 90, "the API to read from the new Postgres pod") == before


def test_the_images_command_builds_from_cache_and_lists_every_image(real_cluster):
    """`python -m devenv images build` with nothing changed: every layer cached, all imported."""
    env = {**os.environ, "IOTISTIC_DATA": str(real_cluster.data_dir.parent)}
    build = subprocess.run(
        [sys.executable, "-m", "devenv", "images", "build"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert "0 steps built" in build.stdout, build.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "devenv", "images", "list"], capture_output=True, text=True
    )
    assert (
        "iotistic.local/postgres:15" in listed.stdout and "tenant_app/docker/Dockerfile.api" in listed.stdout
    )


# The engine it carries, then the code of both commands, the program it deploys and the policy pack.
ENGINE_CHECK = (
    "pulumi version && pulumi plugin ls && "
    'python -c "import billing.api, billing.jobs, automation.provision, program, policy.pack" && '
    "echo imports ok"
)


def test_the_billing_image_runs_its_engine_on_the_real_node(real_cluster, kubectl):
    """The billing image, built from billing/Dockerfile, runs the engine it carries as its own user."""
    namespace = "billing-image-check"
    kubectl("create", "namespace", namespace)
    overrides = {
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: "real"},
            "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "engine",
                    "image": "iotistic.local/iotistic/billing:local",
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", ENGINE_CHECK],
                }
            ],
        }
    }
    kubectl(
        "-n", namespace, "run", "engine", "--image=iotistic.local/iotistic/billing:local",
        "--restart=Never", f"--overrides={json.dumps(overrides)}",
    )  # fmt: skip
    api = real_cluster.api()

    def finished():
        pod = api.get(f"/api/v1/namespaces/{namespace}/pods/engine") or {}
        phase = pod.get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, 120, "the billing image's pod to finish")
    logs = kubectl("-n", namespace, "logs", "engine").stdout
    assert phase == "Succeeded", logs
    assert logs.splitlines()[0].startswith("v3."), logs
    rows = [line.split() for line in logs.splitlines()]
    # The plugins the project pins, registered in the image's PULUMI_HOME (no download possible).
    assert any(r[:3] == ["kubernetes", "resource", "4.25.0"] for r in rows), logs
    assert any(r[:3] == ["random", "resource", "4.21.1"] for r in rows), logs
    assert "imports ok" in logs, logs
    kubectl("delete", "namespace", namespace, "--wait=false")


def test_a_second_real_node_is_refused_naming_the_first(real_cluster, tmp_path):
    other = LocalCluster.on_free_ports(tmp_path / "other")
    with pytest.raises(NodeBusy) as err:
        other.real_node.start()
    assert str(real_cluster.data_dir) in str(err.value)
    assert "cluster stop" in str(err.value)


def test_cluster_stop_leaves_nothing_behind(real_cluster, host_before):
    """With both instances running: no process, mount, netns, cgroup, sysctl or folder is left."""
    began = time.monotonic()
    assert cluster_command("stop", real_cluster) == 0
    print(f"cluster stop with two instances running took {time.monotonic() - began:.1f} s")
    assert node_host.leftovers(real_cluster.data_dir) == []
    assert host_snapshot() == host_before
    assert node_host.processes_using(str(real_cluster.data_dir)) == []
    assert not real_cluster.running()
