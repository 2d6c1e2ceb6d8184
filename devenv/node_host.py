"""What the real node changes on the host, recorded before it starts and undone when it stops.

Only one real node may run on a machine: its network namespace, cgroup root and runtime folder
have fixed names, and kubelet writes machine-wide sysctls. A lock file names the data folder
that holds the node, so a second one fails with a message saying whose node runs and how to stop
it. Everything the node changes outside its own data folder is listed here:

- the network namespace `iotistic-node` (/run/netns; `ip netns` may bind-mount /run/netns itself);
- cgroups: kubelet's `cgroupRoot` `/iotistic-node` in every hierarchy (kubepods live below it);
- sysctls kubelet sets (vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops,
  kernel.keys.root_maxkeys/maxbytes): their values before the start are restored;
- folders kubelet and containerd create at fixed paths even with their own roots
  (/var/lib/kubelet/device-plugins, /var/log/containers, /var/log/pods, /run/containerd,
  /var/lib/cni): removed when they did not exist before;
- mounts (kubelet's root, pod volumes, container root filesystems, sandbox netns and shm):
  everything mounted under the node's folders is unmounted;
- processes: containerd's shims and every container process (found through the cgroups).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devenv.service_user import ServiceError

NETNS = "iotistic-node"
NETNS_DIR = Path("/run/netns")
NETNS_PATH = NETNS_DIR / NETNS
RUNTIME = Path("/run/iotistic-node")  # sockets, containerd's state, runc's root, pod netns mounts
LOCK = Path("/run/iotistic-node.lock")
CGROUP_FS = Path("/sys/fs/cgroup")
CGROUP_ROOT = "iotistic-node"
NODE_IP = "10.240.1.2"
POD_CIDR = "10.245.0.0/24"
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/etc/cni",
    "/opt/containerd",
)


class NodeBusy(ServiceError):
    """Another data folder's real node runs on this machine."""


class NodePrerequisite(ServiceError):
    """Something the real node needs is missing on this machine; the message names it."""


def check_prerequisites(binaries: Iterable[Path]) -> None:
    """Root, network namespaces, cgroup v1 controllers and the programs: one clear error."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the real node needs root (network namespace, cgroups, mounts)")
    if not Path("/proc/self/ns/net").exists():
        problems.append("this kernel has no network namespaces")
    for controller in ("cpu", "memory", "pids"):
        if not (CGROUP_FS / controller).is_dir():
            problems.append(f"no cgroup v1 '{controller}' hierarchy under {CGROUP_FS}")
    missing = [str(b) for b in binaries if not Path(b).exists()]
    if missing:
        problems.append(f"missing programs: {', '.join(missing)} (scripts/setup installs and builds them)")
    if problems:
        raise NodePrerequisite("cannot start the real node: " + "; ".join(problems))


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ServiceError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def in_node(*argv: str) -> list[str]:
    """argv run inside the node's network namespace (nsenter keeps /sys; `ip netns exec` does not)."""
    return ["nsenter", f"--net={NETNS_PATH}", "--", *argv]


# --- the machine-wide lock ------------------------------------------------------------------------
@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Serialises starts and stops of the real node across every checkout on this machine."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def owner_file() -> Path:
    return RUNTIME / "owner.json"


def owner() -> dict | None:
    """Who holds the real node: {'data_dir', 'pid', 'started'}, or None."""
    try:
        return json.loads(owner_file().read_text())
    except (OSError, ValueError):
        return None


def claim(data_dir: Path) -> None:
    """Record that `data_dir`'s node holds the machine (call under machine_lock)."""
    RUNTIME.mkdir(parents=True, exist_ok=True)
    owner_file().write_text(
        json.dumps({"data_dir": str(data_dir), "pid": os.getpid(), "started": time.strftime("%H:%M:%S")})
    )


def busy_message(holder: dict) -> str:
    data = Path(holder["data_dir"])
    return (
        f"the real node of {data} (started at {holder.get('started', '?')} by pid {holder.get('pid', '?')}) "
        "is running on this machine, and only one real node can run at a time. Stop it with "
        f"`IOTISTIC_DATA={data.parent} python -m devenv cluster stop` (from its checkout), then retry"
    )


# --- recording and undoing ---------------------------------------------------------------------------
@dataclass
class HostState:
    """The host as it was before the node started (kept in RUNTIME, so a crashed run is undone too)."""

    sysctls: dict[str, str]
    absent_paths: list[str]
    netns_dir_existed: bool
    netns_dir_was_mount: bool

    @classmethod
    def record(cls) -> HostState:
        sysctls = {}
        for key in KUBELET_SYSCTLS:
            with contextlib.suppress(OSError):
                sysctls[key] = (Path("/proc/sys") / key).read_text().strip()
        return cls(
            sysctls=sysctls,
            absent_paths=[p for p in HOST_PATHS if not Path(p).exists()],
            netns_dir_existed=NETNS_DIR.exists(),
            netns_dir_was_mount=str(NETNS_DIR) in mount_points(),
        )

    def save(self) -> None:
        RUNTIME.mkdir(parents=True, exist_ok=True)
        (RUNTIME / "host-state.json").write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls) -> HostState | None:
        try:
            return cls(**json.loads((RUNTIME / "host-state.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def mount_points() -> list[str]:
    """Every mount point of this mount namespace, in mount order (unescaped)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split()[4]
        points.append(field.encode().decode("unicode_escape"))
    return points


def unmount_under(roots: Iterable[Path]) -> list[str]:
    """Unmount everything mounted at or below `roots`, deepest first; the mount points undone."""
    prefixes = [str(r).rstrip("/") for r in roots]
    done: list[str] = []
    for _ in range(5):  # a shared mount can reappear through propagation: go round again
        targets = [p for p in mount_points() if any(p == pre or p.startswith(pre + "/") for pre in prefixes)]
        if not targets:
            break
        for point in sorted(set(targets), key=lambda p: p.count("/"), reverse=True):
            if run("umount", point, check=False).returncode != 0:
                run("umount", "--lazy", point, check=False)
            done.append(point)
    return done


def cgroup_dirs() -> list[Path]:
    """Our cgroup root in every hierarchy where it exists."""
    return [h / CGROUP_ROOT for h in CGROUP_FS.iterdir() if (h / CGROUP_ROOT).is_dir()]


def create_cgroups() -> None:
    """kubelet's cgroupRoot must exist in every hierarchy before it starts."""
    for hierarchy in CGROUP_FS.iterdir():
        if hierarchy.is_dir() and (hierarchy / "cgroup.procs").exists():
            (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)


def _cgroup_tree(root: Path) -> list[Path]:
    """Every cgroup below `root`, deepest first; cgroups that vanish while we look are skipped
    (containerd removes a container's cgroups as soon as its processes are gone)."""
    return [Path(d) for d, _, _ in os.walk(root, topdown=False, onerror=lambda e: None)]


def cgroup_pids() -> set[int]:
    pids: set[int] = set()
    for root in cgroup_dirs():
        for d in _cgroup_tree(root):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
    return pids


def kill_cgroup_processes(timeout: float = 15.0) -> None:
    """SIGKILL every process in our cgroups (the containers), until none is left."""
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise ServiceError(f"container processes {sorted(pids)} did not die")
        time.sleep(0.2)


def remove_cgroups() -> None:
    """rmdir our cgroup trees bottom-up (the kernel refuses while a process is inside)."""
    for root in cgroup_dirs():
        for d in _cgroup_tree(root):  # deepest first, root last
            with contextlib.suppress(OSError):
                d.rmdir()
    left = cgroup_dirs()
    if left:
        raise ServiceError(f"cgroups left behind: {', '.join(map(str, left))}")


def processes_using(marker: str) -> list[int]:
    """Pids whose command line mentions `marker` (containerd's shims name their socket's folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def kill_processes(pids: Iterable[int], timeout: float = 10.0) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{p}").exists() and _not_zombie(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


# --- the network namespace ----------------------------------------------------------------------------
def create_netns(service_cidr: str) -> None:
    """The node's namespace: loopback, an interface with the node's address, forwarding.

    No default route: pods and node processes can reach each other and the API server (through the
    bridge's files) but no other network. The service range is routed to the dummy interface so
    connections to a ClusterIP made from the namespace itself find a route before kube-proxy's DNAT.
    """
    if not NETNS_PATH.exists():
        run("ip", "netns", "add", NETNS)
    node = in_node
    run(*node("ip", "link", "set", "lo", "up"))
    if run(*node("ip", "link", "show", "node0"), check=False).returncode != 0:
        # A veth pair with both ends inside (this kernel has no dummy interfaces): node0 holds the
        # node's address; nothing is connected to its peer, so nothing leaves the namespace.
        run(*node("ip", "link", "add", "node0", "type", "veth", "peer", "name", "node0-peer"))
        run(*node("ip", "addr", "add", f"{NODE_IP}/32", "dev", "node0"))
    run(*node("ip", "link", "set", "node0-peer", "up"))
    run(*node("ip", "link", "set", "node0", "up"))
    run(*node("ip", "route", "replace", service_cidr, "dev", "node0", "src", NODE_IP))
    # Per-namespace settings: bridged pod traffic goes through iptables (policies, Services).
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")):
        run(*node("sh", "-c", f"echo {value} > /proc/sys/{key}"))


def delete_netns() -> None:
    if NETNS_PATH.exists():
        run("ip", "netns", "delete", NETNS, check=False)
    with contextlib.suppress(FileNotFoundError):
        if NETNS_PATH.exists():
            run("umount", "--lazy", str(NETNS_PATH), check=False)
            NETNS_PATH.unlink()


def restore(state: HostState | None) -> None:
    """Put the sysctls, folders and /run/netns back as they were before the node started."""
    if state is None:
        return
    for key, value in state.sysctls.items():
        path = Path("/proc/sys") / key
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)
    for p in state.absent_paths:
        shutil.rmtree(p, ignore_errors=True)
    if NETNS_DIR.exists() and not any(NETNS_DIR.iterdir()):
        if not state.netns_dir_was_mount and str(NETNS_DIR) in mount_points():
            run("umount", str(NETNS_DIR), check=False)
        if not state.netns_dir_existed:
            with contextlib.suppress(OSError):
                NETNS_DIR.rmdir()


def leftovers(data_dir: Path) -> list[str]:
    """What of the node is still on the host (empty after a clean stop); used by stop and tests."""
    found = []
    if NETNS_PATH.exists():
        found.append(f"network namespace {NETNS_PATH}")
    found += [f"cgroup {d}" for d in cgroup_dirs()]
    roots = [str(data_dir), str(RUNTIME)]
    found += [f"mount {p}" for p in mount_points() if any(p.startswith(r) for r in roots)]
    found += [f"process {pid}" for pid in processes_using(str(RUNTIME))]
    if RUNTIME.exists():
        found.append(f"folder {RUNTIME}")
    return found
