"""The CLI writes no debug log of its own into the engine home (automation.engine.without_automatic_logs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from automation.engine import AUTOMATIC_LOGS_OFF, Engine, without_automatic_logs

pytestmark = pytest.mark.engine


def test_a_cli_run_leaves_no_log_in_the_engine_home(tmp_path: Path, engine: Engine):
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "pulumi-20261127T000000-1-up.log").write_bytes(b"old")  # left by an older setup
    without_automatic_logs.__wrapped__(home)
    assert (home / "logs").read_text() == AUTOMATIC_LOGS_OFF

    (tmp_path / "state").mkdir()
    env = {
        **os.environ,
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "x",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    (tmp_path / "Pulumi.yaml").write_text("name: logs\nruntime: python\n")
    run = subprocess.run(
        [str(engine.pulumi_bin), "stack", "init", "dev", "--non-interactive"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert (home / "logs").read_text() == AUTOMATIC_LOGS_OFF  # still the file: the CLI logged nowhere
    assert not list(home.rglob("*.log"))


def test_the_engine_home_of_this_process_has_its_logs_turned_off(engine: Engine):
    assert (engine.pulumi_home / "logs").is_file()
