"""Scale benchmark: reconcile N customers from nothing, re-run unchanged, change one (issue 11).

    .venv/bin/python bench/scale.py                 # 10 and 100 customers, about 15 minutes on 2 cores
    .venv/bin/python bench/scale.py --sizes 10,100,1000   # the long run (opt-in; about an hour)

For each size, on a control plane of its own (started here, sized for the customers with
LocalCluster.sized_for) and a throw-away file backend, the real command runs as a platform
engineer would run it: `python -m automation.reconcile --tenants <generated tenants.yaml>`
(parallelism 'auto', i.e. chosen from free memory). Printed, from one run:

- create: seconds in all and per customer, failures, the parallelism reconcile chose;
- peak total RSS: every process the project runs (the reconcile command with all its deploy
  processes, engines, language hosts, programs, providers, and the control plane), sampled from
  /proc every 0.25 s; MiB per customer: what the control plane grew by, divided by the customers;
  peak total PSS, every 2 s: the same processes with each shared page counted once in all (the
  deploy processes are forks of one server and share its imported modules; RSS counts them in each);
- the no-change re-run (nothing to deploy) and the one-change run (one tenant's plan changed,
  exactly one stack deployed), end to end;
- ratios against baselines measured in the same run: seconds per customer at each size against
  the smallest size (the growth curve), and the re-run against reading each stack through the
  CLI as the previous reconcile did (measured on 10 stacks, scaled to N).

Everything lives in `.data/bench-scale-<random>/` and is removed at the end; each cluster is stopped.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automation.parallelism import BUDGET_VARIABLE, memory_budget_mib  # noqa: E402
from automation.provision import deployed_license  # noqa: E402
from automation.workspace import StackSettings, open_stack  # noqa: E402
from bench.proctree import total_kib, total_pss_kib  # noqa: E402
from bench.provision import PLANS, tenant, tenants_yaml  # noqa: E402
from devenv.cluster import LocalCluster  # noqa: E402
from licensing.keys import generate_private_key_pem  # noqa: E402

GOALS = {"create_1000_s": 3600, "rerun_s": 300, "one_change_s": 60, "peak_mib": 4096}
CLI_READS_SAMPLE = 10


@dataclass
class Run:
    """One reconcile command: how long, how many deploys failed, what it printed."""

    seconds: float
    returncode: int
    summary: str
    failed: int
    parallel: int | None
    deployed: int
    peak_kib: int = 0
    peak_pss_kib: int = 0
    cpu_seconds: float = 0.0


@dataclass
class SizeResult:
    customers: int
    nodes: int
    create: Run
    rerun: Run
    one_change: Run
    control_plane_growth_kib: int
    cli_read_seconds: float  # per stack, the previous reconcile's way
    growth_by_component_kib: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def tenants_file(n: int, changed: int | None = None) -> str:
    """tenants.yaml of customers c0000...; the `changed` one on the next plan."""
    tenants = [tenant(f"c{i:04d}", i) for i in range(n)]
    if changed is not None:
        tenants[changed] = replace(tenants[changed], plan=PLANS[(changed + 1) % len(PLANS)])
    return tenants_yaml(tenants)


class PeakSampler:
    """The largest summed RSS over some process trees, sampled in a thread every second, and the
    largest summed PSS (shared pages divided among their sharers) every 10 s.

    Sampling is not free and competes with the deploys for the same CPUs: an RSS sample reads
    /proc/<pid>/stat of every process (~6 ms for 100), a PSS sample makes the kernel walk their
    page tables (~90 ms). Every 0.25 s and 2 s they took 7% of one CPU; now under 1.5%. A
    deploy's memory peak lasts seconds, and a run has hundreds of them."""

    def __init__(self, roots: list[int], every: float = 1.0, pss_every: int = 10):
        self.roots = roots
        self.every = every
        self.pss_every = pss_every
        self.peak_kib = 0
        self.peak_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        samples = 0
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, total_kib(self.roots))
            if samples % self.pss_every == 0:
                self.peak_pss_kib = max(self.peak_pss_kib, total_pss_kib(self.roots))
            samples += 1
            self._stop.wait(self.every)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_reconcile(
    tenants: Path,
    env: dict[str, str],
    backend: str,
    cluster_pids: list[int],
    label: str,
    total: int,
    parallel: str = "auto",
) -> Run:
    """`python -m automation.reconcile` with progress every 10%, and its peak memory with the cluster's."""
    argv = [sys.executable, "-m", "automation.reconcile", "--tenants", str(tenants), "--backend", backend]
    argv += ["--parallel", parallel]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out: list[str] = []
    step = max(1, total // 10)
    with PeakSampler([proc.pid, *cluster_pids]) as sampler:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            m = re.match(r"\[(\d+)/(\d+)\]", line)
            if m and (int(m[1]) % step == 0 or m[1] == m[2]):
                rate = (time.monotonic() - started) / int(m[1])
                print(f"    {label}: {m[1]}/{m[2]} deployed, {rate:.1f} s each so far", flush=True)
            elif line.startswith("reconcile:"):
                print(f"    {label}: {line.strip()}", flush=True)
        # wait4: the CPU time of the command and every process it waited for (deploys, engines,
        # providers), i.e. what the deploys cost whatever the parallelism.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    text = "".join(out)
    summary = next((ln for ln in out if ln.startswith("reconcile:")), "").strip()
    parallel = re.search(r"(\d+) at a time", text)
    run = Run(
        seconds,
        proc.returncode,
        summary,
        failed=len(re.findall(r"^\[\d+/\d+\] \S+: \S+ FAILED", text, re.MULTILINE)),
        parallel=int(parallel[1]) if parallel else None,
        deployed=len(re.findall(r"^\[\d+/\d+\]", text, re.MULTILINE)),
        peak_kib=sampler.peak_kib,
        peak_pss_kib=sampler.peak_pss_kib,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )
    if proc.returncode:
        print(text[-3000:], flush=True)
    return run


def one_size(n: int, work: Path, parallel: str = "auto") -> SizeResult:
    """Create n customers, re-run, change one; on a cluster of its own sized for n."""
    folder = work / f"n{n}"
    folder.mkdir(parents=True)
    cluster = LocalCluster.on_free_ports(folder / "cluster").sized_for(n)
    print(f"==> {n} customers: control plane with {cluster.nodes} simulated nodes", flush=True)
    cluster.start()
    try:
        key = folder / "license-private.pem"
        key.write_bytes(generate_private_key_pem())
        tenants = folder / "tenants.yaml"
        tenants.write_text(tenants_file(n))
        passphrase = secrets.token_urlsafe(16)
        backend = f"file://{folder / 'state'}"
        (folder / "state").mkdir()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PULUMI_CONFIG_PASSPHRASE", "IOTISTIC_")) or k == BUDGET_VARIABLE
        }
        env.update(
            IOTISTIC_CACHE=os.environ.get("IOTISTIC_CACHE", str(ROOT / ".cache")),
            IOTISTIC_DATA=str(folder / "data"),
            IOTISTIC_STACK_CONFIG_DIR=str(folder / "stacks"),
            IOTISTIC_KUBECONFIG=str(cluster.kubeconfig),
            IOTISTIC_LICENSE_SIGNING_KEY_FILE=str(key),
            PULUMI_CONFIG_PASSPHRASE=passphrase,
        )
        components = {name: pid for name, pid in cluster.pids().items() if pid}
        cluster_pids = list(components.values())
        before = {name: total_kib([pid]) for name, pid in components.items()}
        create = run_reconcile(tenants, env, backend, cluster_pids, "create", n, parallel)
        # Where the control plane's memory went (the next thing to tune at 1,000 customers).
        by_component = {name: total_kib([pid]) - before[name] for name, pid in components.items()}
        growth = sum(by_component.values())
        rerun = run_reconcile(tenants, env, backend, cluster_pids, "re-run", n)
        tenants.write_text(tenants_file(n, changed=n // 2))
        one = run_reconcile(tenants, env, backend, cluster_pids, "one change", 1)
        # The previous reconcile read every stack through the CLI (outputs, then the license).
        settings = StackSettings(
            backend,
            passphrase,
            str(cluster.kubeconfig),
            folder / "data" / "workspaces",
            config_dir=folder / "stacks",
        )
        sample = [f"c{i:04d}" for i in range(min(n, CLI_READS_SAMPLE))]
        os.environ["PULUMI_CONFIG_PASSPHRASE"] = passphrase
        started = time.monotonic()
        for name in sample:  # its outputs (`stack output`, twice), then its license (`config get`)
            open_stack(name, settings).outputs()
            deployed_license(name, settings)
        cli_read = (time.monotonic() - started) / len(sample)
        return SizeResult(n, cluster.nodes, create, rerun, one, growth, cli_read, by_component)
    finally:
        cluster.stop()


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def report(results: list[SizeResult]) -> None:
    base = results[0]
    base_each = base.create.seconds / base.customers
    print("\n== customers from nothing (python -m automation.reconcile, parallelism auto)")
    print(
        f"{'customers':>10} {'nodes':>6} {'parallel':>8} {'seconds':>9} {'s/customer':>11} "
        f"{'vs ' + str(base.customers):>7} {'failed':>7} {'CPU s/cust':>10} {'peak RSS':>10} "
        f"{'CP MiB/customer':>16} {'peak PSS':>10}"
    )
    for r in results:
        each = r.create.seconds / r.customers
        print(
            f"{r.customers:>10} {r.nodes:>6} {r.create.parallel or '-':>8} {r.create.seconds:>9.1f} "
            f"{each:>11.2f} {each / base_each:>6.2f}x {r.create.failed:>7} "
            f"{r.create.cpu_seconds / r.customers:>10.2f} {mib(r.create.peak_kib):>10} "
            f"{r.control_plane_growth_kib / 1024 / r.customers:>16.2f} {mib(r.create.peak_pss_kib):>10}"
        )
    print("\n== what the control plane grew by while the customers were created, by process")
    for r in results:
        parts = sorted(r.growth_by_component_kib.items(), key=lambda kv: -kv[1])
        print(f"{r.customers:>10}  " + ", ".join(f"{name} {mib(kib)}" for name, kib in parts))
    print("\n== re-run with nothing changed, and one tenant changed")
    print(
        f"{'customers':>10} {'re-run s':>9} {'deployed':>9} {'CLI reads s':>12} {'ratio':>7} "
        f"{'one change s':>13} {'deployed':>9}"
    )
    for r in results:
        cli_total = r.cli_read_seconds * r.customers
        print(
            f"{r.customers:>10} {r.rerun.seconds:>9.1f} {r.rerun.deployed:>9} {cli_total:>12.1f} "
            f"{r.rerun.seconds / cli_total:>6.1%} {r.one_change.seconds:>13.1f} {r.one_change.deployed:>9}"
        )
    print(
        "\n(CLI reads: the previous reconcile's way of deciding 'unchanged', one `stack output` and one "
        "`config get` per stack, measured on "
        f"{CLI_READS_SAMPLE} stacks and scaled; ratio = re-run / that)"
    )
    largest = results[-1]
    print(
        f"\ngoals at {largest.customers} customers: create {largest.create.seconds:.0f} s "
        f"(goal for 1,000: < {GOALS['create_1000_s']} s), re-run {largest.rerun.seconds:.1f} s "
        f"(< {GOALS['rerun_s']}), one change {largest.one_change.seconds:.1f} s (< {GOALS['one_change_s']}), "
        f"peak {mib(max(r.create.peak_kib for r in results))} RSS, "
        f"{mib(max(r.create.peak_pss_kib for r in results))} PSS (< {GOALS['peak_mib']} MiB), "
        f"failures {sum(r.create.failed + r.rerun.failed + r.one_change.failed for r in results)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100", help="comma-separated customer counts (default 10,100)")
    parser.add_argument(
        "--parallel", default="auto", help="deploys at once when creating (default auto: reconcile's choice)"
    )
    args = parser.parse_args()
    if args.parallel != "auto" and not (args.parallel.isdigit() and int(args.parallel) > 0):
        parser.error(f"--parallel must be 'auto' or a whole number above 0, not {args.parallel!r}")
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",")})
    except ValueError:
        parser.error(f"--sizes must be whole numbers separated by commas, not {args.sizes!r}")
    if not sizes or sizes[0] < 1:
        parser.error("--sizes must be at least 1")
    print(f"{os.cpu_count()} CPUs, deploy memory budget {memory_budget_mib()} MiB, sizes {sizes}", flush=True)
    work = ROOT / ".data" / f"bench-scale-{secrets.token_hex(3)}"
    results = []
    try:
        for n in sizes:
            result = one_size(n, work, args.parallel)
            results.append(result)
            print(
                f"    {n}: create {result.create.seconds:.1f} s ({result.create.failed} failed), re-run "
                f"{result.rerun.seconds:.1f} s, one change {result.one_change.seconds:.1f} s",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    failed = any(r.create.returncode or r.rerun.returncode or r.one_change.returncode for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
