"""Fixtures for the real node: a cluster of these tests with one real node, and kubectl helpers.

The cluster is the tests' own (free ports, a temporary folder), so `cluster stop` can be tested on
it without touching the default cluster; only one real node can run on a machine, so a node of
another checkout makes these tests fail with its owner named, never skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv import node_host
from devenv.__main__ import cluster_command
from devenv.cluster import LocalCluster


def host_snapshot() -> dict:
    """What the real node may change on the host, as it is now (compared after `cluster stop`)."""
    sysctls = {}
    for key in node_host.KUBELET_SYSCTLS:
        sysctls[key] = (Path("/proc/sys") / key).read_text().strip()
    return {
        "sysctls": sysctls,
        "paths": {p: Path(p).exists() for p in node_host.HOST_PATHS},
        "netns": sorted(p.name for p in node_host.NETNS_DIR.iterdir())
        if node_host.NETNS_DIR.exists()
        else None,
        "netns_mounted": str(node_host.NETNS_DIR) in node_host.mount_points(),
        "cgroups": [str(d) for d in node_host.cgroup_dirs()],
    }


@pytest.fixture(scope="module")
def host_before() -> dict:
    return host_snapshot()


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory, host_before) -> Iterator[LocalCluster]:
    """A control plane on free ports with the real node added, for this module's tests."""
    cluster = LocalCluster.on_free_ports(tmp_path_factory.mktemp("real") / "cluster")
    # What `python -m devenv cluster start --real-node` runs; a failure (another checkout's node,
    # a missing prerequisite, a component that did not start) is printed and fails the tests.
    if cluster_command("start", cluster, real_node=True) != 0:
        cluster.stop()
        pytest.fail("the real node did not start (the error is printed above)")
    yield cluster
    cluster.stop()


class Kubectl:
    """Our kubectl (v1.36, built with the control plane) against one cluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.argv = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]

    def __call__(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


class PortForward:
    """`kubectl port-forward` to a Service, on a loopback port the kernel picks."""

    def __init__(self, kubectl: Kubectl, namespace: str, target: str, port: int) -> None:
        self.proc = subprocess.Popen(
            [*kubectl.argv, "-n", namespace, "port-forward", "--address=127.0.0.1", target, f":{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            found = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                return
            if not line or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"kubectl port-forward {target} did not start: {line.strip()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pods_report(kubectl: Kubectl, namespaces: list[str], name: str) -> str:
    """What a reviewer needs when real pods do not get Ready: pods, events and logs of the unready.

    Written to test-artifacts/<name>.txt (the node's own logs stay in its data folder); returned
    for the failure message.
    """
    parts: list[str] = []
    for namespace in namespaces:
        for args in (("get", "pods", "-o", "wide"), ("get", "events", "--sort-by=.lastTimestamp")):
            out = kubectl("-n", namespace, *args, check=False)
            parts.append(f"$ kubectl -n {namespace} {' '.join(args)}\n{out.stdout}{out.stderr}")
        listing = kubectl("-n", namespace, "get", "pods", "-o", "json", check=False)
        items = json.loads(listing.stdout or "{}").get("items", [])
        for pod in items:
            if ready(pod):
                continue
            name_ = pod["metadata"]["name"]
            out = kubectl(
                "-n", namespace, "logs", name_, "--all-containers", "--prefix", "--tail=40", check=False
            )
            parts.append(f"$ kubectl -n {namespace} logs {name_} --all-containers\n{out.stdout}{out.stderr}")
    report = "\n".join(parts)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{name}.txt").write_text(report)
    return report


@pytest.fixture(scope="module")
def kubectl(real_cluster) -> Kubectl:
    return Kubectl(real_cluster)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
