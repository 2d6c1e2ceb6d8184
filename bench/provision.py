"""Provisioning benchmark: customer stacks (CustomerInstance) on the local control plane.

    .venv/bin/python bench/provision.py           # about 15 minutes on 2 cores

Prints, from one run:
- peak memory of one deploy: a subprocess deploys one customer while /proc is sampled every
  50 ms; the peak of the summed RSS of its process tree (Python driver, pulumi CLI, language
  host, program, kubernetes provider processes) and the largest single process (ru_maxrss);
- `pulumi up` of one customer, warm (the deploy above warmed plugins and page cache): the median
  of --runs fresh creates, each destroyed afterwards; timed around Stack.up() (Automation API),
  opening the stack and setting its config are shown separately;
- `preview` of the deployed customer (no changes): median of --runs;
- --customers tenants through automation.reconcile (a generated tenants.yaml in a temp dir, a
  throw-away file backend) with --parallel 1 and 4: the reconcile call is timed, then the tenants
  are destroyed with destroy_removed (timed too);
- ratios: parallel-4 time as % of serial (goal <= 40%), and the single `up` against its 30 s goal.

Everything runs under ids `bench-<random>-*` in a temp backend; every stack is destroyed and the
namespaces are checked to be gone at the end, also after a failure. A cluster this script had
to start is stopped again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automation.provision import (  # noqa: E402
    SOURCE_TENANTS_FILE,
    destroy_customer,
    tenant_config,
    up_customer,
)
from automation.reconcile import LicenseSigner, reconcile  # noqa: E402
from automation.workspace import StackSettings, list_stacks, open_stack  # noqa: E402
from bench.proctree import tree_rss  # noqa: E402
from devenv.cluster import LocalCluster  # noqa: E402
from devenv.kubeapi import KubeAPI  # noqa: E402
from licensing.keys import generate_private_key_pem  # noqa: E402
from tenancy.schema import Tenant  # noqa: E402

PLANS = ("starter", "professional", "enterprise")
UP_GOAL_SECONDS = 30.0
PARALLEL_GOAL_PERCENT = 40.0
NAMESPACE_GONE_TIMEOUT = 300.0


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tenant(customer_id: str, i: int = 0) -> Tenant:
    return Tenant(customer_id, f"ops@{customer_id}.example", f"Bench {customer_id}", PLANS[i % len(PLANS)])


def tenants_yaml(tenants: list[Tenant]) -> str:
    entries = "".join(
        f"  - id: {t.id}\n    email: {t.email}\n    company: {t.company}\n    plan: {t.plan}\n"
        for t in tenants
    )
    return f"tenants:\n{entries}" if entries else "tenants: []\n"


def check(result, what: str) -> None:
    """Stop the benchmark on a failed deploy: its timing would mean nothing."""
    if not result.ok:
        raise RuntimeError(f"{what} failed:\n{result.error}")


# --- memory: the process tree of one deploy (bench/proctree.py samples /proc) -------------------
@dataclass
class MemoryPeak:
    """The largest summed RSS seen over a deploy's process tree, and what it was made of."""

    total_kib: int = 0
    by_name: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (processes, KiB)
    largest_process_kib: int = 0  # ru_maxrss of the deploy's own children (getrusage)
    seconds: float = 0.0


def measure_deploy_memory(customer: Tenant, license_key: str, settings: StackSettings) -> MemoryPeak:
    """Deploy `customer` in a subprocess (this script, --deploy-one) and sample its process tree."""
    job = {"settings": {**asdict(settings), "work_root": str(settings.work_root)}, "tenant": asdict(customer)}
    job["license"] = license_key
    proc = subprocess.Popen(
        [sys.executable, __file__, "--deploy-one"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = MemoryPeak()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            by_name = tree_rss(proc.pid)
            total = sum(kib for _, kib in by_name.values())
            if total > peak.total_kib:
                peak.total_kib, peak.by_name = total, by_name
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate(json.dumps(job), timeout=600)
    done.set()
    sampler.join()
    report = json.loads(out.strip().splitlines()[-1])
    if not report["ok"]:
        raise RuntimeError(f"memory deploy of {customer.id} failed:\n{report['error']}")
    peak.largest_process_kib = report["children_maxrss_kib"]
    peak.seconds = report["seconds"]
    return peak


def deploy_one_from_stdin() -> None:
    """--deploy-one: deploy the tenant described on stdin, print one JSON line about it."""
    job = json.loads(sys.stdin.read())
    s = job["settings"]
    settings = StackSettings(
        s["backend_url"],
        s["passphrase"],
        s["kubeconfig"],
        Path(s["work_root"]),
        tuple(tuple(kv) for kv in s["extra_env"]),
    )
    result = up_customer(Tenant(**job["tenant"]), job["license"], settings, source=SOURCE_TENANTS_FILE)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # Linux: ru_maxrss in KiB
    print(
        json.dumps(
            {
                "ok": result.ok,
                "error": result.error,
                "seconds": result.seconds,
                "children_maxrss_kib": usage.ru_maxrss,
            }
        )
    )


# --- the benchmark -----------------------------------------------------------------------------------
def single_customer(
    customer: Tenant, signer: LicenseSigner, settings: StackSettings, runs: int
) -> tuple[list[float], list[float], list[float]]:
    """`runs` fresh creates of one customer (each destroyed after), then `runs` previews of the last."""
    ups, opens, previews = [], [], []
    license_key = signer.license_for(customer, None, datetime.now(UTC))
    for i in range(runs):
        start = time.perf_counter()
        stack = open_stack(customer.id, settings)
        stack.set_all_config(tenant_config(customer, license_key, settings.kubeconfig, SOURCE_TENANTS_FILE))
        opens.append(time.perf_counter() - start)
        ups.append(timed(lambda stack=stack: stack.up(color="never")))
        print(f"  up #{i + 1}: {ups[-1]:.1f} s", flush=True)
        if i < runs - 1:
            check(destroy_customer(customer.id, settings), f"destroy of {customer.id}")
    for _ in range(runs):
        previews.append(timed(lambda: stack.preview(color="never")))
    print(f"  previews: {', '.join(f'{p:.1f}' for p in previews)} s", flush=True)
    check(destroy_customer(customer.id, settings), f"destroy of {customer.id}")
    return ups, opens, previews


def many_customers(
    tenants: list[Tenant], parallel: int, signer: LicenseSigner, settings: StackSettings, work: Path
) -> tuple[float, float]:
    """Create `tenants` through reconcile with `parallel` deploys at once, then destroy them all."""
    tenants_file = work / f"tenants-{parallel}.yaml"
    tenants_file.write_text(tenants_yaml(tenants))
    start = time.perf_counter()
    results = reconcile(tenants_file, settings, signer, parallel=parallel, destroy_removed=False)
    create_seconds = time.perf_counter() - start
    for r in results:
        check(r, f"create of {r.stack} (parallel {parallel})")
    if sorted(r.stack for r in results if r.action == "create") != sorted(t.id for t in tenants):
        raise RuntimeError(f"reconcile did not create every tenant: {[(r.stack, r.action) for r in results]}")
    tenants_file.write_text("tenants: []\n")
    start = time.perf_counter()
    for r in reconcile(tenants_file, settings, signer, parallel=4, destroy_removed=True):
        check(r, f"destroy of {r.stack}")
    return create_seconds, time.perf_counter() - start


def bench_namespaces(api: KubeAPI, tag: str) -> list[str]:
    items = api.get("/api/v1/namespaces")["items"]
    return sorted(n["metadata"]["name"] for n in items if n["metadata"]["name"].startswith(f"customer-{tag}"))


def clean_up(settings: StackSettings, api: KubeAPI, tag: str) -> list[str]:
    """Destroy every stack of the throw-away backend, then wait for the namespaces to be gone."""
    for name in list_stacks(settings):
        result = destroy_customer(name, settings)
        if not result.ok:
            print(f"warning: destroy of {name} failed:\n{result.error}", file=sys.stderr)
    deadline = time.monotonic() + NAMESPACE_GONE_TIMEOUT
    while (left := bench_namespaces(api, tag)) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deploy-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.deploy_one:
        deploy_one_from_stdin()
        return

    cluster = LocalCluster()
    started_cluster = not cluster.running()
    if started_cluster:
        print("starting the local cluster…", flush=True)
        cluster.start()
    api = cluster.api()
    tag = f"bench-{secrets.token_hex(2)}"
    print(f"cpus {os.cpu_count()}, load average {load_average()}, ids {tag}-*", flush=True)
    with tempfile.TemporaryDirectory(prefix="iotistic-bench-") as tmp:
        work = Path(tmp)
        settings = StackSettings.in_folder(work, "bench-passphrase", str(cluster.kubeconfig))
        signer = LicenseSigner(generate_private_key_pem(), "bench-1")
        try:
            one = tenant(f"{tag}-one")
            print("memory of one deploy (also the warm-up)…", flush=True)
            memory = measure_deploy_memory(one, signer.license_for(one, None, datetime.now(UTC)), settings)
            check(destroy_customer(one.id, settings), f"destroy of {one.id}")
            print(f"single customer, {args.runs} fresh creates…", flush=True)
            ups, opens, previews = single_customer(one, signer, settings, args.runs)
            many: dict[int, tuple[float, float]] = {}
            for parallel in (1, 4):
                batch = [tenant(f"{tag}-p{parallel}-{i:02d}", i) for i in range(args.customers)]
                print(f"{args.customers} customers, parallel {parallel}…", flush=True)
                many[parallel] = many_customers(batch, parallel, signer, settings, work)
                print(f"  create {many[parallel][0]:.1f} s, destroy {many[parallel][1]:.1f} s", flush=True)
        finally:
            left = clean_up(settings, api, tag)
    load_after = load_average()
    if started_cluster:
        cluster.stop()

    med = statistics.median
    up = med(ups)
    serial, par4 = many[1][0], many[4][0]
    n = args.customers
    parts = sorted(memory.by_name.items(), key=lambda kv: -kv[1][1])
    rows = [
        (
            f"pulumi up, one customer (fresh create, median of {args.runs})",
            f"{up:.1f} s",
            f"{up / UP_GOAL_SECONDS:.0%} of the {UP_GOAL_SECONDS:.0f} s goal; runs "
            + ", ".join(f"{u:.1f}" for u in ups)
            + f"; open stack + set config {med(opens):.1f} s",
        ),
        (f"pulumi preview, deployed customer (median of {args.runs})", f"{med(previews):.1f} s", ""),
        (
            "peak memory of one deploy (process tree RSS)",
            f"{memory.total_kib / 1024:.0f} MiB",
            f"largest process {memory.largest_process_kib / 1024:.0f} MiB; deploy {memory.seconds:.1f} s",
        ),
        (
            "  at the peak",
            "",
            ", ".join(f"{name} x{count} {kib / 1024:.0f} MiB" for name, (count, kib) in parts),
        ),
        (f"{n} customers via reconcile, --parallel 1", f"{serial:.1f} s", f"{serial / n:.1f} s each"),
        (f"{n} customers via reconcile, --parallel 4", f"{par4:.1f} s", f"{par4 / n:.1f} s each"),
        (
            "  parallel 4 as % of serial",
            f"{par4 / serial:.0%}",
            f"goal <= {PARALLEL_GOAL_PERCENT:.0f}%",
        ),
        (f"destroy of {n} (--destroy-removed, parallel 4)", f"{many[1][1]:.1f} s", f"and {many[4][1]:.1f} s"),
    ]
    print(f"\n== customer provisioning (local control plane, {os.cpu_count()} CPUs) ==")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>9}  {note}".rstrip())
    print(f"load average after: {load_after}")
    if left:
        print(f"WARNING: namespaces still present: {', '.join(left)}")
    else:
        print("clean-up: every bench namespace is gone")


if __name__ == "__main__":
    main()
