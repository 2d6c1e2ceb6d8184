"""The local control plane as a user meets it: start, status, stop, errors, and a cluster that works."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from devenv.cluster import LocalCluster
from devenv.kubeapi import KubeAPIError
from devenv.ports import PortInUse, is_listening
from devenv.service_user import ServiceError
from tests.cluster.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def devenv_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devenv", *args], cwd=ROOT, capture_output=True, text=True, timeout=180
    )


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (a cluster's data folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(cmdline)
    return found


# --- start / status / stop ------------------------------------------------------------------------
def test_second_start_is_a_noop_that_prints_the_cluster(cluster):
    before = cluster.pids()
    began = time.monotonic()
    out = devenv_cli("cluster", "start")
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - began < 10
    assert "already running" in out.stdout
    assert f"https://127.0.0.1:{cluster.apiserver_port}" in out.stdout
    assert cluster.pids() == before, "a second start must not restart any component"


def test_status_names_every_component_its_port_and_the_kubeconfig(cluster):
    out = devenv_cli("cluster", "status")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("cluster: running")
    assert str(cluster.kubeconfig) in out.stdout
    for name, pid in cluster.pids().items():
        line = next(x for x in out.stdout.splitlines() if x.strip().startswith(name + " "))
        assert f"running (pid {pid})" in line
    for port in cluster.ports().values():
        assert str(port) in out.stdout


def test_status_of_a_cluster_never_started_says_stopped(tmp_path):
    local = LocalCluster.on_free_ports(tmp_path / "never")
    assert not local.running()
    assert all(pid is None for pid in local.pids().values())
    assert "stopped" in local.describe()


def test_a_busy_port_is_named_and_nothing_is_left_running(tmp_path):
    local = LocalCluster.on_free_ports(tmp_path / "busy")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", local.apiserver_port))
        squatter.listen()
        with pytest.raises(PortInUse, match=rf"port {local.apiserver_port} .*kube-apiserver"):
            local.start()
    assert processes_using(local.data_dir) == []


def test_a_component_that_fails_is_named_with_its_log(tmp_path):
    local = LocalCluster.on_free_ports(tmp_path / "broken")
    local.data_dir.mkdir(parents=True)
    # etcd cannot use a data directory that is a file: a real start failure of a real binary.
    (local.data_dir / "etcd").write_text("not a directory")
    with pytest.raises(ServiceError) as failure:
        local.start()
    message = str(failure.value)
    assert message.startswith("etcd exited during start")
    assert "etcd.log" in message
    assert "not a directory" in message or "data-dir" in message, message
    assert processes_using(local.data_dir) == []


def test_stop_leaves_no_process_and_frees_every_port(scratch_cluster):
    scratch_cluster.start()
    assert scratch_cluster.running()
    assert processes_using(scratch_cluster.data_dir)
    scratch_cluster.stop()
    assert processes_using(scratch_cluster.data_dir) == []
    assert not any(is_listening(port) for port in scratch_cluster.ports().values())


def test_every_listener_is_on_loopback(cluster):
    listening = _listening_addresses(cluster)
    assert set(listening) >= {cluster.apiserver_port, cluster.etcd_port, cluster.kwok_port}
    assert {host for host, _ in listening.values()} == {"127.0.0.1"}, listening


def _listening_addresses(local: LocalCluster) -> dict[int, tuple[str, str]]:
    """port -> (address, component) for each TCP socket the cluster's processes listen on."""
    inodes: dict[str, str] = {}
    for name, pid in local.pids().items():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes[target[8:-1]] = name
    found: dict[int, tuple[str, str]] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            local_addr, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hexip, hexport = local_addr.split(":")
            if width == 8:
                host = socket.inet_ntop(socket.AF_INET, bytes.fromhex(hexip)[::-1])
            else:
                host = "::" if set(hexip) == {"0"} else hexip
            found[int(hexport, 16)] = (host, inodes[inode])
    return found


def test_kubeconfig_lives_in_the_data_folder_and_reaches_the_api(cluster):
    data = Path(os.environ.get("IOTISTIC_DATA", ROOT / ".data"))
    assert cluster.kubeconfig == data / "cluster" / "kubeconfig"
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{cluster.apiserver_port}"
    assert oct(cluster.kubeconfig.stat().st_mode & 0o777) == "0o600"
    version = cluster.api().request("GET", "/version")
    # Set by build-cluster.sh's ldflags: clients such as pulumi-kubernetes rely on them.
    assert (version["major"], version["minor"]) == ("1", "36")
    assert version["gitVersion"].startswith("v1.36.")


# --- the cluster behaves like a real one ----------------------------------------------------------
@pytest.fixture
def namespace(cluster):
    """A fresh namespace, deleted (and waited for) afterwards."""
    api = cluster.api()
    name = f"t-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    api.request("DELETE", f"/api/v1/namespaces/{name}")
    wait_until(lambda: api.get(f"/api/v1/namespaces/{name}") is None, 120, f"namespace {name} to go")


def _pods(api, ns: str) -> list[dict]:
    return api.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"]


def _ready(pod: dict) -> bool:
    conds = pod.get("status", {}).get("conditions", [])
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conds
    )


def test_nodes_have_room_for_fifty_customer_instances(cluster, namespace):
    # 50 instances x 5 pods, each requesting 0.6 CPU / 0.7 Gi with limits of 1.2 CPU / 1.4 Gi.
    api = cluster.api(timeout=30)
    pods = 250
    api.request(
        "POST",
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {
            "metadata": {"name": "fifty-instances"},
            "spec": {
                "replicas": pods,
                "selector": {"matchLabels": {"app": "load"}},
                "template": {
                    "metadata": {"labels": {"app": "load"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "iotistic/instance:latest",
                                "resources": {
                                    "requests": {"cpu": "600m", "memory": "700Mi"},
                                    "limits": {"cpu": "1200m", "memory": "1400Mi"},
                                },
                            }
                        ]
                    },
                },
            },
        },
    )
    wait_until(
        lambda: sum(map(_ready, _pods(api, namespace))) == pods, 240, f"{pods} pods Running and Ready", 2
    )
    ready = _pods(api, namespace)
    assert all(p["status"].get("podIP") for p in ready)
    assert len({p["status"]["podIP"] for p in ready}) == pods
    assert len({p["spec"]["nodeName"] for p in ready}) == cluster.nodes  # the scheduler spreads them


def test_admission_enforces_pod_security_quota_and_limit_defaults(cluster, namespace):
    api = cluster.api()
    api.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        content_type="application/merge-patch+json",
    )
    privileged = {
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
    }
    with pytest.raises(KubeAPIError, match="violates PodSecurity"):
        api.request("POST", f"/api/v1/namespaces/{namespace}/pods", privileged)

    api.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/limitranges",
        {
            "metadata": {"name": "defaults"},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "250m", "memory": "64Mi"}}]},
        },
    )
    api.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/resourcequotas",
        {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}},
    )
    wait_until(
        lambda: api.get(f"/api/v1/namespaces/{namespace}/resourcequotas/q").get("status", {}).get("hard"),
        30,
        "the quota controller to fill the quota's status",
    )
    restricted = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    def pod(name: str) -> dict:
        return {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": restricted}]},
        }

    first = api.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod("first"))
    assert first["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "250m", "memory": "64Mi"}
    with pytest.raises(KubeAPIError, match="exceeded quota"):
        api.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod("second"))


def test_claims_of_the_default_class_bind_and_their_volume_goes_with_them(cluster, namespace):
    api = cluster.api()
    classes = api.request("GET", "/apis/storage.k8s.io/v1/storageclasses")["items"]
    default = [
        c["metadata"]["name"]
        for c in classes
        if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"
    ]
    assert default == ["standard"]
    path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
    api.request(
        "POST",
        path,
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "3Gi"}}},
        },
    )
    claim = wait_until(
        lambda: (c := api.get(f"{path}/data")) and c["status"].get("phase") == "Bound" and c,
        30,
        "the claim to be Bound",
    )
    assert claim["spec"]["storageClassName"] == "standard"
    volume = api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
    assert volume["status"]["phase"] == "Bound"
    assert volume["spec"]["capacity"]["storage"] == "3Gi"
    api.request("DELETE", f"{path}/data")
    wait_until(
        lambda: api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}") is None,
        60,
        "the released volume to be deleted",
    )


def test_an_unknown_object_is_a_404_not_a_crash(cluster):
    assert cluster.api().get("/api/v1/namespaces/does-not-exist") is None
    with pytest.raises(KubeAPIError) as err:
        cluster.api().request("GET", "/api/v1/namespaces/does-not-exist")
    assert err.value.status == 404


def test_cli_reports_unbuilt_binaries_without_a_traceback(tmp_path):
    # A checkout where build-cluster.sh never ran: one readable line that says what to run.
    env = {**os.environ, "IOTISTIC_DATA": str(tmp_path), "IOTISTIC_CACHE": str(tmp_path / "no-cache")}
    out = subprocess.run(
        [sys.executable, "-m", "devenv", "cluster", "start"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "not built" in out.stderr and "build-cluster.sh" in out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(ServiceError):
        LocalCluster(data_dir=tmp_path / "c", bin_dir=tmp_path / "no-cache" / "bin").start()
