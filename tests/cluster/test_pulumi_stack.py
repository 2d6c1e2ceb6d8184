"""`pulumi up` / `destroy` of real Kubernetes objects on the local control plane, every await on."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from devenv.cluster import LocalCluster
from devenv.kubeapi import KubeAPI
from tests.cluster.conftest import k8s_project, wait_until

pytestmark = pytest.mark.engine


def _ready_condition(obj: dict, kind: str) -> bool:
    return any(
        c["type"] == kind and c["status"] == "True" for c in obj.get("status", {}).get("conditions", [])
    )


def assert_stack_is_live(api: KubeAPI, ns: str, replicas: int = 2) -> None:
    """Read every object of tests/fixtures/k8s_stack back from the API server, in the state
    pulumi awaited: what a user would check with kubectl after `pulumi up`."""
    namespace = api.get(f"/api/v1/namespaces/{ns}")
    assert namespace["status"]["phase"] == "Active"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    assert api.get(f"/api/v1/namespaces/{ns}/configmaps/settings")["data"]["LOG_LEVEL"] == "info"
    secret = api.get(f"/api/v1/namespaces/{ns}/secrets/credentials")
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]) == b"not-a-real-password"

    deployment = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert deployment["status"]["availableReplicas"] == replicas
    assert _ready_condition(deployment, "Available")

    pods = api.request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb")["items"]
    assert len(pods) == replicas
    for pod in pods:
        assert pod["status"]["phase"] == "Running" and _ready_condition(pod, "Ready")
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        assert pod["status"]["containerStatuses"][0]["ready"] is True

    slices = api.request(
        "GET",
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb",
    )["items"]
    ready = [
        a
        for s in slices
        for e in s.get("endpoints", [])
        if e["conditions"].get("ready")
        for a in e["addresses"]
    ]
    assert sorted(ready) == sorted(p["status"]["podIP"] for p in pods)

    statefulset = api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/db")
    assert statefulset["status"]["readyReplicas"] == 1
    assert statefulset["status"]["currentRevision"] == statefulset["status"]["updateRevision"]
    claim = api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-db-0")
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "standard"
    assert api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")["status"]["phase"] == "Bound"

    ingress = api.get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/web")
    assert ingress["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]

    quota = api.get(f"/api/v1/namespaces/{ns}/resourcequotas/instance-quota")
    assert quota["status"]["hard"] == quota["spec"]["hard"]

    # The quota controller recounts usage on its own schedule, after the pods it counts are Ready.
    def usage() -> dict:
        return api.get(f"/api/v1/namespaces/{ns}/resourcequotas/instance-quota")["status"]["used"]

    wanted = {"pods": str(replicas + 1), "persistentvolumeclaims": "1"}
    wait_until(lambda: {k: usage().get(k) for k in wanted} == wanted, 60, f"quota usage {wanted}")

    policy = api.get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/same-namespace-only")
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_up_awaits_every_object_then_destroy_removes_the_namespace(cluster, engine, tmp_path):
    ns = f"stack-{os.getpid()}"
    project = k8s_project(tmp_path / "k8s_stack", engine, cluster, ns)
    try:
        up = project.run("up", "--yes", "--skip-preview", timeout=900)
        assert "13 created" in up.stdout, up.stdout
        outputs = json.loads(project.run("stack", "output", "--json").stdout)
        assert outputs["namespace"] == ns
        assert outputs["ingress_ip"] == "127.0.0.1"
        assert outputs["service_ip"].startswith("10.96.")

        api = cluster.api()
        assert_stack_is_live(api, ns)

        # An unchanged program on an unchanged cluster: nothing to do.
        project.run("up", "--yes", "--skip-preview", "--expect-no-changes", timeout=600)

        destroy = project.run("destroy", "--yes", "--skip-preview", timeout=900)
        assert "13 deleted" in destroy.stdout, destroy.stdout
        wait_until(lambda: api.get(f"/api/v1/namespaces/{ns}") is None, 120, f"namespace {ns} to be gone")
        volumes = api.request("GET", "/api/v1/persistentvolumes")["items"]
        assert not [v for v in volumes if v["spec"].get("claimRef", {}).get("namespace") == ns]
    finally:
        project.run("destroy", "--yes", "--skip-preview", check=False, timeout=900)


def test_control_plane_stopped_mid_up_fails_readably_and_a_later_up_completes(
    scratch_cluster: LocalCluster, engine, tmp_path: Path
):
    scratch_cluster.start()
    api = scratch_cluster.api()
    ns = "interrupted"
    release = tmp_path / "release"
    project = k8s_project(tmp_path / "k8s_stack", engine, scratch_cluster, ns, hold_file=str(release))
    address = f"127.0.0.1:{scratch_cluster.apiserver_port}"

    log = tmp_path / "up.log"
    with open(log, "w") as out:
        # Its own process group, so a failed test can stop the CLI together with its plugins.
        up = subprocess.Popen(
            [str(engine.pulumi_bin), "up", "--yes", "--skip-preview", "--non-interactive"],
            cwd=project.dir,
            env=project.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        # The update has created the namespace and holds before the rest (the fixture's
        # `hold_file`): pull the plug there, then let it go on against the stopped control plane.
        wait_until(
            lambda: api.get(f"/api/v1/namespaces/{ns}") is not None, 300, "pulumi to create the namespace"
        )
        scratch_cluster.stop()
        release.touch()
        code = up.wait(timeout=300)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    output = log.read_text()
    assert code != 0, output
    # The failure says what went wrong, and where: the API server at our address refused.
    errors = [line for line in output.splitlines() if "error:" in line]
    assert any(address in line and "connection refused" in line for line in errors), output
    assert "update failed" in output, output

    # Once the control plane is back, a plain `up` finishes the job: the failed creates left no
    # pending operations behind, so neither `pulumi cancel` nor a refresh is needed.
    scratch_cluster.start()
    assert not project.export()["deployment"].get("pending_operations")
    again = project.run("up", "--yes", "--skip-preview", timeout=900)
    assert "created" in again.stdout, again.stdout
    assert_stack_is_live(scratch_cluster.api(), ns)
    project.run("destroy", "--yes", "--skip-preview", timeout=900)
    wait_until(
        lambda: scratch_cluster.api().get(f"/api/v1/namespaces/{ns}") is None, 120, "the namespace to go"
    )
