"""Benchmark of the local Kubernetes control plane: build, start-to-ready, `pulumi up` / `destroy`.

    .venv/bin/python bench/cluster.py            # warm build figures, start, up/destroy (~3 min)
    .venv/bin/python bench/cluster.py --cold     # plus a cold build in throw-away Go caches (~10-30 min)

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
FIXTURE = ROOT / "tests" / "fixtures" / "k8s_stack"
CACHE = Path(os.environ.get("IOTISTIC_CACHE", ROOT / ".cache"))


def timed(action: Callable[[], object]) -> float:
    began = time.monotonic()
    action()
    return time.monotonic() - began


def build(cache: Path) -> float:
    """Run build-cluster.sh with IOTISTIC_CACHE=cache; seconds taken (fails loudly on error)."""
    env = {**os.environ, "IOTISTIC_CACHE": str(cache)}
    began = time.monotonic()
    proc = subprocess.run([str(BUILD)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"build-cluster.sh failed:\n{proc.stderr[-3000:]}")
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cold", action="store_true", help="also measure a cold build (10-30 min)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions for medians (default 3)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows while a long build runs

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
