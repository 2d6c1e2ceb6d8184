"""`bench/scale.py`, the README's scale benchmark, at its smallest: the real reconcile command creates
customers, a re-run deploys nothing, one changed tenant deploys exactly one stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.engine


def test_scale_bench_creates_then_re_runs_nothing_then_deploys_only_the_changed_tenant():
    proc = subprocess.run(
        [sys.executable, "bench/scale.py", "--sizes", "2"],
        cwd=ROOT,
        env={**os.environ, "IOTISTIC_DEPLOY_MEMORY_MIB": "1200"},  # 2 deploys at once
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "create: reconcile: 2 to create, 0 to update, 0 unchanged" in out
    assert "re-run: reconcile: 0 to create, 0 to update, 2 unchanged" in out
    assert "one change: reconcile: 0 to create, 1 to update, 1 unchanged" in out
    # customers nodes parallel seconds s/customer ratio failed CPU peak CP-MiB
    row = re.search(r"^\s+2\s+4\s+2\s+[\d.]+\s+[\d.]+\s+1\.00x\s+0\s+[\d.]+\s+[\d,]+ MiB", out, re.MULTILINE)
    assert row, out
    # customers re-run-s deployed CLI-reads-s ratio one-change-s deployed
    rerun = re.search(r"^\s+2\s+[\d.]+\s+0\s+[\d.]+\s+[\d.]+%\s+[\d.]+\s+1$", out, re.MULTILINE)
    assert rerun, out
    assert not list(ROOT.glob(".data/bench-scale-*")), "the benchmark leaves its data behind"
