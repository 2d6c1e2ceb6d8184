"""The GitHub workflows only set up a machine and call the project's commands, which exist as called.

The commands themselves are tested elsewhere: the preview command on the real engine
(tests/cluster/test_preview_command.py), the comment poster against a local GitHub-like API
(tests/services/test_github_comment.py), reconcile (tests/cluster/test_customer_stacks.py).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps(data: dict) -> list[dict]:
    return [s for job in data["jobs"].values() for s in job["steps"]]


def commands(data: dict) -> list[str]:
    return [line.strip() for s in steps(data) for line in s.get("run", "").splitlines() if line.strip()]


def test_pull_requests_preview_and_comment_once_per_pull_request():
    data = workflow("preview.yml")
    assert "pull_request" in data["on"]
    assert data["permissions"]["pull-requests"] == "write"
    assert data["concurrency"]["group"] == "preview-${{ github.event.pull_request.number }}"
    by_name = {s.get("name", s.get("uses", "")): s for s in steps(data)}
    cache = next(s for s in steps(data) if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == ".cache" and "toolchain/**" in cache["with"]["key"]
    preview = by_name["Preview the affected stacks"]["run"]
    assert (
        preview.startswith(".venv/bin/python -m automation.preview --base")
        and "--output preview.md" in preview
    )
    comment = by_name["Post or update the pull request's preview comment"]
    # Posted even when the preview failed: the reason is in the report; the job still fails.
    assert comment["if"] == "always()" and "automation.github_comment" in comment["run"]
    assert "--report preview.md" in comment["run"]


def test_merges_to_main_run_reconcile_one_at_a_time():
    data = workflow("deploy.yml")
    assert data["on"]["push"]["branches"] == ["main"]
    assert data["concurrency"] == {"group": "deploy", "cancel-in-progress": False}
    assert ".venv/bin/python -m automation.reconcile --parallel 4" in commands(data)


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml"])
def test_every_command_a_workflow_calls_exists_with_the_flags_it_passes(name):
    for line in commands(workflow(name)):
        words = shlex.split(line.replace('"$', '"X').replace("$", "X"))
        if words[0].startswith("./scripts/"):
            assert os.access(ROOT / words[0], os.X_OK), f"{words[0]} is missing or not executable"
        if (
            len(words) < 3
            or words[:2] != [".venv/bin/python", "-m"]
            or not words[2].startswith("automation.")
        ):
            continue
        helped = subprocess.run(
            [sys.executable, "-m", words[2], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert helped.returncode == 0, helped.stderr
        for flag in (w for w in words[3:] if re.match(r"--[a-z]", w)):
            assert flag in helped.stdout, f"{words[2]} has no {flag}"
