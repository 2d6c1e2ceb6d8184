"""`python -m automation.preview --base origin/main`: what a change would do, per stack, as one report.

Finds the stacks the change affects (automation.affected), previews them under the policy pack
in parallel (at most --parallel at once, a process each: the deploy path's runner), against
their real state, with their config from the shared `stacks/` folder copied to a private one
(a preview never changes what the next `up` deploys), and writes one markdown report
(automation.preview_report). Exit status: 0 when every preview succeeded without a mandatory
policy violation ("no changes" included), 1 otherwise, 2 for bad usage; the reason is in the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from automation.affected import Affected, GitError, affected_stacks
from automation.deploy import DeployJob, run_job
from automation.engine import PROJECT_ROOT, EngineNotBuilt
from automation.preview_report import ReportInput, failed, render
from automation.provision import SOURCE_SIGNUP, SOURCE_TENANTS_FILE, StackResult, deployed_license
from automation.reconcile import LicenseSigner, load_signer
from automation.workspace import DATA, StackSettings, list_stacks
from tenancy.schema import Tenant, TenantsFileError, load_tenants

# A new tenant previewed without the signing key gets this stand-in (a secret, never deployed).
UNSIGNED_LICENSE = "unsigned-license-for-preview"


def preview_jobs(
    affected: Affected,
    tenants: dict[str, Tenant],
    settings: StackSettings,
    private: StackSettings,
    signer: LicenseSigner | None,
    deployed: list[str],
    with_policy: bool = True,
) -> list[DeployJob]:
    """One job per affected stack; licenses chosen exactly as reconcile would choose them."""
    now = datetime.now(UTC)
    names = [n for n in affected.stacks if n in deployed]  # opening a missing stack would create it

    def current_license(name: str) -> str | None:
        try:
            return deployed_license(name, settings)
        except Exception:
            return None  # a new stack: nothing deployed yet

    with ThreadPoolExecutor(max_workers=4) as reads:  # read-only CLI calls
        licenses = dict(zip(names, reads.map(current_license, names), strict=True))
    shared = str(settings.stack_config_dir)
    jobs = []
    for name in affected.stacks:
        common = {"shared_config_dir": shared, "with_policy": with_policy}
        if name in affected.removed:
            jobs.append(DeployJob("preview-destroy", name, private, **common))
        elif name in tenants:
            current = licenses.get(name)
            if signer is not None:
                license_key = signer.license_for(tenants[name], current, now)
            else:
                license_key = current or UNSIGNED_LICENSE
            jobs.append(
                DeployJob("preview", name, private, tenants[name], license_key, SOURCE_TENANTS_FILE, **common)
            )
        else:
            jobs.append(DeployJob("preview", name, private, source=SOURCE_SIGNUP, **common))
    return jobs


def run_previews(jobs: list[DeployJob], parallel: int, timeout: float, progress=print) -> list[StackResult]:
    """Each job in its own process (automation.deploy), at most `parallel` at once."""
    results: list[StackResult] = []

    def one(job: DeployJob) -> StackResult:
        result = run_job(job, timeout)
        progress(f"  {job.stack}: {'ok' if result.ok else 'FAILED'} in {result.seconds:.1f} s")
        return result

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(one, jobs))
    return results


def preview(
    repo: Path,
    base: str,
    tenants_file: Path,
    settings: StackSettings,
    signer: LicenseSigner | None,
    parallel: int = 4,
    timeout: float = 300.0,
    progress=print,
) -> ReportInput:
    """Everything the report needs; problems before any preview end up in `.problem`."""
    try:
        tenants = load_tenants(tenants_file)
        deployed = list_stacks(settings)
        affected = affected_stacks(repo, base, tenants, deployed)
    except (TenantsFileError, GitError) as e:
        return ReportInput(base, {}, [], problem=str(e))
    notes = []
    if signer is None and affected.tenants:
        notes.append(
            "> Previewed without the license signing key: a tenant whose plan changed keeps its current "
            "license here; reconcile signs a new one (its instance Secret and API Deployment change too)."
        )
    progress(
        f"preview: {len(affected.stacks)} stack(s) affected since {affected.base}"
        + (" (the program changed: every stack)" if affected.program_changed else "")
    )
    with tempfile.TemporaryDirectory(prefix="iotistic-preview-") as tmp:
        private = dataclasses.replace(
            settings, work_root=Path(tmp) / "workspaces", config_dir=Path(tmp) / "stacks"
        )
        by_id = {t.id: t for t in tenants}
        jobs = preview_jobs(affected, by_id, settings, private, signer, deployed)
        results = run_previews(jobs, parallel, timeout, progress)
    reasons = {name: affected.reason(name) for name in affected.stacks}
    return ReportInput(affected.base, reasons, results, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m automation.preview", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--base", required=True, help="git revision the change is compared with (the PR's target)"
    )
    parser.add_argument(
        "--repo", type=Path, default=PROJECT_ROOT, help="git checkout to compare (default: this one)"
    )
    parser.add_argument("--tenants", default="tenants.yaml", help="tenants file, relative to --repo")
    parser.add_argument("--output", type=Path, help="write the markdown report here (default: stdout)")
    parser.add_argument("--parallel", type=int, default=4, help="concurrent previews (default 4)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per preview (default 300)")
    parser.add_argument("--backend", help="Pulumi backend URL (default: file backend in the data folder)")
    parser.add_argument(
        "--kubeconfig", help="cluster the stacks deploy to (default: the local control plane)"
    )
    parser.add_argument(
        "--signing-key", help="license signing key (PEM); without it licenses are not re-signed"
    )
    parser.add_argument("--kid", default=os.environ.get("IOTISTIC_LICENSE_KID", "platform-1"))
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    start = time.monotonic()
    try:
        settings = StackSettings.from_env(args.backend, args.kubeconfig)
        signer = None
        # The key reconcile would sign with (the same default); without one, licenses are kept.
        default_key = DATA / "license-keys" / "license-private.pem"
        if args.signing_key or os.environ.get("IOTISTIC_LICENSE_SIGNING_KEY_FILE") or default_key.exists():
            signer = load_signer(args.signing_key, args.kid)
        progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 (stdout: the report)
        report = preview(
            args.repo.resolve(),
            args.base,
            args.repo / args.tenants,
            settings,
            signer,
            args.parallel,
            args.timeout,
            progress,
        )
    except EngineNotBuilt as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = render(report)
    if args.output:
        args.output.write_text(text)
        print(
            f"report: {args.output} ({len(text):,} characters, {time.monotonic() - start:.1f} s)",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
