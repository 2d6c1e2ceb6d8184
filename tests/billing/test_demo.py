"""The README's customer-side commands, run as a user types them, in a data folder of their own:
`python -m devenv cluster start`, `python -m devenv billing start|status|stop`, `python -m devenv.demo`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
OFFSET = "700"  # every devenv port moved: this run never meets the user's own services


def sh(data: Path, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULUMI_", "IOTISTIC_")) or k == "IOTISTIC_CACHE"
    }
    env.update(IOTISTIC_DATA=str(data), IOTISTIC_PORT_OFFSET=OFFSET)
    return subprocess.run(
        ["bash", "-c", f"source scripts/env.sh && {command}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def data(service_data_dir):
    folder = service_data_dir / "demo"  # under the data folder: the postgres user must reach it
    folder.mkdir()
    yield folder
    for command in (
        "python -m devenv billing stop",
        "python -m devenv all stop",
        "python -m devenv cluster stop",
    ):
        sh(folder, command)


def test_the_demo_signs_a_customer_up_provisions_it_and_upgrades_it(data):
    started = sh(data, "python -m devenv cluster start")
    assert started.returncode == 0, started.stderr
    billing = sh(data, "python -m devenv billing start")
    assert billing.returncode == 0, billing.stderr
    assert "billing: started on http://127.0.0.1:53700" in billing.stdout
    again = sh(data, "python -m devenv billing start")
    assert "already running" in again.stdout

    demo = sh(data, "python -m devenv.demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "deployment_status = deployed" in out
    assert "license in the tenant Secret: plan starter, trial True" in out
    assert "plan professional, trial False, maxDevices 50" in out
    assert "subscription active, deployment_status deployed" in out

    # A second run offboards the first demo customer before signing up a new one.
    second = sh(data, "python -m devenv.demo")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "offboarding 1 customer(s) of an earlier demo run" in second.stdout

    assert "running on http://127.0.0.1:53700" in sh(data, "python -m devenv billing status").stdout
    stopped = sh(data, "python -m devenv billing stop")
    assert stopped.returncode == 0 and "billing: stopped" in stopped.stdout
    assert "stopped" in sh(data, "python -m devenv billing status").stdout
