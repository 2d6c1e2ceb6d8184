"""Background work on a Postgres job queue (procrastinate): deploys, Stripe events, suspensions.

- `deploy` / `destroy`: one job at a time per customer stack (`lock`), at most one waiting deploy
  per customer (`queueing_lock`: a waiting job reads the newest state anyway), bounded parallelism
  (the deploy worker's concurrency), each deploy in its own process, retries with backoff for
  transient failures only.
- `stripe_event`: applies one stored webhook event; retried on any error.
- `suspend_overdue` (periodic): unpaid trials and expired grace periods → suspended.
- Jobs of a worker that died (kill -9, a lost machine) are found by its missing heartbeat and put
  back in the queue; the deploy they ran cancelled itself when its parent died (see
  automation/deploy.py), and a lock it could not release is cleared by the next attempt.

Jobs are deferred inside the caller's transaction (`connection=`), so a signup that rolls back
queues nothing and a committed one always has its deploy queued.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import procrastinate
import psycopg
from procrastinate import exceptions as pexc

from billing import provisioning, services
from billing.provisioning import Provisioner, TransientDeployError

log = logging.getLogger(__name__)
NAMESPACE = "billing"
DEPLOYS, EVENTS, MAINTENANCE = "deploys", "events", "maintenance"


@dataclass
class Runtime:
    """What jobs run against in this worker process."""

    billing: services.Billing
    provisioner: Provisioner
    deploy_attempts: int = 5


_runtime: Runtime | None = None


def _rt() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the billing worker runtime is not set (run `python -m billing worker`)")
    return _runtime


class _DeployRetry(procrastinate.BaseRetryStrategy):
    """Retry transient deploy failures only, 2, 4, 8, 16 s apart, up to the configured attempts."""

    def get_retry_decision(self, *, exception: BaseException, job) -> procrastinate.RetryDecision | None:
        if not isinstance(exception, TransientDeployError) or job.attempts + 1 >= _rt().deploy_attempts:
            return None
        return procrastinate.RetryDecision(retry_in={"seconds": 2 ** (job.attempts + 1)})


def _attempt(context: procrastinate.JobContext) -> tuple[int, bool]:
    attempt = (context.job.attempts or 0) + 1
    return attempt, attempt >= _rt().deploy_attempts


def deploy(context: procrastinate.JobContext, customer_id: str, reason: str = "") -> str:
    attempt, last = _attempt(context)
    rt = _rt()
    return provisioning.deploy(
        rt.billing,
        rt.provisioner,
        customer_id,
        reason=reason,
        job_id=context.job.id,
        attempt=attempt,
        last_attempt=last,
    )


def destroy(context: procrastinate.JobContext, customer_id: str) -> str:
    attempt, last = _attempt(context)
    rt = _rt()
    return provisioning.destroy(
        rt.billing, rt.provisioner, customer_id, job_id=context.job.id, attempt=attempt, last_attempt=last
    )


def stripe_event(event_id: str) -> str:
    return services.process_stripe_event(_rt().billing, event_id)


def suspend_overdue(timestamp: int) -> str:
    suspended = services.suspend_overdue(_rt().billing)
    return f"suspended {len(suspended)}"


def make_app(connector, suspension_cron: str = "* * * * *") -> procrastinate.App:
    """A procrastinate App with billing's tasks (named `billing:<task>`) on `connector`."""
    app = procrastinate.App(connector=connector)
    app.task(name=f"{NAMESPACE}:deploy", queue=DEPLOYS, retry=_DeployRetry(), pass_context=True)(deploy)
    app.task(name=f"{NAMESPACE}:destroy", queue=DEPLOYS, retry=_DeployRetry(), pass_context=True)(destroy)
    events_retry = procrastinate.RetryStrategy(max_attempts=6, exponential_wait=2)
    app.task(name=f"{NAMESPACE}:stripe_event", queue=EVENTS, retry=events_retry)(stripe_event)
    suspend = app.task(name=f"{NAMESPACE}:suspend_overdue", queue=MAINTENANCE)(suspend_overdue)
    app.periodic(cron=suspension_cron)(suspend)
    return app


class ProcrastinateQueue:
    """billing.services.JobQueue on procrastinate, deferring inside the caller's transaction."""

    def __init__(self, app: procrastinate.App) -> None:
        self.app = app

    def _defer(
        self, conn: psycopg.Connection, task: str, *, lock: str | None, queueing_lock: str | None, **kwargs
    ) -> None:
        # A savepoint: a refused defer (already waiting) must not abort the caller's transaction.
        try:
            with conn.transaction():
                self.app.configure_task(
                    f"{NAMESPACE}:{task}", lock=lock, queueing_lock=queueing_lock, connection=conn
                ).defer(**kwargs)
        except pexc.AlreadyEnqueued:
            log.info("job already waiting", extra={"task": task, **kwargs})

    def defer_deploy(self, conn: psycopg.Connection, customer_id: str, reason: str) -> None:
        self._defer(
            conn,
            "deploy",
            lock=f"stack:{customer_id}",
            queueing_lock=f"deploy:{customer_id}",
            customer_id=customer_id,
            reason=reason,
        )

    def defer_destroy(self, conn: psycopg.Connection, customer_id: str) -> None:
        self._defer(
            conn,
            "destroy",
            lock=f"stack:{customer_id}",
            queueing_lock=f"destroy:{customer_id}",
            customer_id=customer_id,
        )

    def defer_stripe_event(self, conn: psycopg.Connection, event_id: str) -> None:
        self._defer(conn, "stripe_event", lock=None, queueing_lock=None, event_id=event_id)


async def _recover_stalled(app: procrastinate.App, every: float, stalled_after: float) -> None:
    """Put back the jobs of workers whose heartbeat stopped (killed, or their machine lost)."""
    while True:
        try:
            stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after)
            for job in stalled:
                log.warning(
                    "retrying a job of a dead worker", extra={"job_id": job.id, "task": job.task_name}
                )
                await app.job_manager.retry_job(job)
        except Exception:  # the loop must survive a lost connection; the next round tries again
            log.exception("stalled-job recovery failed")
        await asyncio.sleep(every)


async def run_workers(
    app: procrastinate.App,
    runtime: Runtime,
    *,
    deploy_concurrency: int,
    heartbeat_seconds: float = 5.0,
    stalled_after_seconds: float = 30.0,
) -> None:
    """Two workers in one process: deploys (bounded by `deploy_concurrency`), and the quick jobs
    (Stripe events, suspensions) that must not wait behind five-minute deploys."""
    global _runtime
    _runtime = runtime
    common = {
        "update_heartbeat_interval": heartbeat_seconds,
        "stalled_worker_timeout": stalled_after_seconds,
        "install_signal_handlers": False,
    }
    async with app.open_async():
        recovery = asyncio.create_task(
            _recover_stalled(app, max(1.0, heartbeat_seconds), stalled_after_seconds)
        )
        try:
            await asyncio.gather(
                app.run_worker_async(
                    queues=[DEPLOYS], concurrency=deploy_concurrency, name="deploys", **common
                ),
                app.run_worker_async(queues=[EVENTS, MAINTENANCE], concurrency=2, name="events", **common),
            )
        finally:
            recovery.cancel()
