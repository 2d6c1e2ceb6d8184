"""Preview benchmark: the preview command's work on --customers deployed customer stacks.

    .venv/bin/python bench/preview.py          # about 10-15 minutes on 2 cores

Deploys --customers tenants through reconcile (a throw-away file backend, the local control
plane), then previews all of them as the preview command does when components/ change (a process
per stack, under the policy pack, against their real state), timing:
- serial (--parallel 1) and parallel (--parallel N) in the same run: parallel as % of serial
  (goal <= 40%);
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
from bench.provision import clean_up, load_average, tenant, tenants_yaml  # noqa: E402
from devenv.cluster import LocalCluster  # noqa: E402
from licensing.keys import generate_private_key_pem  # noqa: E402

PARALLEL_GOAL_PERCENT = 40.0


def timed_previews(jobs, parallel: int, label: str) -> tuple[float, list[float]]:
    print(f"{label}…", flush=True)
    start = time.perf_counter()
    results = run_previews(jobs, parallel, timeout=600, progress=lambda line: None)
    wall = time.perf_counter() - start
    bad = [(r.stack, r.changes, r.error) for r in results if not r.ok or r.changes]
    if bad:
        raise RuntimeError(f"{label}: previews failed or found changes: {bad}")
    per = [r.seconds for r in results]
    print(f"  {wall:.1f} s (median {statistics.median(per):.1f} s per preview)", flush=True)
    return wall, per


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
            serial, serial_each = timed_previews(with_policy, 1, f"{args.customers} previews, --parallel 1")
            par, _ = timed_previews(
                with_policy, args.parallel, f"{args.customers} previews, --parallel {args.parallel}"
            )
            bare, bare_each = timed_previews(
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
    overhead = statistics.mean(serial_each) - statistics.mean(bare_each)
    rows = [
        (f"{n} previews, --parallel 1", f"{serial:.1f} s", f"{serial / n:.2f} s per stack"),
        (f"{n} previews, --parallel {args.parallel}", f"{par:.1f} s", f"{par / n:.2f} s per stack"),
        (
            f"  parallel {args.parallel} as % of serial",
            f"{par / serial:.0%}",
            f"goal <= {PARALLEL_GOAL_PERCENT:.0f}%",
        ),
        (
            f"{n} previews without the policy pack, --parallel 1",
            f"{bare:.1f} s",
            f"{bare / n:.2f} s per stack",
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
