"""The images install what the tests ran, and each service starts as `python -m ...`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "tenant_app" / "docker"


def test_image_requirements_use_the_project_pins():
    pins = {}
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, version = dep.split("==")
        pins[name.lower()] = version
    for line in (DOCKER / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert pins.get(name.lower()) == version, f"{name} differs from pyproject.toml"


@pytest.mark.parametrize(
    ("dockerfile", "module"),
    [
        ("Dockerfile.api", "tenant_app.api"),
        ("Dockerfile.admin", "tenant_app.dashboard"),
        ("Dockerfile.billing-exporter", "tenant_app.exporter"),
    ],
)
def test_each_image_runs_its_service_module(dockerfile, module):
    text = (DOCKER / dockerfile).read_text()
    assert re.search(rf'CMD \["python", "-m", "{re.escape(module)}"\]', text)
    assert "USER 10001" in text and "COPY licensing" in text
    # Without its environment the service says what is missing instead of crashing with a trace.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "missing environment variable(s): CUSTOMER_ID" in run.stderr


def test_the_billing_image_uses_the_project_pins_and_builds_the_engine_from_go_modules():
    pins = {}
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, version = dep.split("==")
        pins[name.lower()] = version
    for line in (ROOT / "billing" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert pins.get(name.lower()) == version, f"{name} differs from pyproject.toml"
    dockerfile = (ROOT / "billing" / "Dockerfile").read_text()
    assert "RUN toolchain/build-engine.sh" in dockerfile  # the engine the same way as on a dev machine
    assert 'CMD ["python", "-m", "billing", "serve"]' in dockerfile and "USER 10001" in dockerfile
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    for command in ("serve", "worker", "migrate"):
        run = subprocess.run(
            [sys.executable, "-m", "billing", command], env=env, capture_output=True, text=True, timeout=30
        )
        assert run.returncode == 2 and "missing environment variable: DATABASE_URL" in run.stderr
