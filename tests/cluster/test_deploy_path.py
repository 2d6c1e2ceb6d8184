"""The one deploy path (automation/deploy.py) on the real engine and cluster: a process per deploy,
no credential on any command line, a timeout that cancels the engine and leaves the stack usable."""

from __future__ import annotations

import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from automation.deploy import DeployJob, run_job
from automation.reconcile import LicenseSigner
from automation.workspace import StackSettings
from licensing.keys import generate_private_key_pem
from tenancy.schema import Tenant

pytestmark = pytest.mark.engine


class CommandLineWatch:
    """Scans every process's command line on the machine, every 20 ms, for a string."""

    def __init__(self, needle: str) -> None:
        self.needle = needle.encode()
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if self.needle in cmdline:
                        self.seen.append(cmdline.split(b"\0")[0].decode(errors="replace"))
            self._stop.wait(0.02)

    def __enter__(self) -> CommandLineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def job(tmp_path, cluster):
    settings = StackSettings.in_folder(tmp_path, "deploy-path", str(cluster.kubeconfig))
    tenant = Tenant(f"dp-{secrets.token_hex(3)}", "ops@dp.example", "DP", "starter")
    license_key = LicenseSigner(generate_private_key_pem(), "dp-1").license_for(
        tenant, None, datetime.now(UTC)
    )
    yield DeployJob("up", tenant.id, settings, tenant, license_key, "tenants.yaml")
    run_job(DeployJob("destroy", tenant.id, settings), 300)


def test_a_deploy_never_puts_the_license_on_a_command_line(job):
    with (
        CommandLineWatch(job.license_key.split(".")[2][:40]) as watch,
        CommandLineWatch("\0--secret") as secret_cli,
        CommandLineWatch("\0select\0") as select_cli,
    ):
        result = run_job(job, 300)
    assert result.ok, result.error
    assert result.outputs["instanceUrl"] == f"https://{job.stack}.iotistic.cloud"
    assert result.outputs["licenseExpiresAt"].startswith(str(datetime.now(UTC).year + 1))
    assert watch.seen == []
    # The caller sealed the license (automation.stack_secrets) and the new stack was created at
    # once: no `pulumi config set --secret` and no failing `pulumi stack select` ran.
    assert secret_cli.seen == [] and select_cli.seen == []


def test_a_timeout_cancels_the_engine_and_the_next_deploy_succeeds(job):
    cut = run_job(job, timeout=4)
    assert not cut.ok and cut.transient
    assert cut.error.startswith("timed out after 4 s")
    locks = Path(job.settings.backend_url.removeprefix("file://")) / ".pulumi" / "locks"
    assert not list(locks.rglob("*.json")) if locks.exists() else True, "the cancelled update left its lock"
    again = run_job(job, 300)
    assert again.ok, again.error
