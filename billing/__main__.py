"""`python -m billing serve|worker|migrate`: the billing API, the provisioning worker, the schema.

    python -m billing migrate     # apply schema migrations (serve and worker also do it at start)
    python -m billing serve       # the API on BILLING_PORT (waitress, BILLING_THREADS threads)
    python -m billing worker      # deploys (WORKER_CONCURRENCY at once), Stripe events, suspensions

Configuration comes from the environment (billing/config.py); the worker also reads the Pulumi
backend, passphrase and cluster like every stack operation (IOTISTIC_BACKEND_URL,
PULUMI_CONFIG_PASSPHRASE[_FILE], IOTISTIC_KUBECONFIG; see automation/workspace.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from billing.config import BillingSettings, ConfigError
from servicekit.logs import setup_logging

log = logging.getLogger("billing")


def _settings() -> BillingSettings:
    try:
        return BillingSettings.from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _build(settings: BillingSettings):
    from billing.context import build

    try:
        return build(settings)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(settings: BillingSettings) -> int:
    from billing.api import create_app
    from servicekit.serve import run

    billing = _build(settings)
    try:
        run(create_app(billing), settings.bind_host, settings.port, "billing", threads=settings.threads)
    finally:
        billing.pool.close()
    return 0


def worker(settings: BillingSettings) -> int:
    from procrastinate import PsycopgConnector

    from automation.workspace import StackSettings
    from billing.jobs import Runtime, make_app, run_workers
    from billing.provisioning import Provisioner

    billing = _build(settings)
    stacks = StackSettings.from_env()
    provisioner = Provisioner(stacks, timeout=settings.deploy_timeout_seconds)
    app = make_app(PsycopgConnector(conninfo=settings.database_url), settings.suspension_check_cron)
    heartbeat = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", "5"))
    stalled = float(os.environ.get("WORKER_STALLED_AFTER_SECONDS", "30"))
    log.info(
        "worker starting",
        extra={"concurrency": settings.worker_concurrency, "backend": stacks.backend_url.split("?")[0]},
    )

    async def main() -> None:
        task = asyncio.ensure_future(
            run_workers(
                app,
                Runtime(billing, provisioner, settings.deploy_attempts),
                deploy_concurrency=settings.worker_concurrency,
                heartbeat_seconds=heartbeat,
                stalled_after_seconds=stalled,
            )
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)  # stop fetching; running jobs finish
        try:
            await task
        except asyncio.CancelledError:
            log.info("worker stopped")

    try:
        asyncio.run(main())
    finally:
        billing.pool.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billing", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["serve", "worker", "migrate"])
    args = parser.parse_args(argv)
    settings = _settings()
    setup_logging(f"billing-{args.command}", os.environ.get("LOG_LEVEL", "INFO"))
    if args.command == "migrate":
        from billing.migrate import migrate

        applied = migrate(settings.database_url)
        print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
        return 0
    return serve(settings) if args.command == "serve" else worker(settings)


if __name__ == "__main__":
    sys.exit(main())
