"""The kubernetes and random plugins are ours, at the versions the pinned Python SDKs request."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2_grpc

from tests.conftest import make_project

pytestmark = pytest.mark.engine


def _sdk_plugin_version(dist: str) -> str:
    return json.loads(
        metadata.distribution(dist).locate_file(f"{dist.replace('-', '_')}/pulumi-plugin.json").read_text()
    )["version"]


def test_plugin_ls_shows_the_pinned_versions(engine):
    proc = subprocess.run(
        [str(engine.pulumi_bin), "plugin", "ls", "--json"],
        env={**engine.env(backend_url="file:///nonexistent")},
        capture_output=True,
        text=True,
        check=True,
    )
    plugins = {(p["name"], p["kind"]): p["version"] for p in json.loads(proc.stdout)}
    assert plugins[("kubernetes", "resource")] == _sdk_plugin_version("pulumi-kubernetes")
    assert plugins[("random", "resource")] == _sdk_plugin_version("pulumi-random")


@pytest.mark.parametrize("name,dist", [("kubernetes", "pulumi-kubernetes"), ("random", "pulumi-random")])
def test_provider_starts_and_reports_its_version(engine, name, dist):
    version = _sdk_plugin_version(dist)
    binary = engine.pulumi_home / "plugins" / f"resource-{name}-v{version}" / f"pulumi-resource-{name}"
    # A plugin prints the port of its gRPC server on its first line, then serves until killed.
    proc = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            info = provider_pb2_grpc.ResourceProviderStub(channel).GetPluginInfo(empty_pb2.Empty())
        assert info.version == version
    finally:
        proc.kill()
        proc.wait()


def test_kubernetes_provider_renders_manifests(tmp_path, engine):
    project = make_project("k8s_render_stack", tmp_path / "render", engine)
    out = tmp_path / "manifests"
    project.run("stack", "init", "dev")
    project.run("config", "set", "outDir", str(out))
    project.run("up", "--yes", "--skip-preview")
    rendered = "\n".join(p.read_text() for p in out.rglob("*.yaml"))
    assert "kind: Namespace" in rendered and "name: customer-render" in rendered
    assert "kind: ConfigMap" in rendered and "plan: starter" in rendered
    project.run("destroy", "--yes", "--skip-preview")
