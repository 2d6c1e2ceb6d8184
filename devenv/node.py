"""One real Kubernetes node beside the simulated ones: kubelet + containerd + runc + bridge CNI.

Everything of the node lives in a network namespace the project creates (`iotistic-node`): its
processes, its pods, its bridge and every iptables rule kube-proxy and kube-router write. The
host's own network configuration is untouched; the API server stays on the host's loopback and
the node reaches it through the bridge (devenv/node_bridge.py), which also carries the API
server's tunnels into the node (kubectl logs, exec, port-forward).

| process | from | job |
| --- | --- | --- |
| node bridge | devenv/node_bridge.py | API server <-> node, through files only |
| containerd 1.6, runc, CNI plugins | Debian packages | containers; bridge CNI, pods in 10.245.0.0/24 |
| kubelet | k8s.io/kubernetes (toolchain/cluster) | the node: label iotistic.io/node=real, tainted |
| kube-proxy | k8s.io/kubernetes (toolchain/cluster) | Services (iptables mode, in the namespace) |
| kube-router | github.com/cloudnativelabs/kube-router/v2 | NetworkPolicy enforcement only |
| local-path-provisioner | github.com/rancher/local-path-provisioner | volumes: folders under node/volumes |
| CoreDNS (a pod) | github.com/coredns/coredns (toolchain/node) | cluster DNS at 10.96.0.10 |

Host side effects are recorded before the start and undone by `stop()` (devenv/node_host.py).
Only one real node can run on a machine; a second one fails naming the data folder that holds it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from components.placement import REAL_NODE_LABEL, REAL_NODE_TAINT, REAL_NODE_VALUE
from devenv import images, node_addons, node_host
from devenv.kubeapi import KubeAPIError
from devenv.netns import connect_in, http_get_in
from devenv.node_host import NETNS_PATH, NODE_IP, POD_CIDR, RUNTIME, in_node
from devenv.pki import write_kubeconfig
from devenv.processes import Component
from devenv.service_user import ServiceError

if TYPE_CHECKING:
    from devenv.cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
NODE_NAME = "iotistic-real-node"
APISERVER_IN_NODE = 6443  # the bridge's listener inside the namespace
START_TIMEOUT = 240.0
CONTAINERD = Path("/usr/bin/containerd")
CTR = Path("/usr/bin/ctr")
RUNC = Path("/usr/sbin/runc")
CNI_BIN = Path("/usr/lib/cni")
PAUSE_IMAGE = "iotistic.local/pause:local"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(message: str) -> None:
    print(f"[node] {message}", file=sys.stderr, flush=True)


class RealNode:
    """The real node of one LocalCluster; its files live in `<cluster data>/node`."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.dir = cluster.data_dir / "node"

    # -- where things are ------------------------------------------------------------------------
    @property
    def egress_socket(self) -> Path:
        """The bridge's unix socket the API server's egress selector opens tunnels through."""
        return self.dir / "egress.sock"

    @property
    def containerd_socket(self) -> Path:
        return RUNTIME / "containerd" / "containerd.sock"

    @property
    def volumes(self) -> Path:
        """Where local-path-provisioner makes the node's volumes (customer data: kept on stop)."""
        return self.dir / "volumes"

    @property
    def ctr(self) -> list[str]:
        return [str(CTR), "--address", str(self.containerd_socket)]

    def binaries(self) -> list[Path]:
        b = self.cluster.bin_dir
        progs = [
            b / n
            for n in ("kubelet", "kube-proxy", "kube-router", "local-path-provisioner", "pause", "coredns")
        ]
        progs += [CONTAINERD, CTR, RUNC, CNI_BIN / "bridge", CNI_BIN / "host-local", CNI_BIN / "loopback"]
        progs += [Path("/usr/sbin/iptables"), Path("/usr/sbin/ipset"), Path("/usr/bin/nsenter")]
        return progs

    def enabled(self) -> bool:
        """True once `cluster start --real-node` added it: later starts bring it back."""
        return (self.dir / "enabled").exists()

    def set_enabled(self, on: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        flag = self.dir / "enabled"
        if on:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    # -- the processes ---------------------------------------------------------------------------
    def components(self) -> list[Component]:
        d, b = self.dir, self.cluster.bin_dir
        env = {"PATH": SYSTEM_PATH, "HOME": str(d / "home"), "NO_PROXY": "*"}

        def comp(
            name: str, exe: Path, args: list[str], ready: Callable[[], bool], wrap: bool = True
        ) -> Component:
            argv = in_node(str(exe), *args) if wrap else [str(exe), *args]
            return Component(
                name, argv, d / "run" / f"{name}.pid", d / "logs" / f"{name}.log", ready, env, exe=str(exe)
            )

        kc = d / "kubeconfigs"
        return [
            comp(
                "node-bridge",
                Path(sys.executable),
                [
                    "-m",
                    "devenv.node_bridge",
                    f"--netns={NETNS_PATH}",
                    f"--listen={NODE_IP}:{APISERVER_IN_NODE}",
                    f"--apiserver=127.0.0.1:{self.cluster.apiserver_port}",
                    f"--egress-socket={self.egress_socket}",
                ],
                self._bridge_ok,
                wrap=False,
            ),
            comp("containerd", CONTAINERD, [f"--config={d / 'containerd.toml'}"], self._containerd_ok),
            comp(
                "kubelet",
                b / "kubelet",
                [
                    f"--config={d / 'kubelet.yaml'}",
                    f"--kubeconfig={kc / 'kubelet.kubeconfig'}",
                    f"--root-dir={d / 'kubelet'}",
                    f"--cert-dir={d / 'kubelet' / 'pki'}",
                    f"--hostname-override={NODE_NAME}",
                    f"--node-ip={NODE_IP}",
                    f"--node-labels={REAL_NODE_LABEL}={REAL_NODE_VALUE}",
                    "--v=1",
                ],
                self._node_ready,
            ),
            comp(
                "kube-proxy",
                b / "kube-proxy",
                [f"--config={d / 'kube-proxy.yaml'}", "--v=1"],
                lambda: http_get_in(NETNS_PATH, "127.0.0.1", 10256, "/healthz") == 200,
            ),
            comp(
                "kube-router",
                b / "kube-router",
                [
                    f"--kubeconfig={kc / 'kube-router.kubeconfig'}",
                    f"--hostname-override={NODE_NAME}",
                    "--run-firewall=true",
                    "--run-router=false",
                    "--run-service-proxy=false",
                    "--enable-ipv4=true",
                    "--enable-ipv6=false",
                    f"--service-cluster-ip-range={self.cluster.service_cidr}",
                    "--health-port=20244",
                    "--metrics-port=0",
                    "--iptables-sync-period=1m",
                    "--v=1",
                ],
                lambda: http_get_in(NETNS_PATH, "127.0.0.1", 20244, "/healthz") == 200,
            ),
            comp(
                "local-path-provisioner",
                b / "local-path-provisioner",
                [
                    "start",
                    f"--kubeconfig={kc / 'local-path-provisioner.kubeconfig'}",
                    f"--namespace={node_addons.LOCAL_PATH_NAMESPACE}",
                    "--configmap-name=local-path-config",
                    "--service-account-name=local-path-provisioner",
                    f"--provisioner-name={node_addons.LOCAL_PATH_PROVISIONER}",
                    f"--helper-image={node_addons.HELPER_IMAGE}",
                ],
                lambda: True,
            ),
        ]

    def _bridge_ok(self) -> bool:
        if not self.egress_socket.exists():
            return False
        try:
            connect_in(NETNS_PATH, NODE_IP, APISERVER_IN_NODE, 1).close()
            return True
        except OSError:
            return False

    def _containerd_ok(self) -> bool:
        return subprocess.run([*self.ctr, "version"], capture_output=True).returncode == 0

    def _node_ready(self) -> bool:
        node = self.cluster.api(timeout=3).get(f"/api/v1/nodes/{NODE_NAME}") or {}
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )

    def pids(self) -> dict[str, int | None]:
        return {c.name: c.pid() for c in self.components()}

    def running(self) -> bool:
        holder = node_host.owner()
        return (
            holder is not None
            and Path(holder["data_dir"]) == self.cluster.data_dir
            and all(pid is not None for pid in self.pids().values())
        )

    def describe(self) -> list[str]:
        lines = [f"  real node {NODE_NAME} (network namespace {node_host.NETNS}, address {NODE_IP}):"]
        for name, pid in self.pids().items():
            state = f"running (pid {pid})" if pid else "stopped"
            lines.append(f"    {name:<24} {state}")
        return lines

    # -- configuration ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        d = self.dir
        for sub in ("run", "logs", "kubeconfigs", "home", "kubelet/pki", "cni/net.d", "cni/ipam", "pod-logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.volumes.mkdir(parents=True, exist_ok=True)
        pki = self.cluster.pki
        node = {"dns": [NODE_NAME], "ips": [NODE_IP]}
        pki.issue("node-kubelet", f"system:node:{NODE_NAME}", orgs=["system:nodes"], client=True)
        pki.issue(
            "node-kubelet-serving", f"system:node:{NODE_NAME}", orgs=["system:nodes"], server=True, **node
        )
        pki.issue("node-kube-proxy", "system:kube-proxy", client=True)
        pki.issue("node-kube-router", node_addons.KUBE_ROUTER_USER, client=True)
        pki.issue("node-local-path-provisioner", node_addons.LOCAL_PATH_USER, client=True)
        # Inside the namespace the API server is the bridge's address, not in its certificate's
        # names: the clients check the name `kubernetes` instead (which it has).
        server = f"https://{NODE_IP}:{APISERVER_IN_NODE}"
        for cert, user in (
            ("node-kubelet", "kubelet"),
            ("node-kube-proxy", "kube-proxy"),
            ("node-kube-router", "kube-router"),
            ("node-local-path-provisioner", "local-path-provisioner"),
        ):
            write_kubeconfig(d / "kubeconfigs" / f"{user}.kubeconfig", server, pki, cert, user, "kubernetes")
        (d / "resolv.conf").write_text("# the node has no upstream DNS: only cluster names resolve\n")
        (d / "containerd.toml").write_text(self._containerd_config())
        (d / "cni" / "net.d" / "10-iotistic.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        (d / "kubelet.yaml").write_text(yaml.safe_dump(self._kubelet_config(), sort_keys=False))
        (d / "kube-proxy.yaml").write_text(yaml.safe_dump(self._kube_proxy_config(), sort_keys=False))

    def _containerd_config(self) -> str:
        state = RUNTIME / "containerd"
        return f"""\
# containerd for the real node (devenv/node.py): private root, state, socket and runc root.
version = 2
root = "{self.dir / "containerd"}"
state = "{state / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{state / "containerd.sock.ttrpc"}"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.dir / "containerd-opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: containers may not get a lower OOM score than containerd.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  # Pod network namespaces are mounted under our state folder, not /run/netns.
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{RUNTIME / "runc"}"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.dir / "cni" / "net.d"}"
"""

    def _cni_config(self) -> dict:
        return {
            "cniVersion": "0.4.0",
            "name": "iotistic",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    # No masquerade: nothing leaves the namespace, and no rule is needed.
                    "ipMasq": False,
                    # A pod may reach itself through its own Service.
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                }
            ],
        }

    def _kubelet_config(self) -> dict:
        pki = self.cluster.pki
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine kind has cgroup v1 for every controller; kubelet 1.35+ refuses it unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            # kubepods go under our own root in every hierarchy, so stop can remove them all.
            "cgroupRoot": f"/{node_host.CGROUP_ROOT}",
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": [],
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "failSwapOn": False,
            "protectKernelDefaults": False,
            # Root here lacks CAP_SYS_RESOURCE: kubelet keeps its own OOM score.
            "oomScoreAdj": 0,
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "tlsCertFile": str(pki.crt("node-kubelet-serving")),
            "tlsPrivateKeyFile": str(pki.key("node-kubelet-serving")),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.crt("ca"))},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [node_addons.dns_service_ip(self.cluster.service_cidr)],
            "clusterDomain": node_addons.CLUSTER_DOMAIN,
            "resolvConf": str(self.dir / "resolv.conf"),
            "registerWithTaints": [{"key": REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"}],
            "podLogsDirectory": str(self.dir / "pod-logs"),
            "maxPods": 40,
            # Images are imported, never pulled: garbage-collecting them would lose them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # The disk is shared with builds: evict only when it is really full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
                "nodefs.inodesFree": "2%",
            },
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
            "rotateCertificates": False,
        }

    def _kube_proxy_config(self) -> dict:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.dir / "kubeconfigs" / "kube-proxy.kubeconfig")},
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "detectLocalMode": "ClusterCIDR",
            # Leave the machine-wide conntrack settings alone (0 = do not set).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }

    # -- start / stop ----------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the node (a no-op when it runs); returns once it is Ready with DNS serving."""
        node_host.check_prerequisites(self.binaries())
        with node_host.machine_lock():
            holder = node_host.owner()
            if holder is not None and Path(holder["data_dir"]) != self.cluster.data_dir:
                other = Path(holder["data_dir"]) / "node"
                if node_host.processes_using(str(other)):
                    raise node_host.NodeBusy(node_host.busy_message(holder))
                log(f"undoing what the real node of {holder['data_dir']} left behind (it did not stop)")
                self._teardown(other)
            if self.running():
                return
            self._teardown(self.dir)  # whatever a crashed run left: start afresh (data is kept)
            node_host.HostState.record().save()
            node_host.claim(self.cluster.data_dir)
            try:
                self._start(time.monotonic() + timeout)
            except KubeAPIError as e:
                self._teardown(self.dir)
                raise ServiceError(
                    f"the real node did not start: the API server refused a request: {e}"
                ) from e
            except BaseException:
                self._teardown(self.dir)
                raise

    def _start(self, deadline: float) -> None:
        began = time.monotonic()
        self._prepare()
        api = self.cluster.api()
        node_addons.apply_all(
            api,
            node_addons.kube_router_objects()
            + node_addons.local_path_objects(str(self.volumes))
            + node_addons.dns_objects(self.cluster.service_cidr),
        )
        node_host.create_netns(self.cluster.service_cidr)
        node_host.create_cgroups()
        comps = {c.name: c for c in self.components()}
        for name in ("node-bridge", "containerd"):
            comps[name].start()
            comps[name].wait_ready(deadline)
        self.import_images()
        comps["kubelet"].start()
        comps["kubelet"].wait_ready(deadline)
        for name in ("kube-proxy", "kube-router", "local-path-provisioner"):
            comps[name].start()
        for name in ("kube-proxy", "kube-router", "local-path-provisioner"):
            comps[name].wait_ready(deadline)
        api.apply(node_addons.kubernetes_endpoint(NODE_IP, APISERVER_IN_NODE), node_addons.FIELD_MANAGER)
        self._wait_dns(deadline, comps)
        log(f"ready in {time.monotonic() - began:.1f} s")

    def import_images(self) -> list[str]:
        """Build the catalog's images if needed (cached) and import what containerd lacks."""
        builder = images.ImageBuilder()
        result = builder.build()
        return images.import_images(builder, result.tags, self.ctr, self.dir / "logs" / "images.log")

    def _wait_dns(self, deadline: float, comps: dict[str, Component]) -> None:
        api = self.cluster.api()
        path = "/apis/apps/v1/namespaces/kube-system/deployments/coredns"
        while (api.get(path) or {}).get("status", {}).get("availableReplicas", 0) < 1:
            for c in comps.values():
                if c.pid() is None:
                    raise c.failure("exited during start")
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"CoreDNS did not become ready on {NODE_NAME} in time: {self._pod_problems()}"
                )
            time.sleep(0.5)

    def _pod_problems(self) -> str:
        """Why pods on the node are not ready, from their status (for error messages)."""
        pods = self.cluster.api().get(f"/api/v1/pods?fieldSelector=spec.nodeName={NODE_NAME}") or {}
        problems = []
        for p in pods.get("items", []):
            for cs in p.get("status", {}).get("containerStatuses", []) or []:
                waiting = cs.get("state", {}).get("waiting")
                if waiting:
                    problems.append(
                        f"{p['metadata']['name']}: {waiting.get('reason')}: {waiting.get('message', '')}"
                    )
        return (
            "; ".join(problems) or "no container is waiting (see the logs in " + str(self.dir / "logs") + ")"
        )

    def stop(self) -> None:
        """Stop every process and undo every host change; pods' API objects and volumes are kept."""
        with node_host.machine_lock():
            holder = node_host.owner()
            if holder is not None and Path(holder["data_dir"]) != self.cluster.data_dir:
                return  # another data folder's node: not ours to stop
            if holder is None and not any(self.pids().values()):
                return
            with contextlib.suppress(OSError, KubeAPIError, ServiceError):
                self.cluster.api(timeout=3).delete(
                    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes-real-node"
                )
            self._teardown(self.dir)

    def _teardown(self, node_dir: Path) -> None:
        """Stop the node of `node_dir` and undo everything it changed on the host."""
        comps = {c.name: c for c in RealNode._components_of(node_dir, self)}
        for name in ("local-path-provisioner", "kube-router", "kube-proxy", "kubelet"):
            comps[name].signal(signal.SIGTERM)
        for name in ("local-path-provisioner", "kube-router", "kube-proxy", "kubelet"):
            comps[name].wait_gone(timeout=5.0)
        node_host.kill_cgroup_processes()  # the containers
        comps["containerd"].signal(signal.SIGTERM)
        comps["containerd"].wait_gone(timeout=10.0)
        node_host.kill_processes(node_host.processes_using(str(RUNTIME)))  # containerd's shims
        comps["node-bridge"].signal(signal.SIGTERM)
        comps["node-bridge"].wait_gone(timeout=5.0)
        node_host.kill_processes(node_host.processes_using(str(node_dir)))
        node_host.unmount_under([node_dir, RUNTIME])
        node_host.delete_netns()
        node_host.remove_cgroups()
        state = node_host.HostState.load()
        node_host.restore(state)
        # Every pod is gone, so every address is free again (no CNI DEL ran for them).
        shutil.rmtree(node_dir / "cni" / "ipam", ignore_errors=True)
        if state is not None and "/var/lib/cni" not in state.absent_paths:
            for cached in Path("/var/lib/cni/results").glob("iotistic-*"):
                cached.unlink(missing_ok=True)
        left = [p for p in node_host.mount_points() if p.startswith(str(RUNTIME))]
        if left:
            raise ServiceError(f"mounts left under {RUNTIME}: {', '.join(left)}")
        shutil.rmtree(RUNTIME, ignore_errors=True)

    @staticmethod
    def _components_of(node_dir: Path, node: RealNode) -> list[Component]:
        """The components of the node in `node_dir` (ours or a crashed one of another checkout)."""
        if node_dir == node.dir:
            return node.components()
        other = RealNode.__new__(RealNode)
        other.cluster = node.cluster
        other.dir = node_dir
        return other.components()
