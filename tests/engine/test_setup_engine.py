"""scripts/setup-engine: the venv and the engine, what the GitHub workflows set up (no root needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parent.parent.parent


def test_ci_machines_get_the_venv_and_engine_from_one_command():
    """scripts/setup-engine: what the workflows run; here (cached) it only checks and takes seconds."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "setup-engine")], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "engine ready" in proc.stderr and "engine set up in" in proc.stderr
