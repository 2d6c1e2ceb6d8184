"""IOTISTIC_PULUMI_HOME: a worker's engine home of its own, with the built plugins linked in."""

from __future__ import annotations

import os
from pathlib import Path

from automation.engine import engine_home


def test_without_the_variable_the_shared_home_is_used(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("IOTISTIC_PULUMI_HOME", raising=False)
    assert engine_home(tmp_path / "shared") == tmp_path / "shared"


def test_an_own_home_gets_the_shared_plugins_linked_not_copied(tmp_path: Path, monkeypatch):
    shared = tmp_path / "shared"
    plugin = shared / "plugins" / "resource-random-v4.21.1"
    plugin.mkdir(parents=True)
    (plugin / "pulumi-resource-random").write_bytes(b"\x7fELF binary")
    (shared / "plugins" / "resource-random-v4.21.1.lock").touch()  # not a plugin folder
    monkeypatch.setenv("IOTISTIC_PULUMI_HOME", str(tmp_path / "worker-1"))

    home = engine_home(shared)

    assert home == tmp_path / "worker-1"
    linked = home / "plugins" / "resource-random-v4.21.1" / "pulumi-resource-random"
    assert linked.parent.is_dir() and not linked.parent.is_symlink()  # the engine skips symlinked folders
    assert os.path.samefile(linked, plugin / "pulumi-resource-random")
    assert sorted(p.name for p in (home / "plugins").iterdir()) == ["resource-random-v4.21.1"]
