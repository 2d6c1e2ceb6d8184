"""`python -m automation.reconcile`: make the customer stacks match tenants.yaml.

Creates or updates missing and changed tenants, leaves unchanged ones alone, reports stacks whose
tenant was removed (destroys them only with --destroy-removed), renews licenses that run out within
30 days, runs at most --parallel deploys at once (by default as many as free memory holds), each in
its own process, and ends with a summary table. What is unchanged is decided from the stacks'
checkpoints alone (automation.bookkeeping): no engine run per stack. tenants.yaml is validated before
any stack is touched. Deploys take the same path as the signup worker's (automation.deploy:
a process each, a timeout, orphaned locks cleared).
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from automation.bookkeeping import DeployedStack, deployed_stacks
from automation.deploy import DeployJob, run_job
from automation.engine import PROJECT_ROOT, EngineNotBuilt
from automation.parallelism import auto_parallelism
from automation.provision import SOURCE_TENANTS_FILE, StackResult, deployed_license, tenant_hash
from automation.workspace import DATA, StackSettings, ensure_s3_backend
from components.platform import STACK as PLATFORM_STACK
from licensing.keys import public_key_pem
from licensing.tokens import LicenseError, PemKeySource, sign_license, verify_license
from tenancy.schema import Tenant, TenantsFileError, load_tenants

LICENSE_DAYS = 365
RENEW_WHEN_DAYS_LEFT = 30


@dataclass
class ReconcilePlan:
    """What a reconcile will do; computed without touching anything."""

    create: list[Tenant] = field(default_factory=list)
    update: list[Tenant] = field(default_factory=list)
    # Unchanged, but the license deployed runs out within RENEW_WHEN_DAYS_LEFT: deployed again.
    renew: list[Tenant] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # tenants.yaml ids that belong to a signup customer's stack: never taken over.
    conflicts: list[str] = field(default_factory=list)


def plan_reconcile(
    tenants: list[Tenant], deployed: dict[str, DeployedStack], now: datetime | None = None
) -> ReconcilePlan:
    """Compare tenants.yaml with what the backend says was last deployed successfully.

    Decided from the stacks' bookkeeping outputs alone (automation.bookkeeping), so a re-run of
    1,000 unchanged tenants costs no engine run at all. The program records a tenant's fingerprint
    only once its whole instance is deployed, so a stack whose last update failed has the previous
    fingerprint (an update) or none (a create); one whose update was interrupted is updated too.
    """
    now = now or datetime.now(UTC)
    renew_before = now + timedelta(days=RENEW_WHEN_DAYS_LEFT)
    plan = ReconcilePlan()
    wanted = {t.id for t in tenants}
    for tenant in tenants:
        current = deployed.get(tenant.id)
        if current is not None and current.source not in (None, SOURCE_TENANTS_FILE):
            plan.conflicts.append(tenant.id)
        elif current is None or current.tenant_hash is None:
            plan.create.append(tenant)
        elif current.tenant_hash != tenant_hash(tenant) or current.incomplete:
            # An interrupted update may have left anything half-done: deploying again finishes it.
            plan.update.append(tenant)
        elif current.license_expires_at is not None and current.license_expires_at <= renew_before:
            plan.renew.append(tenant)
        else:
            plan.unchanged.append(tenant.id)
    # Only stacks this command created may be reported as removed: signup stacks are not ours.
    plan.removed = sorted(
        name for name, d in deployed.items() if name not in wanted and d.source == SOURCE_TENANTS_FILE
    )
    return plan


@dataclass(frozen=True)
class LicenseSigner:
    """Signs licenses of platform-managed tenants with the platform's private key."""

    private_pem: bytes
    kid: str

    def license_for(self, tenant: Tenant, current: str | None, now: datetime) -> str:
        """Keep a still-valid license of the right plan (no needless pod rollouts); else sign anew."""
        if current:
            try:
                lic = verify_license(
                    current, PemKeySource(public_key_pem(self.private_pem)), customer_id=tenant.id, now=now
                )
                if lic.plan == tenant.plan and lic.seconds_left(now) > RENEW_WHEN_DAYS_LEFT * 86400:
                    return current
            except LicenseError:
                pass
        return sign_license(
            self.private_pem,
            kid=self.kid,
            customer_id=tenant.id,
            plan=tenant.plan,
            expires_at=now + timedelta(days=LICENSE_DAYS),
        )


def load_signer(path: str | None, kid: str) -> LicenseSigner:
    key_file = Path(
        path
        or os.environ.get("IOTISTIC_LICENSE_SIGNING_KEY_FILE")
        or DATA / "license-keys" / "license-private.pem"
    )
    if not key_file.exists():
        raise SystemExit(
            f"error: no license signing key at {key_file}: pass --signing-key FILE, set "
            "IOTISTIC_LICENSE_SIGNING_KEY_FILE, or create one with `python -m licensing keygen DIR`"
        )
    return LicenseSigner(key_file.read_bytes(), kid)


def print_table(results: list[StackResult]) -> None:
    """The summary: one row per stack, what was done, how long it took, what changed or failed."""
    rows = [("STACK", "ACTION", "RESULT", "SECONDS", "CHANGES", "INSTANCE URL")]
    for r in sorted(results, key=lambda r: r.stack):
        changes = ", ".join(f"{k} {v}" for k, v in sorted(r.changes.items())) or "-"
        url = r.outputs.get("instanceUrl", "")
        rows.append((r.stack, r.action, "ok" if r.ok else "FAILED", f"{r.seconds:.1f}", changes, url))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in results:
        if not r.ok:
            print(f"\n{r.stack} ({r.action}) failed:\n{r.error}")


def reconcile(
    tenants_file: Path,
    settings: StackSettings,
    signer: LicenseSigner | None,
    parallel: int,
    destroy_removed: bool,
    dry_run: bool = False,
    timeout: float = 300.0,
) -> list[StackResult]:
    """Bring the stacks in line with tenants_file; returns one result per stack looked at."""
    tenants = load_tenants(tenants_file)  # raises TenantsFileError before anything is touched
    if settings.backend_url.startswith("s3://"):
        ensure_s3_backend(settings.backend_url, dict(settings.extra_env))
    # One read of every checkpoint, no engine run: the platform's own stack is not a tenant's.
    deployed = {n: d for n, d in deployed_stacks(settings).items() if n != PLATFORM_STACK}
    plan = plan_reconcile(tenants, deployed)
    renewing = f", {len(plan.renew)} licenses to renew" if plan.renew else ""
    print(
        f"reconcile: {len(plan.create)} to create, {len(plan.update)} to update{renewing}, "
        f"{len(plan.unchanged)} unchanged, {len(plan.removed)} removed from {tenants_file.name}",
        flush=True,
    )
    results = [
        StackResult(name, "none (unchanged)", outputs={"instanceUrl": deployed[name].instance_url})
        for name in plan.unchanged
    ]
    results += [
        StackResult(
            name,
            "refused",
            ok=False,
            error=f"stack {name!r} belongs to a signup customer; give the tenants.yaml entry another id",
        )
        for name in plan.conflicts
    ]
    if not destroy_removed:
        results += [
            StackResult(name, "none (removed; --destroy-removed deletes it)") for name in plan.removed
        ]
    if dry_run:
        results += [StackResult(t.id, "would create") for t in plan.create]
        results += [StackResult(t.id, "would update") for t in plan.update]
        results += [StackResult(t.id, "would renew the license") for t in plan.renew]
        return results
    if (plan.create or plan.update or plan.renew) and signer is None:
        raise SystemExit("error: a license signing key is needed to deploy tenants")

    now = datetime.now(UTC)
    # The licenses deployed are read only for the stacks about to change (a CLI call each): an
    # update keeps a still-valid license of the same plan, so its pods do not roll for nothing.
    changing = [t.id for t in plan.update + plan.renew]
    with ThreadPoolExecutor(max_workers=4) as reads:
        licenses = reads.map(lambda n: deployed_license(n, settings), changing)
        current = dict(zip(changing, licenses, strict=True))
    work: list[tuple[str, DeployJob]] = []
    for action, group in (("create", plan.create), ("update", plan.update), ("renew", plan.renew)):
        for tenant in group:
            license_key = signer.license_for(tenant, current.get(tenant.id), now)
            job = DeployJob("up", tenant.id, settings, tenant, license_key, SOURCE_TENANTS_FILE)
            work.append((action, job))
    if destroy_removed:
        work += [("destroy", DeployJob("destroy", name, settings)) for name in plan.removed]
    if parallel <= 0:
        parallel = auto_parallelism(len(work))
    if work:
        print(f"reconcile: {len(work)} deploys, {parallel} at a time", flush=True)
    # Threads only wait: every deploy runs in a process of its own (automation.deploy).
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        jobs: dict[Future, tuple[str, str]] = {
            pool.submit(run_job, job, timeout): (job.stack, action) for action, job in work
        }
        for done, fut in enumerate(as_completed(jobs), 1):
            name, action = jobs[fut]
            result = fut.result()
            result.action = action
            results.append(result)
            state = "ok" if result.ok else "FAILED"
            print(f"[{done}/{len(jobs)}] {name}: {action} {state} in {result.seconds:.1f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m automation.reconcile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tenants", type=Path, default=PROJECT_ROOT / "tenants.yaml")
    parser.add_argument(
        "--parallel",
        default="auto",
        help="concurrent deploys, or 'auto' (default): as many as free memory holds "
        "(IOTISTIC_DEPLOY_MEMORY_MIB caps it), at most one per CPU and one more",
    )
    parser.add_argument("--destroy-removed", action="store_true", help="destroy stacks removed from the file")
    parser.add_argument("--dry-run", action="store_true", help="only say what would be done")
    parser.add_argument("--backend", help="Pulumi backend URL (default: file backend in the data folder)")
    parser.add_argument("--kubeconfig", help="cluster to deploy to (default: the local control plane)")
    parser.add_argument("--signing-key", help="PEM private key that signs tenant licenses")
    parser.add_argument("--kid", default=os.environ.get("IOTISTIC_LICENSE_KID", "platform-1"))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per deploy (default 300)")
    args = parser.parse_args(argv)
    if args.parallel == "auto":
        args.parallel = 0
    elif not args.parallel.isdigit() or int(args.parallel) < 1:
        parser.error(f"--parallel must be 'auto' or a whole number of at least 1, not {args.parallel!r}")
    else:
        args.parallel = int(args.parallel)
    try:
        # The file's problems first: before a missing signing key, and before from_env creates
        # the backend folder or the passphrase file.
        load_tenants(args.tenants)
        settings = StackSettings.from_env(args.backend, args.kubeconfig)
        signer = None if args.dry_run else load_signer(args.signing_key, args.kid)
        results = reconcile(
            args.tenants, settings, signer, args.parallel, args.destroy_removed, args.dry_run, args.timeout
        )
    except (TenantsFileError, EngineNotBuilt) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print_table(results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
