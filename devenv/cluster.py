"""A real local Kubernetes control plane for `pulumi up` of Kubernetes resources, on loopback.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the upstream binaries built
by toolchain/build-cluster.sh; kwok plays the kubelets of a few simulated nodes, the volume
provisioner and the ingress controller (toolchain/cluster/kwok/stages.yaml). Every listener is on
127.0.0.1 and a non-default port; certificates, logs and etcd's data live under one folder, and the
admin kubeconfig is written there (never to ~/.kube/config). One real node can be added beside the
simulated ones (devenv/node.py): `start(real_node=True)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import ipaddress
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devenv import node_addons
from devenv.kubeapi import KubeAPI, KubeAPIError
from devenv.node import NODE_NAME, RealNode
from devenv.pki import Pki, write_kubeconfig
from devenv.ports import default_port, ensure_free, free_port
from devenv.processes import Component
from devenv.service_user import ServiceError

ROOT = Path(__file__).resolve().parent.parent
STAGES = ROOT / "toolchain" / "cluster" / "kwok" / "stages.yaml"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
STORAGE_CLASS = "standard"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
START_TIMEOUT = 90.0


def default_bin_dir() -> Path:
    """Where toolchain/build-cluster.sh puts the binaries ($IOTISTIC_CACHE/bin)."""
    return Path(os.environ.get("IOTISTIC_CACHE", ROOT / ".cache")) / "bin"


def default_data_dir() -> Path:
    """$IOTISTIC_DATA/cluster: certificates, logs, etcd data and the kubeconfig."""
    return Path(os.environ.get("IOTISTIC_DATA", ROOT / ".data")) / "cluster"


# An instance runs 5 pods (Postgres, Mosquitto, API, dashboard, exporter); one more for rollouts.
PODS_PER_CUSTOMER = 6


COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def flag_name(arg: str) -> str:
    """The name of a flag: "--event-ttl" for "--event-ttl=1h" and for "--event-ttl"."""
    return arg.split("=", 1)[0]


def tuned(defaults: list[str], extra: list[str]) -> list[str]:
    """`defaults` without the flags that `extra` names, then `extra`: an extra flag replaces a
    default of the same name (a repeated list flag such as --controllers would otherwise add to it)."""
    replaced = {flag_name(a) for a in extra}
    return [a for a in defaults if flag_name(a) not in replaced] + extra


# kube-controller-manager's controllers that customer instances and the platform do not need
# (nothing here makes CronJobs, Jobs, DaemonSets, HPAs, PDBs, CSRs, ReplicationControllers, DRA
# claims or admission-policy objects; no cloud; no node IPAM: kwok hands out pod IPs), or that are
# off anyway (feature gates, no cloud provider), named so a new default cannot bring them back.
# Kept: deployment, replicaset, statefulset, endpoints, endpointslice, garbage-collector,
# namespace, persistentvolume-binder and the volume/claim protections, attach-detach, resourcequota,
# serviceaccount, serviceaccount-token, root-ca-certificate-publisher, node-lifecycle,
# taint-eviction, pod-garbage-collector, service-cidr. bench/controlplane.py measures the effect.
UNNEEDED_CONTROLLERS = (
    "bootstrap-signer-controller",
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-cleaner-controller",
    "certificatesigningrequest-signing-controller",
    "cloud-node-lifecycle-controller",
    "clusterrole-aggregation-controller",
    "cronjob-controller",
    "daemonset-controller",
    "device-taint-eviction-controller",
    "disruption-controller",
    "endpointslice-mirroring-controller",
    "ephemeral-volume-controller",
    "horizontal-pod-autoscaler-controller",
    "job-controller",
    "kube-apiserver-serving-clustertrustbundle-publisher-controller",
    "legacy-serviceaccount-token-cleaner-controller",
    "node-ipam-controller",
    "node-route-controller",
    "persistentvolume-expander-controller",
    "podcertificaterequest-cleaner-controller",
    "podgroup-protection-controller",
    "replicationcontroller-controller",
    "resourceclaim-controller",
    "resourcepoolstatusrequest-controller",
    "service-lb-controller",
    "storage-version-migrator-controller",
    "storageversion-garbage-collector-controller",
    "token-cleaner-controller",
    "ttl-after-finished-controller",
    "ttl-controller",
    "validatingadmissionpolicy-status-controller",
    "volumeattributesclass-protection-controller",
)
# The Go garbage collector of etcd and the Kubernetes components. The controller-manager and the
# scheduler hold a cache of every object and do little work: a collection when the heap has grown
# by half (default: doubled) keeps them nearer their live objects (-25 % at 300 customers). etcd
# and the API server (no watch cache: small heaps) do most of the control plane's work: at the
# default they spend 20 % less CPU per deploy than at GOGC=50 (bench: 1.81 -> 1.47 s per deploy).
GO_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
GO_ENV = {
    "etcd": {"GOGC": "100"},
    "kube-apiserver": {"GOGC": "100"},
    "kube-controller-manager": {"GOGC": "50"},
    "kube-scheduler": {"GOGC": "50"},
}


def nodes_for(customers: int, node_pods: int = 110) -> int:
    """Simulated nodes for `customers` instances: at least 4, each at most 110 pods."""
    return max(4, -(-customers * PODS_PER_CUSTOMER // node_pods))


@dataclass
class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1.

    `start()` is idempotent and returns once the API server is ready, the simulated nodes are
    Ready and the controllers run; `stop()` leaves no process behind. State survives a restart.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    bin_dir: Path = field(default_factory=default_bin_dir)
    apiserver_port: int = field(default_factory=lambda: default_port("kube-apiserver"))
    etcd_port: int = field(default_factory=lambda: default_port("etcd"))
    etcd_peer_port: int = field(default_factory=lambda: default_port("etcd-peer"))
    controller_manager_port: int = field(default_factory=lambda: default_port("kube-controller-manager"))
    scheduler_port: int = field(default_factory=lambda: default_port("kube-scheduler"))
    kwok_port: int = field(default_factory=lambda: default_port("kwok"))
    # Room for 50+ customer instances of ~5 pods each (0.6 CPU / 0.7 Gi requested per pod).
    nodes: int = 4
    node_cpu: str = "64"
    node_memory: str = "256Gi"
    node_pods: int = 110
    # Tuning on top of the defaults (benchmarks, experiments; see with_tuning()): extra flags per
    # component name ("--name=value"; one named like a default flag replaces it) and extra
    # environment per component (e.g. GOGC, GOMEMLIMIT).
    tuning: dict[str, list[str]] = field(default_factory=dict)
    component_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def with_tuning(
        self, flags: dict[str, list[str]] | None = None, env: dict[str, dict[str, str]] | None = None
    ) -> LocalCluster:
        """This cluster with extra flags and environment per component (etcd, kube-apiserver,
        kube-controller-manager, kube-scheduler, kwok), taking effect at its next start.

        `flags`: "--name=value" strings appended to the component's command line; a default flag
        of the same name is dropped first, so `--controllers=...` or `--event-ttl=5m` replace the
        default value rather than add to it. `env`: variables added to the component's environment.
        A name that is no component raises ValueError. The API server is restarted by `start()` on
        a running cluster when its flags differ (apiserver_outdated); environment changes and
        the other components' flags need stop() and start().
        """
        for name, extra in (flags or {}).items():
            self._check_component(name)
            bad = [f for f in extra if not f.startswith("--")]
            if bad:
                raise ValueError(f"flags for {name} must look like --name=value: {bad}")
            self.tuning[name] = [*self.tuning.get(name, []), *extra]
        for name, variables in (env or {}).items():
            self._check_component(name)
            self.component_env[name] = {**self.component_env.get(name, {}), **variables}
        return self

    @staticmethod
    def _check_component(name: str) -> None:
        if name not in COMPONENTS:
            raise ValueError(f"no component {name!r}: one of {', '.join(COMPONENTS)}")

    def sized_for(self, customers: int) -> LocalCluster:
        """This cluster with enough simulated nodes for `customers` instances (and a margin)."""
        self.nodes = nodes_for(customers, self.node_pods)
        return self

    @classmethod
    def on_free_ports(cls, data_dir: Path) -> LocalCluster:
        """A cluster on kernel-chosen free ports, so it can run beside the default one (tests, benchmarks)."""
        return cls(
            data_dir=data_dir,
            apiserver_port=free_port(),
            etcd_port=free_port(),
            etcd_peer_port=free_port(),
            controller_manager_port=free_port(),
            scheduler_port=free_port(),
            kwok_port=free_port(),
        )

    def __post_init__(self) -> None:
        # The processes run with their own working directory: every path they get is absolute.
        self.data_dir = Path(self.data_dir).resolve()
        self.bin_dir = Path(self.bin_dir).resolve()

    # -- where things are --------------------------------------------------------------------
    @property
    def pki(self) -> Pki:
        return Pki(self.data_dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (cluster-admin via the system:masters group)."""
        return self.data_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def port(self) -> int:
        """The API server's port (what `python -m devenv` prints for every service)."""
        return self.apiserver_port

    @property
    def service_cidr(self) -> str:
        return SERVICE_CIDR

    @property
    def real_node(self) -> RealNode:
        """The cluster's real node (running or not; see RealNode.enabled)."""
        return RealNode(self)

    @property
    def egress_config(self) -> Path:
        """The API server's egress selector: cluster traffic goes through the real node's bridge."""
        return self.data_dir / "egress-selector.yaml"

    def api(self, timeout: float = 10.0) -> KubeAPI:
        """A client for the API server as the cluster admin."""
        return KubeAPI(
            self.apiserver_port, self.pki.crt("ca"), self.pki.crt("admin"), self.pki.key("admin"), timeout
        )

    def ports(self) -> dict[str, int]:
        return {
            "etcd (client)": self.etcd_port,
            "etcd (peer)": self.etcd_peer_port,
            "kube-apiserver": self.apiserver_port,
            "kube-controller-manager": self.controller_manager_port,
            "kube-scheduler": self.scheduler_port,
            "kwok": self.kwok_port,
        }

    # -- the processes -----------------------------------------------------------------------
    def _https_ok(self, port: int, path: str = "/healthz") -> Callable[[], bool]:
        return lambda: KubeAPI(port, self.pki.crt("ca"), timeout=2).healthy(path)

    def components(self) -> list[Component]:
        """The processes in start order, with their flags."""
        d, pki, b = self.data_dir, self.pki, self.bin_dir
        run = d / "run"
        kc = d / "kubeconfigs"
        # Keep every tool away from the user's home (~/.kube, ~/.kwok) and from proxies.
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(d / "home"),
            "KWOK_WORKDIR": str(d / "kwok"),
            "NO_PROXY": "127.0.0.1,localhost",
        }

        def comp(name: str, argv: list[str], ready: Callable[[], bool]) -> Component:
            return Component(
                name,
                [str(b / name), *tuned(argv, self.tuning.get(name, []))],
                run / f"{name}.pid",
                d / "logs" / f"{name}.log",
                ready,
                {**env, **GO_ENV.get(name, {}), **self.component_env.get(name, {})},
            )

        def etcd_ok() -> bool:
            api = KubeAPI(
                self.etcd_port,
                pki.crt("ca"),
                pki.crt("apiserver-etcd-client"),
                pki.key("apiserver-etcd-client"),
                2,
            )
            try:
                return api.request("GET", "/health").get("health") == "true"
            except (OSError, KubeAPIError, http.client.HTTPException):
                return False

        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"https://127.0.0.1:{self.etcd_port}"

        def tls(name: str) -> list[str]:
            return [f"--tls-cert-file={pki.crt(name)}", f"--tls-private-key-file={pki.key(name)}"]

        return [
            comp(
                "etcd",
                [
                    "--name=iotistic",
                    f"--data-dir={d / 'etcd'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    # A single member: the peer listener exists but only on loopback, without TLS.
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=iotistic={peer}",
                    f"--cert-file={pki.crt('etcd-server')}",
                    f"--key-file={pki.key('etcd-server')}",
                    f"--trusted-ca-file={pki.crt('ca')}",
                    "--client-cert-auth=true",
                    "--log-level=warn",
                    # Plenty for a dev cluster, and far less than the 2 GiB default pre-allocation.
                    "--quota-backend-bytes=1073741824",
                ],
                etcd_ok,
            ),
            comp(
                "kube-apiserver",
                [
                    "--advertise-address=127.0.0.1",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={self.apiserver_port}",
                    f"--cert-dir={run}",
                    f"--etcd-servers={client}",
                    f"--etcd-cafile={pki.crt('ca')}",
                    f"--etcd-certfile={pki.crt('apiserver-etcd-client')}",
                    f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki.dir / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki.key('sa')}",
                    f"--client-ca-file={pki.crt('ca')}",
                    *tls("apiserver"),
                    "--authorization-mode=Node,RBAC",
                    # Controllers and aggregated servers trust users named in headers only from
                    # this one client certificate.
                    f"--requestheader-client-ca-file={pki.crt('ca')}",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={pki.crt('front-proxy-client')}",
                    f"--proxy-client-key-file={pki.key('front-proxy-client')}",
                    # Endpoints may not point at loopback, so the `kubernetes` Service keeps none
                    # rather than failing to sync every 10 s (nothing in the cluster dials it).
                    "--endpoint-reconciler-type=none",
                    # All on by default in 1.36; named so a future default change cannot drop them.
                    "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
                    "DefaultStorageClass,ResourceQuota,PodSecurity,NodeRestriction",
                    "--allow-privileged=true",
                    "--profiling=false",
                    # No watch cache: the API server would otherwise hold a decoded copy of every
                    # object (and recent changes) in memory, about 1.5 MiB per customer instance;
                    # lists and watches are served by etcd on loopback at no measurable CPU cost
                    # (bench/controlplane.py). Events expire after 5 minutes instead of an hour.
                    "--watch-cache=false",
                    "--event-ttl=5m",
                    # Calls to kubelets (logs, exec, port-forward) and pods: through the real
                    # node's bridge, as the cluster admin's delegate, checking the kubelet's
                    # certificate. Nothing goes to a node's address from the host itself.
                    f"--egress-selector-config-file={self.egress_config}",
                    f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
                    f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                    f"--kubelet-certificate-authority={pki.crt('ca')}",
                    # Node names do not resolve anywhere: kubelets are reached by address.
                    "--kubelet-preferred-address-types=InternalIP,Hostname",
                ],
                lambda: self.api(timeout=2).healthy("/readyz"),
            ),
            comp(
                "kube-controller-manager",
                [
                    f"--kubeconfig={kc / 'controller-manager.kubeconfig'}",
                    f"--authentication-kubeconfig={kc / 'controller-manager.kubeconfig'}",
                    f"--authorization-kubeconfig={kc / 'controller-manager.kubeconfig'}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={self.controller_manager_port}",
                    *tls("controller-manager"),
                    "--leader-elect=false",
                    "--cluster-name=iotistic-local",
                    f"--root-ca-file={pki.crt('ca')}",
                    f"--service-account-private-key-file={pki.key('sa')}",
                    f"--cluster-signing-cert-file={pki.crt('ca')}",
                    f"--cluster-signing-key-file={pki.key('ca')}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--use-service-account-credentials=true",
                    # Only the controllers customer instances need: fewer informers and workers.
                    "--controllers=*," + ",".join(f"-{c}" for c in UNNEEDED_CONTROLLERS),
                    "--profiling=false",
                    # Client-side rate limits sized for a thousand customers' objects, not the
                    # defaults' 20 QPS (one customer's up makes ~30 objects the controllers act on).
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                    "--concurrent-deployment-syncs=20",
                    "--concurrent-replicaset-syncs=20",
                    "--concurrent-statefulset-syncs=20",
                    "--concurrent-service-endpoint-syncs=20",
                    "--concurrent-gc-syncs=40",
                    "--concurrent-namespace-syncs=20",
                ],
                self._https_ok(self.controller_manager_port),
            ),
            comp(
                "kube-scheduler",
                [
                    f"--kubeconfig={kc / 'scheduler.kubeconfig'}",
                    f"--authentication-kubeconfig={kc / 'scheduler.kubeconfig'}",
                    f"--authorization-kubeconfig={kc / 'scheduler.kubeconfig'}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={self.scheduler_port}",
                    *tls("scheduler"),
                    "--leader-elect=false",
                    "--profiling=false",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                ],
                self._https_ok(self.scheduler_port),
            ),
            comp(
                "kwok",
                [
                    f"--kubeconfig={kc / 'kwok.kubeconfig'}",
                    f"--config={STAGES}",
                    f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                    f"--server-address=127.0.0.1:{self.kwok_port}",
                    f"--cidr={POD_CIDR}",
                    "--node-lease-duration-seconds=40",
                ],
                self._kwok_ok,
            ),
        ]

    def _kwok_ok(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.kwok_port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    # -- state -------------------------------------------------------------------------------
    def pids(self) -> dict[str, int | None]:
        """Each component's pid, or None when it is not running."""
        return {c.name: c.pid() for c in self.components()}

    def running(self) -> bool:
        """True when every component of the control plane runs."""
        return all(pid is not None for pid in self.pids().values())

    def describe(self) -> str:
        """A few lines for humans: the API server, the kubeconfig and each component's state."""
        pids = self.pids()
        lines = [
            f"API server {self.server}, kubeconfig {self.kubeconfig}",
            f"  logs and state in {self.data_dir}",
        ]
        ports = {
            "etcd": f"127.0.0.1:{self.etcd_port} (peer {self.etcd_peer_port})",
            "kube-apiserver": f"127.0.0.1:{self.apiserver_port}",
            "kube-controller-manager": f"127.0.0.1:{self.controller_manager_port}",
            "kube-scheduler": f"127.0.0.1:{self.scheduler_port}",
            "kwok": f"127.0.0.1:{self.kwok_port}",
        }
        for name, pid in pids.items():
            state = f"running (pid {pid})" if pid else "stopped"
            lines.append(f"  {name:<24} {state:<20} {ports[name]}")
        if self.real_node.enabled():
            lines += self.real_node.describe()
        return "\n".join(lines)

    # -- start / stop ------------------------------------------------------------------------
    def _check_built(self) -> None:
        missing = [c.name for c in self.components() if not Path(c.argv[0]).exists()]
        if missing:
            raise ServiceError(
                f"{', '.join(missing)} not built in {self.bin_dir}: run toolchain/build-cluster.sh "
                "(or scripts/setup)"
            )

    def _prepare(self) -> None:
        """Certificates, kubeconfigs and folders; everything is kept across restarts."""
        for sub in ("run", "logs", "kubeconfigs", "home", "kwok"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # holds the CA key and an admin kubeconfig
        pki = self.pki
        pki.ensure_ca()
        pki.ensure_service_account_key()
        loopback = {"dns": ["localhost"], "ips": ["127.0.0.1"]}
        # etcd's gRPC gateway dials etcd itself with this certificate, so it is a client one too.
        pki.issue("etcd-server", "etcd", server=True, client=True, **loopback)
        pki.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        pki.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            # The first address of the service range is the `kubernetes` Service's ClusterIP.
            ips=["127.0.0.1", str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))],
        )
        pki.issue(
            "controller-manager", "system:kube-controller-manager", server=True, client=True, **loopback
        )
        pki.issue("scheduler", "system:kube-scheduler", server=True, client=True, **loopback)
        # The API server's identity towards aggregated API servers (request-header authentication).
        pki.issue("front-proxy-client", "front-proxy-client", client=True)
        pki.issue("admin", "iotistic-admin", orgs=["system:masters"], client=True)
        pki.issue("apiserver-kubelet-client", node_addons.APISERVER_KUBELET_USER, client=True)
        self._write_egress_config()
        # kwok writes the status of nodes, pods, volumes and ingresses: a cluster-wide job.
        pki.issue("kwok", "kwok-controller", orgs=["system:masters"], client=True)
        kc = self.data_dir / "kubeconfigs"
        write_kubeconfig(
            kc / "controller-manager.kubeconfig",
            self.server,
            pki,
            "controller-manager",
            "kube-controller-manager",
        )
        write_kubeconfig(kc / "scheduler.kubeconfig", self.server, pki, "scheduler", "kube-scheduler")
        write_kubeconfig(kc / "kwok.kubeconfig", self.server, pki, "kwok", "kwok")
        write_kubeconfig(self.kubeconfig, self.server, pki, "admin", "iotistic-admin")

    def _write_egress_config(self) -> None:
        socket = self.real_node.egress_socket
        if len(str(socket)) > 107:
            raise ServiceError(f"{socket} is too long for a unix socket: choose a shorter data folder")
        self.egress_config.write_text(
            "apiVersion: apiserver.k8s.io/v1beta1\n"
            "kind: EgressSelectorConfiguration\n"
            "egressSelections:\n"
            "- name: cluster\n"
            "  connection:\n"
            "    proxyProtocol: HTTPConnect\n"
            "    transport:\n"
            "      uds:\n"
            f"        udsName: {socket}\n"
        )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One start or stop at a time per cluster: test sessions may share the default one."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def start(
        self, timeout: float = START_TIMEOUT, real_node: bool | None = None, control_plane_only: bool = False
    ) -> None:
        """Start the control plane and wait until it can run workloads; a no-op when it runs.

        `real_node`: True adds the real node (and remembers it), False removes it, None keeps
        whatever the cluster had: a cluster that had one gets it back on every start.
        `control_plane_only`: leave the real node alone (tests of the control plane do not bring
        up a developer's real node, which only one cluster of the machine may hold).
        """
        with self._lock():
            if not self.running():
                self._start(timeout)
            elif self.apiserver_outdated():
                self._restart_apiserver(timeout)
        if control_plane_only:
            return
        node = self.real_node
        if real_node is False:
            node.stop()
            node.set_enabled(False)
            with contextlib.suppress(KubeAPIError):
                self.api().delete(f"/api/v1/nodes/{NODE_NAME}")
            return
        if real_node:
            node.set_enabled(True)
        if node.enabled():
            node.start()

    def apiserver_outdated(self) -> bool:
        """True when the running API server was started without flags this version passes."""
        comp = next(c for c in self.components() if c.name == "kube-apiserver")
        pid = comp.pid()
        if pid is None:
            return False
        running = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        return set(comp.argv[1:]) - set(running) != set()

    def _restart_apiserver(self, timeout: float) -> None:
        """Restart only the API server, with today's flags (clients reconnect by themselves)."""
        self._prepare()
        comp = next(c for c in self.components() if c.name == "kube-apiserver")
        comp.signal(signal.SIGTERM)
        comp.wait_gone(timeout=5.0)
        comp.start()
        comp.wait_ready(time.monotonic() + timeout)

    def _start(self, timeout: float) -> None:
        self._stop()  # a partly running control plane (e.g. one component crashed) starts afresh
        self._check_built()
        for name, port in self.ports().items():
            ensure_free(port, name)
        self._prepare()
        deadline = time.monotonic() + timeout
        comps = self.components()
        try:
            by_name = {c.name: c for c in comps}
            by_name["etcd"].start()
            by_name["etcd"].wait_ready(deadline)
            by_name["kube-apiserver"].start()
            by_name["kube-apiserver"].wait_ready(deadline)
            self._release_node_leases()
            # The rest only need the API server, so they start together.
            rest = [c for c in comps if c.name not in ("etcd", "kube-apiserver")]
            for c in rest:
                c.start()
            for c in rest:
                c.wait_ready(deadline)
            self._bootstrap()
            self._wait_workload_ready(deadline, by_name)
            self._warm_up_pod_ips(deadline, by_name["kwok"])
        except BaseException:
            self._stop()
            raise

    def _bootstrap(self) -> None:
        """The objects a cloud would provide: a default StorageClass and the simulated nodes."""
        api = self.api()
        node_addons.apply_all(api, node_addons.control_plane_objects())
        api.ensure(
            "/apis/storage.k8s.io/v1/storageclasses",
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                # kwok's volume stages (toolchain/cluster/kwok/stages.yaml) act as this provisioner.
                "provisioner": "kwok.x-k8s.io/volume",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "allowVolumeExpansion": True,
            },
        )
        resources = {
            "cpu": self.node_cpu,
            "memory": self.node_memory,
            "pods": str(self.node_pods),
            "ephemeral-storage": "1Ti",
        }
        for i in range(self.nodes):
            name = f"kwok-node-{i}"
            api.ensure(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "topology.kubernetes.io/zone": f"local-{i % 2}",
                            "type": "kwok",
                        },
                    },
                    # Status is accepted on create for nodes; kwok keeps the capacity we give here.
                    "status": {
                        "capacity": resources,
                        "allocatable": resources,
                        "addresses": [
                            {"type": "InternalIP", "address": f"10.240.{i // 200}.{i % 200 + 10}"},
                            {"type": "Hostname", "address": name},
                        ],
                    },
                },
            )

    def _release_node_leases(self) -> None:
        """Drop the node leases of a previous kwok run (kwok is not running yet).

        Each kwok process has its own identity and only simulates the nodes whose lease it holds;
        without this a restarted kwok would leave pods Pending until the old leases expire (40 s).
        """
        api = self.api()
        for i in range(self.nodes):
            with contextlib.suppress(KubeAPIError):
                api.request(
                    "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/kwok-node-{i}"
                )

    def _node_leases(self, api: KubeAPI) -> int:
        leases = api.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
        return sum(
            1 for lease in leases.get("items", []) if lease["metadata"]["name"].startswith("kwok-node-")
        )

    def _wait_workload_ready(self, deadline: float, comps: dict[str, Component]) -> None:
        """Nodes Ready with leases held by this kwok, and the default ServiceAccount made (the
        controllers work)."""
        api = self.api()
        checks: list[tuple[str, Callable[[], bool]]] = [
            ("kwok", lambda: self._ready_nodes(api) >= self.nodes and self._node_leases(api) >= self.nodes),
            (
                "kube-controller-manager",
                lambda: api.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            ),
        ]
        for name, check in checks:
            while not check():
                for c in comps.values():
                    if c.pid() is None:
                        raise c.failure("exited during start")
                if time.monotonic() > deadline:
                    raise comps[name].failure("did not make the cluster ready in time")
                time.sleep(0.2)

    def _warm_up_pod_ips(self, deadline: float, kwok: Component) -> None:
        """Have kwok hand out one pod IP before any workload arrives.

        kwok 0.8 creates its IP pool on first use without a lock (Load, then Store): when a burst
        of pods is its first use, two pools can hand out the same IP. One pod first, alone, makes
        the single pool that every later pod shares.
        """
        api = self.api()
        path = "/api/v1/namespaces/kube-system/pods"
        name = "kwok-ip-warm-up"
        api.ensure(
            path,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "nodeName": "kwok-node-0",
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "warm-up", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        )
        while not (api.get(f"{path}/{name}") or {}).get("status", {}).get("podIP"):
            if time.monotonic() > deadline:
                raise kwok.failure("did not give a pod an IP in time")
            time.sleep(0.1)
        api.request("DELETE", f"{path}/{name}?gracePeriodSeconds=0")

    @staticmethod
    def _ready_nodes(api: KubeAPI) -> int:
        nodes = api.request("GET", "/api/v1/nodes").get("items", [])
        return sum(
            1
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        )

    def stop(self) -> None:
        """Stop the real node (if any), then every component, etcd last; no process is left."""
        if not self.data_dir.exists():
            return
        self.real_node.stop()
        with self._lock():
            self._stop()

    def _stop(self) -> None:
        comps = {c.name: c for c in self.components()}
        etcd = comps.pop("etcd")
        # The API server stops listening at once on SIGTERM but then waits for open watches to
        # drain, which can take minutes; it holds no state of its own, so it gets 5 s.
        grace = {"kube-apiserver": 5.0}
        for c in comps.values():
            c.signal(signal.SIGTERM)
        for c in comps.values():
            c.wait_gone(timeout=grace.get(c.name, 15.0))
        # etcd goes after its only client, so every write the API server acknowledged is on disk.
        etcd.signal(signal.SIGTERM)
        etcd.wait_gone(timeout=15.0)
