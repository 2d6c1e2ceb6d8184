"""Preview benchmark: the preview command's work on --customers deployed customer stacks.

    .venv/bin/python bench/preview.py          # about 10-15 minutes on 2 cores

Deploys --customers tenants through reconcile (a throw-away file backend, the local control
plane), then previews all of them as the preview command does when components/ change (a process
per stack, under the policy pack, against their real state), timing:
- serial (--parallel 1) and parallel (--parallel N) in the same run: parallel as % of serial
  (goal <= 40%), with the machine's busy CPU time of each (/proc/stat: engine, providers, policy
  packs and the control plane alike) and the floor it sets: serial's CPU work spread on every CPU;
- serial again without the policy pack: the pack's overhead per preview (seconds and %).
A warm-up preview runs first. Every preview must succeed with no changes, or the figures mean
nothing. Every stack is destroyed at the end and the namespaces checked gone, also after a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automation.affected import Affected  # noqa: E402
from automation.preview import preview_jobs, run_previews  # noqa: E402
from automation.reconcile import LicenseSigner, reconcile  # noqa: E402
from automation.workspace import StackSettings, list_stacks  # noqa: E402
from bench.proctree import machine_busy_seconds  # noqa: E402
from bench.provision import clean_up, load_average, tenant, tenants_yaml  # noqa: E402
from devenv.cluster import LocalCluster  # noqa: E402
from licensing.keys import generate_private_key_pem  # noqa: E402

PARALLEL_GOAL_PERCENT = 40.0


@dataclasses.dataclass
class Timing:
    """One batch of previews: wall time, the machine's busy CPU time, each preview's seconds."""

    wall: float
    cpu: float
    each: list[float]

    @property
    def cpus_used(self) -> float:
        return self.cpu / self.wall


def timed_previews(jobs, parallel: int, label: str) -> Timing:
    print(f"{label}…", flush=True)
    start, cpu_start = time.perf_counter(), machine_busy_seconds()
    results = run_previews(jobs, parallel, timeout=600, progress=lambda line: None)
    wall, cpu = time.perf_counter() - start, machine_busy_seconds() - cpu_start
    bad = [(r.stack, r.changes, r.error) for r in results if not r.ok or r.changes]
    if bad:
        raise RuntimeError(f"{label}: previews failed or found changes: {bad}")
    per = [r.seconds for r in results]
    print(
        f"  {wall:.1f} s (median {statistics.median(per):.1f} s per preview), "
        f"machine CPU busy {cpu:.1f} s = {cpu / wall:.2f} of {os.cpu_count()} CPUs",
        flush=True,
    )
    return Timing(wall, cpu, per)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()

    cluster = LocalCluster()
    started_cluster = not cluster.running()
    if started_cluster:
        print("starting the local cluster…", flush=True)
        cluster.start()
    api = cluster.api()
    tag = f"bench-{secrets.token_hex(2)}"
    print(f"cpus {os.cpu_count()}, load average {load_average()}, ids {tag}-*", flush=True)
    with tempfile.TemporaryDirectory(prefix="iotistic-bench-preview-") as tmp:
        work = Path(tmp)
        settings = StackSettings.in_folder(work, "bench-passphrase", str(cluster.kubeconfig))
        signer = LicenseSigner(generate_private_key_pem(), "bench-1")
        tenants_file = work / "tenants.yaml"
        try:
            tenants = [tenant(f"{tag}-{i:02d}", i) for i in range(args.customers)]
            tenants_file.write_text(tenants_yaml(tenants))
            print(f"deploying {args.customers} customers (reconcile --parallel 4)…", flush=True)
            start = time.perf_counter()
            for r in reconcile(tenants_file, settings, signer, parallel=4, destroy_removed=False):
                if not r.ok:
                    raise RuntimeError(f"deploy of {r.stack} failed:\n{r.error}")
            print(f"  {time.perf_counter() - start:.1f} s", flush=True)

            # What the preview command does when components/ change: every stack, its config
            # copied from the shared folder into a private one.
            affected = Affected("bench", tenants={t.id: "the program changed" for t in tenants})
            private = dataclasses.replace(
                settings, work_root=work / "preview-ws", config_dir=work / "preview-stacks"
            )
            by_id = {t.id: t for t in tenants}
            deployed = list_stacks(settings)
            with_policy = preview_jobs(affected, by_id, settings, private, signer, deployed)
            without_policy = preview_jobs(
                affected, by_id, settings, private, signer, deployed, with_policy=False
            )

            timed_previews(with_policy[:1], 1, "warm-up: one preview")
            serial = timed_previews(with_policy, 1, f"{args.customers} previews, --parallel 1")
            par = timed_previews(
                with_policy, args.parallel, f"{args.customers} previews, --parallel {args.parallel}"
            )
            bare = timed_previews(
                without_policy, 1, f"{args.customers} previews without the policy pack, --parallel 1"
            )
        finally:
            print("destroying…", flush=True)
            tenants_file.write_text("tenants: []\n")
            reconcile(tenants_file, settings, signer, parallel=4, destroy_removed=True)
            left = clean_up(settings, api, tag)  # whatever is left, one by one
    load_after = load_average()
    if started_cluster:
        cluster.stop()

    n = args.customers
    cpus = os.cpu_count() or 1
    serial_each, bare_each = serial.each, bare.each
    overhead = statistics.mean(serial_each) - statistics.mean(bare_each)
    # No parallelism can finish the serial run's CPU work faster than with every CPU busy.
    bound = serial.cpu / cpus
    rows = [
        (f"{n} previews, --parallel 1", f"{serial.wall:.1f} s", f"{serial.wall / n:.2f} s per stack"),
        ("  machine CPU busy", f"{serial.cpu:.1f} s", f"{serial.cpus_used:.2f} of {cpus} CPUs on average"),
        (f"{n} previews, --parallel {args.parallel}", f"{par.wall:.1f} s", f"{par.wall / n:.2f} s per stack"),
        ("  machine CPU busy", f"{par.cpu:.1f} s", f"{par.cpus_used:.2f} of {cpus} CPUs on average"),
        (
            f"  parallel {args.parallel} as % of serial",
            f"{par.wall / serial.wall:.0%}",
            f"goal <= {PARALLEL_GOAL_PERCENT:.0f}%",
        ),
        (
            f"  floor on {cpus} CPUs (serial's CPU work / {cpus})",
            f"{bound:.1f} s",
            f"{bound / serial.wall:.0%} of serial; parallel reached {par.wall / bound:.2f}x the floor",
        ),
        (
            f"{n} previews without the policy pack, --parallel 1",
            f"{bare.wall:.1f} s",
            f"{bare.wall / n:.2f} s per stack",
        ),
        (
            "  policy pack overhead per preview",
            f"{overhead:+.2f} s",
            f"{overhead / statistics.mean(bare_each):+.0%} (mean {statistics.mean(serial_each):.2f} s with, "
            f"{statistics.mean(bare_each):.2f} s without)",
        ),
    ]
    print(f"\n== previews of deployed customer stacks (local control plane, {os.cpu_count()} CPUs) ==")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>9}  {note}".rstrip())
    print(f"load average after: {load_after}")
    print(
        f"WARNING: namespaces still present: {', '.join(left)}"
        if left
        else "clean-up: every bench namespace is gone"
    )


if __name__ == "__main__":
    main()
