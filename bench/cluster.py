"""Benchmark of the local Kubernetes control plane: build, start-to-ready, `pulumi up` / `destroy`,
and of its real node (--real-node): builds, start-to-ready, a real customer instance, its memory.

    .venv/bin/python bench/cluster.py               # warm build figures, start, up/destroy (~3 min)
    .venv/bin/python bench/cluster.py --cold        # plus a cold build in throw-away Go caches (~10-30 min)
    .venv/bin/python bench/cluster.py --real-node   # the real node instead (~6 min; --cold: ~30 min more)
    .venv/bin/python bench/cluster.py --real-node --cold-images   # only the images cold (~8 min more)

Every figure is measured in this run; ratios compare against a baseline measured in the same run
(the same stack reduced to its Namespace), so they hold on a slower or busier machine too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automation.engine import Engine, locate_engine  # noqa: E402
from devenv.cluster import LocalCluster  # noqa: E402

BUILD = ROOT / "toolchain" / "build-cluster.sh"
BUILD_NODE = ROOT / "toolchain" / "build-node.sh"
FIXTURE = ROOT / "tests" / "fixtures" / "k8s_stack"
CACHE = Path(os.environ.get("IOTISTIC_CACHE", ROOT / ".cache"))


def timed(action: Callable[[], object]) -> float:
    began = time.monotonic()
    action()
    return time.monotonic() - began


def build(cache: Path, script: Path = BUILD) -> float:
    """Run a build script with IOTISTIC_CACHE=cache; seconds taken (fails loudly on error)."""
    env = {**os.environ, "IOTISTIC_CACHE": str(cache)}
    began = time.monotonic()
    proc = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{script.name} failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - began


def build_figures(cold: bool) -> dict[str, float]:
    figures = {"no-op (stamps up to date)": build(CACHE)}
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        # Warm Go caches, no binaries yet (a fresh clone whose CI restored the Go caches).
        warm = Path(tmp) / "warm"
        warm.mkdir()
        (warm / "go").symlink_to(CACHE / "go")
        figures["warm Go cache, binaries relinked"] = build(warm)
        if cold:
            # Nothing cached: modules come from the proxy and every package is compiled.
            cold_cache = Path(tmp) / "cold"
            figures["cold (empty GOCACHE and GOMODCACHE)"] = build(cold_cache)
            # The module cache is read-only on disk; make it removable.
            subprocess.run(["chmod", "-R", "u+w", str(cold_cache)], check=False)
    return figures


def start_figures(tmp: Path, runs: int) -> dict[str, list[float]]:
    fresh, restart, stop = [], [], []
    for i in range(runs):
        cluster = LocalCluster.on_free_ports(tmp / f"start-{i}")
        try:
            fresh.append(timed(cluster.start))
            stop.append(timed(cluster.stop))
            restart.append(timed(cluster.start))
        finally:
            cluster.stop()
    return {"fresh start to ready": fresh, "restart to ready": restart, "stop": stop}


class Stack:
    """tests/fixtures/k8s_stack in its own folder, file backend and Pulumi stack."""

    def __init__(self, dir: Path, engine: Engine, cluster: LocalCluster, **config: str) -> None:
        shutil.copytree(FIXTURE, dir)
        (dir / "Pulumi.yaml").write_text(
            "name: k8s-stack\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
            f"    virtualenv: {sys.prefix}\n"
        )
        (dir / ".state").mkdir()
        self.dir, self.engine = dir, engine
        self.env = {**os.environ, **engine.env(backend_url=f"file://{dir}/.state", passphrase="bench")}
        self.run("stack", "init", "dev")
        self.run("config", "set", "--secret", "kubeconfig", cluster.kubeconfig.read_text())
        for key, value in config.items():
            self.run("config", "set", key, value)

    def run(self, *args: str) -> None:
        proc = self.engine.cli(*args, cwd=self.dir, env=self.env)
        if proc.returncode != 0:
            sys.exit(f"pulumi {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")

    def up_destroy(self, runs: int) -> tuple[list[float], list[float]]:
        ups, destroys = [], []
        for _ in range(runs):
            ups.append(timed(lambda: self.run("up", "--yes", "--skip-preview")))
            destroys.append(timed(lambda: self.run("destroy", "--yes", "--skip-preview")))
        return ups, destroys


def stack_figures(tmp: Path, runs: int) -> dict[str, list[float]]:
    engine = locate_engine()
    cluster = LocalCluster.on_free_ports(tmp / "stack-cluster")
    cluster.start()
    try:
        base = Stack(tmp / "baseline", engine, cluster, namespace="bench-baseline", only_namespace="true")
        full = Stack(tmp / "full", engine, cluster, namespace="bench-full")
        base_up, base_destroy = base.up_destroy(runs)
        full_up, full_destroy = full.up_destroy(runs)
    finally:
        cluster.stop()
    return {
        "up, Namespace only (baseline)": base_up,
        "destroy, Namespace only (baseline)": base_destroy,
        "up, k8s_stack (11 objects)": full_up,
        "destroy, k8s_stack (11 objects)": full_destroy,
    }


def node_build_figures(cold: bool, cold_images: bool = False) -> dict[str, float]:
    """build-node.sh and the image build: no-op, and cold in throw-away caches with --cold
    (`cold_images`: only the images, in a throw-away layout)."""
    from devenv.images import ImageBuilder

    figures = {"node programs, no-op (stamps up to date)": build(CACHE, BUILD_NODE)}
    figures["node images, no-op (every layer cached)"] = ImageBuilder().build().seconds
    if cold:
        with tempfile.TemporaryDirectory(prefix="node-bench-") as tmp:
            cold_cache = Path(tmp) / "cold"
            # The control plane first, as in a cold set-up, so kubelet's shared packages are compiled.
            build(cold_cache)
            figures["node programs, cold (after a cold control plane)"] = build(cold_cache, BUILD_NODE)
            subprocess.run(["chmod", "-R", "u+w", str(cold_cache)], check=False)
            figures["node images, cold (Debian bases, pip, every layer)"] = (
                ImageBuilder(root=Path(tmp) / "images").build().seconds
            )
    elif cold_images:
        with tempfile.TemporaryDirectory(prefix="node-images-bench-") as tmp:
            figures["node images, cold (Debian bases, pip, every layer)"] = (
                ImageBuilder(root=Path(tmp) / "images").build().seconds
            )
    return figures


def real_node_figures(tmp: Path) -> dict[str, float]:
    """Start-to-ready of the real node, and one customer instance on it vs on the simulated nodes."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from automation.provision import destroy_customer, up_customer
    from automation.reconcile import LicenseSigner
    from automation.workspace import StackSettings
    from licensing.keys import generate_private_key_pem, public_key_pem
    from tenancy.schema import parse_tenants

    figures: dict[str, float] = {}
    cluster = LocalCluster.on_free_ports(tmp / "node-cluster")
    figures["control plane, fresh start to ready (baseline)"] = timed(cluster.start)
    try:
        figures["real node, fresh start to ready (images imported)"] = timed(
            lambda: cluster.start(real_node=True)
        )
        cluster.real_node.stop()
        figures["real node, restart to ready (images kept)"] = timed(cluster.real_node.start)
        signer = LicenseSigner(generate_private_key_pem(), "bench-1")
        settings = replace(
            StackSettings.in_folder(tmp / "stacks", "bench", str(cluster.kubeconfig)),
            license_public_key=public_key_pem(signer.private_pem).decode(),
        )
        yaml_entry = (
            "tenants:\n  - id: {id}\n    email: a@{id}.example\n    company: B\n    plan: professional\n"
        )
        (simulated,) = parse_tenants(yaml_entry.format(id="bench-sim"))
        (real,) = parse_tenants(
            yaml_entry.format(id="bench-real") + "    overrides: {placement: {node: real}}\n"
        )
        now = datetime.now(UTC)
        for name, tenant in (("simulated nodes (baseline)", simulated), ("the real node", real)):
            result = up_customer(tenant, signer.license_for(tenant, None, now), settings)
            if not result.ok:
                sys.exit(f"up of {tenant.id} failed:\n{result.error}")
            figures[f"one customer instance Ready, {name}"] = result.seconds
        figures.update(instance_memory(cluster, "customer-bench-real"))
        destroy_customer("bench-sim", settings)
        destroy_customer("bench-real", settings)
    finally:
        cluster.stop()
    return figures


def _bytes(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def instance_memory(cluster: LocalCluster, namespace: str) -> dict[str, float]:
    """Working set (usage minus inactive page cache, as kubelet counts it) of the instance's pods."""
    from devenv.node_host import CGROUP_ROOT

    time.sleep(20)  # let the services settle after their start (imports, connection pools)
    pods = cluster.api().get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    memory_root = Path("/sys/fs/cgroup/memory") / CGROUP_ROOT
    figures: dict[str, float] = {}
    total = 0.0
    requests = 0.0
    for pod in pods:
        uid = pod["metadata"]["uid"]
        found = [d for d in memory_root.rglob(f"pod{uid}") if d.is_dir()]
        if not found:
            continue
        usage = int((found[0] / "memory.usage_in_bytes").read_text())
        inactive = _bytes((found[0] / "memory.stat").read_text()).get("total_inactive_file", 0)
        mib = (usage - inactive) / 2**20
        figures[f"  memory of {pod['metadata']['labels']['app']} (MiB)"] = mib
        total += mib
        for c in pod["spec"]["containers"]:
            value = c["resources"]["requests"]["memory"]
            requests += float(value.removesuffix("Mi")) if value.endswith("Mi") else float(value) / 2**20
    figures["memory of one running instance, working set (MiB)"] = total
    figures["  its pods' memory requests (MiB)"] = requests
    return figures


def real_node_main(cold: bool, cold_images: bool = False) -> int:
    """The real node's figures, each against a baseline measured in this run."""
    with tempfile.TemporaryDirectory(prefix="node-bench-") as tmp:
        print("real node builds (toolchain/build-node.sh, python -m devenv images build)")
        for name, secs in node_build_figures(cold, cold_images).items():
            print(f"  {name:<55} {secs:8.1f} s")
        if not cold:
            what = "node programs" if cold_images else "node programs and images"
            print(f"  cold builds of the {what}: not measured in this run (pass --cold)")
        print("real node (one run)")
        node = real_node_figures(Path(tmp))
        for name, value in node.items():
            unit = "MiB" if "(MiB)" in name else "s"
            print(f"  {name.replace(' (MiB)', ''):<55} {value:8.1f} {unit}")
        start_ratio = (
            node["real node, fresh start to ready (images imported)"]
            / node["control plane, fresh start to ready (baseline)"]
        )
        ready_ratio = (
            node["one customer instance Ready, the real node"]
            / node["one customer instance Ready, simulated nodes (baseline)"]
        )
        memory = node["memory of one running instance, working set (MiB)"]
        memory_share = memory / node["  its pods' memory requests (MiB)"]
        print(f"  {'node start / control plane start':<55} {start_ratio:8.2f} x")
        print(f"  {'instance Ready, real / simulated':<55} {ready_ratio:8.2f} x")
        print(f"  {'instance memory / its memory requests':<55} {memory_share:8.2f} x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cold", action="store_true", help="also measure a cold build (10-30 min)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions for medians (default 3)")
    parser.add_argument("--real-node", action="store_true", help="measure the real node instead (root)")
    parser.add_argument(
        "--cold-images", action="store_true", help="with --real-node: only the images cold (~8 min)"
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows while a long build runs
    if args.cold_images and not args.real_node:
        parser.error("--cold-images goes with --real-node")
    if args.real_node:
        return real_node_main(args.cold, args.cold_images)

    print("build (toolchain/build-cluster.sh)")
    for name, secs in build_figures(args.cold).items():
        print(f"  {name:<45} {secs:8.1f} s")
    if not args.cold:
        print("  cold build: not measured in this run (pass --cold)")

    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        print(f"control plane (median of {args.runs})")
        starts = start_figures(Path(tmp), args.runs)
        for name, values in starts.items():
            print(f"  {name:<45} {statistics.median(values):8.1f} s   (runs: {_fmt(values)})")

        print(f"pulumi on the local cluster (median of {args.runs})")
        stacks = stack_figures(Path(tmp), args.runs)
        medians = {name: statistics.median(values) for name, values in stacks.items()}
        for name, values in stacks.items():
            print(f"  {name:<45} {medians[name]:8.1f} s   (runs: {_fmt(values)})")
        up_ratio = medians["up, k8s_stack (11 objects)"] / medians["up, Namespace only (baseline)"]
        down_ratio = (
            medians["destroy, k8s_stack (11 objects)"] / medians["destroy, Namespace only (baseline)"]
        )
        print(f"  {'up ratio, k8s_stack / baseline':<45} {up_ratio:8.2f} x")
        print(f"  {'destroy ratio, k8s_stack / baseline':<45} {down_ratio:8.2f} x")

    return 0


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
