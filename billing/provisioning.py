"""The worker's use cases: deploy or destroy one customer's stack from what the database says.

The database is the source of truth: each job reads the customer, its plan, its newest license
and whether it is suspended, writes that into the stack's config and runs `up` in a process of
its own (automation.deploy), so any worker on any machine can run any job. The outcome lands in
`customers.deployment_status` / `deployment_error` and one `deployments` row per attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from automation.deploy import DeployJob, DeployResult, run_job
from automation.provision import SOURCE_SIGNUP
from automation.workspace import StackSettings
from billing import store
from billing.domain import CUSTOMER_DELETED, CUSTOMER_SUSPENDED
from billing.services import Billing
from tenancy.schema import Tenant

log = logging.getLogger(__name__)


class TransientDeployError(Exception):
    """A deploy failed in a way a later attempt may not (a lock, an unreachable cluster, a timeout)."""


Runner = Callable[[DeployJob, float], DeployResult]


@dataclass
class Provisioner:
    """How this worker reaches stacks: the backend/cluster settings and the process runner."""

    stacks: StackSettings
    timeout: float = 300.0
    run: Runner = lambda job, timeout: run_job(job, timeout)  # noqa: E731 (a default, replaced in tests)


def deploy(
    b: Billing,
    p: Provisioner,
    customer_id: str,
    *,
    reason: str,
    job_id: int | None,
    attempt: int,
    last_attempt: bool,
) -> str:
    """Bring the customer's stack in line with the database. Raises TransientDeployError to retry."""
    with b.pool.connection() as conn, conn.transaction():
        customer = store.get_customer(conn, customer_id, for_update=True)
        if customer is None or customer["status"] == CUSTOMER_DELETED:
            return "skipped: no such customer (or offboarded)"
        sub = store.get_subscription(conn, customer_id)
        lic = store.latest_license(conn, customer_id)
        store.set_deployment_status(conn, customer_id, "deploying", error=customer["deployment_error"])
        store.abandon_running(conn, customer_id)  # one job per stack runs at a time: these are orphans
        deployment = store.start_deployment(conn, customer_id, "up", reason, job_id, attempt)
    tenant = Tenant(id=customer_id, email=customer["email"], company=customer["company_name"], plan=sub.plan)
    job = DeployJob(
        "up",
        customer_id,
        p.stacks,
        tenant=tenant,
        license_key=lic["license"],
        source=SOURCE_SIGNUP,
        suspended=customer["status"] == CUSTOMER_SUSPENDED,
    )
    log.info("deploy started", extra={"customer_id": customer_id, "reason": reason, "attempt": attempt})
    result = p.run(job, p.timeout)
    retry = not result.ok and result.transient and not last_attempt
    with b.pool.connection() as conn, conn.transaction():
        store.finish_deployment(
            conn, deployment, result.ok, result.seconds, result.changes, result.error or None
        )
        if result.ok:
            store.set_deployment_status(conn, customer_id, "deployed", deployed_at=b.clock())
        elif retry:
            store.set_deployment_status(conn, customer_id, "deploying", error=f"retrying: {result.error}")
        else:
            store.set_deployment_status(conn, customer_id, "failed", error=result.error)
    log.info(
        "deploy finished",
        extra={
            "customer_id": customer_id,
            "ok": result.ok,
            "seconds": round(result.seconds, 1),
            "changes": result.changes,
        },
    )
    if retry:
        raise TransientDeployError(result.error)
    return "deployed" if result.ok else f"failed: {result.error.splitlines()[0] if result.error else ''}"


def destroy(
    b: Billing, p: Provisioner, customer_id: str, *, job_id: int | None, attempt: int, last_attempt: bool
) -> str:
    """Destroy an offboarded customer's stack; the customer row and its history stay."""
    with b.pool.connection() as conn, conn.transaction():
        customer = store.get_customer(conn, customer_id, for_update=True)
        if customer is None:
            return "skipped: no such customer"
        store.abandon_running(conn, customer_id)
        deployment = store.start_deployment(conn, customer_id, "destroy", "offboarding", job_id, attempt)
    result = p.run(DeployJob("destroy", customer_id, p.stacks), p.timeout)
    retry = not result.ok and result.transient and not last_attempt
    with b.pool.connection() as conn, conn.transaction():
        store.finish_deployment(
            conn, deployment, result.ok, result.seconds, result.changes, result.error or None
        )
        if result.ok:
            store.set_deployment_status(conn, customer_id, "destroyed")
            store.audit(conn, customer_id, "system", "stack_destroyed")
        else:
            store.set_deployment_status(
                conn, customer_id, "destroying" if retry else "failed", error=result.error
            )
    if retry:
        raise TransientDeployError(result.error)
    return "destroyed" if result.ok else f"failed: {result.error.splitlines()[0] if result.error else ''}"
