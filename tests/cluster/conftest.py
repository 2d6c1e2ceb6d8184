"""Fixtures for the local Kubernetes control plane: a throw-away cluster and the k8s_stack project."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from devenv.cluster import LocalCluster
from tests.conftest import PulumiProject, make_project

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def scratch_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this test alone (not started): tests may stop and restart it at will."""
    local = LocalCluster.on_free_ports(tmp_path / "cluster")
    yield local
    local.stop()


def k8s_project(dest: Path, engine, cluster: LocalCluster, namespace: str, **config: str) -> PulumiProject:
    """tests/fixtures/k8s_stack as stack `dev`, pointed at `cluster` through its kubeconfig's content."""
    project = make_project("k8s_stack", dest, engine)
    project.run("stack", "init", "dev")
    project.run("config", "set", "--secret", "kubeconfig", cluster.kubeconfig.read_text())
    project.run("config", "set", "namespace", namespace)
    for key, value in config.items():
        project.run("config", "set", key, value)
    return project
