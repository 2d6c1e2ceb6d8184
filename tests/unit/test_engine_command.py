"""The Automation API's handle on our CLI: `pulumi version` runs once per engine build, not per process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from automation import engine


def fake_cli(root: Path, version: str) -> Path:
    """A `bin/pulumi` that answers `version` and counts its runs."""
    binary = root / "bin" / "pulumi"
    binary.parent.mkdir(parents=True)
    binary.write_text(f'#!/bin/sh\necho run >> "{root}/runs"\necho v{version}\n')
    binary.chmod(0o755)
    return binary


def runs(root: Path) -> int:
    return len((root / "runs").read_text().splitlines()) if (root / "runs").exists() else 0


def test_the_version_is_read_once_per_build_of_the_cli(tmp_path: Path):
    binary = fake_cli(tmp_path, "3.259.0")
    for _ in range(3):  # three processes' worth of handles
        engine._command.cache_clear()
        assert str(engine._command(str(tmp_path)).version) == "3.259.0"
    assert runs(tmp_path) == 1

    # A rebuilt CLI (another size or modification time) is asked again.
    binary.write_text(binary.read_text().replace("3.259.0", "3.260.0"))
    os.utime(binary, ns=(1, 1))
    engine._command.cache_clear()
    assert str(engine._command(str(tmp_path)).version) == "3.260.0"
    assert runs(tmp_path) == 2
    engine._command.cache_clear()


def test_a_cli_older_than_the_sdk_supports_is_refused_even_when_cached(tmp_path: Path):
    fake_cli(tmp_path, "2.25.2")
    engine._command.cache_clear()
    with pytest.raises(Exception, match="2.25.2"):
        engine._command(str(tmp_path))
    stat = (tmp_path / "bin" / "pulumi").stat()
    (tmp_path / "bin" / ".pulumi.version").write_text(f"{stat.st_size}:{stat.st_mtime_ns} 2.25.2\n")
    engine._command.cache_clear()
    with pytest.raises(Exception, match="2.25.2"):
        engine._command(str(tmp_path))
    engine._command.cache_clear()
