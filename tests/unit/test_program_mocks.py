"""Unit tests of the root program's shape under Pulumi mocks (no engine, milliseconds)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from tests.pulumi_mocks import install_mocks, run_program

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mocks():
    return install_mocks(stack="acme")


def test_root_program_generates_a_database_password(mocks):
    run_program(lambda: runpy.run_path(str(ROOT / "__main__.py")))
    (password,) = mocks.of_type("random:index/randomPassword:RandomPassword")
    assert password.name == "postgres-password"
    assert password.inputs["length"] == 32
    assert password.inputs["special"] is False
