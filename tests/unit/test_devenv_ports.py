"""devenv's ports: movable by environment, never handed out to throw-away test services."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devenv.cluster import LocalCluster
from devenv.ports import (
    DEFAULT_PORTS,
    TIME_WAIT_SECONDS,
    PortConfigError,
    PortInUse,
    default_port,
    ensure_free,
    free_port,
    port_states,
    reserved_ports,
    resolve_ports,
)
from devenv.postgres import LocalPostgres

ROOT = Path(__file__).resolve().parents[2]


def test_an_offset_moves_every_service_and_one_variable_moves_one(monkeypatch, tmp_path):
    monkeypatch.setenv("IOTISTIC_PORT_OFFSET", "100")
    monkeypatch.setenv("IOTISTIC_PORT_KUBE_APISERVER", "57000")
    cluster = LocalCluster(tmp_path / "c")
    assert cluster.apiserver_port == 57000
    assert cluster.etcd_port == DEFAULT_PORTS["etcd"] + 100
    assert LocalPostgres(tmp_path / "pg").port == DEFAULT_PORTS["postgres"] + 100


@pytest.mark.parametrize("value", ["abc", "-1", "70000", "５５"])
def test_a_bad_port_variable_is_named(monkeypatch, value):
    monkeypatch.setenv("IOTISTIC_PORT_POSTGRES", value)
    with pytest.raises(PortConfigError, match="IOTISTIC_PORT_POSTGRES"):
        default_port("postgres")


def test_free_ports_never_fall_on_devenv_ports(monkeypatch):
    monkeypatch.setenv("IOTISTIC_PORT_OFFSET", "7")
    reserved = reserved_ports()
    assert set(DEFAULT_PORTS.values()) <= reserved
    assert {p + 7 for p in DEFAULT_PORTS.values()} <= reserved
    assert not {free_port() for _ in range(200)} & reserved


# --- flags, and the port check a new user meets ---------------------------------------------------
def devenv_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devenv", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flags_win_over_the_environment_which_wins_over_the_defaults(tmp_path):
    env = {"IOTISTIC_PORT_OFFSET": "100", "IOTISTIC_DATA": str(tmp_path / "from-env")}
    out = devenv_cli("postgres", "status", env=env)
    assert out.returncode == 0, out.stderr
    assert f"data in {tmp_path / 'from-env' / 'postgres'}" in out.stdout
    out = devenv_cli(
        "--data-dir",
        str(tmp_path / "from-flag"),
        "--port-offset",
        "300",
        "--port",
        "mosquitto=57777",
        "all",
        "status",
        env=env,
    )
    assert f"data in {tmp_path / 'from-flag' / 'postgres'}" in out.stdout
    assert ports_in(devenv_cli("--port-offset", "300", "cluster", "status", env=env).stdout) >= {
        DEFAULT_PORTS["kube-apiserver"] + 300,
        DEFAULT_PORTS["etcd-peer"] + 300,
    }
    assert resolve_ports({"IOTISTIC_PORT_OFFSET": "100"}, offset=300, overrides={"mosquitto": 57777}) == {
        **{name: port + 300 for name, port in DEFAULT_PORTS.items()},
        "mosquitto": 57777,
    }


def ports_in(text: str) -> set[int]:
    return {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)} | {
        int(p) for p in re.findall(r"peer (\d+)", text)
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "postgres=abc", "postgres", "status"], "not a port number"),
        (["--port", "nosuch=1234", "postgres", "status"], "expected NAME=PORT"),
        (["--port-offset", "１０", "postgres", "status"], "not a whole number"),
        (["--port-offset", "70000", "postgres", "status"], "out of range"),
    ],
)
def test_bad_flags_are_named_without_a_traceback(args, message):
    out = devenv_cli(*args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def time_wait_port() -> int:
    """Leave a client-side TIME_WAIT on a kernel-chosen port, as any outgoing connection does.

    The client closes first, so its ephemeral port (say 52380, etcd's peer port) stays in
    TIME_WAIT for 60 s; such a TIME_WAIT blocks every bind of that port, SO_REUSEADDR or not.
    """
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    port = client.getsockname()[1]
    accepted, _ = server.accept()
    client.close()  # active close: the client side goes to TIME_WAIT
    accepted.recv(1)
    accepted.close()
    server.close()
    deadline = time.monotonic() + 5
    while port_states(port) != ["TIME_WAIT"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return port


def test_a_port_held_only_by_time_wait_is_waited_for_not_refused():
    port = time_wait_port()
    assert port_states(port) == ["TIME_WAIT"]
    said: list[str] = []
    began = time.monotonic()
    ensure_free(port, "etcd (peer)", progress=said.append)  # must not raise PortInUse
    waited = time.monotonic() - began
    assert "TIME_WAIT" in said[0] and "waiting up to" in said[0] and "released" in said[-1]
    assert waited <= TIME_WAIT_SECONDS + 5
    with socket.create_server(("127.0.0.1", port)):  # and a server can listen there now
        pass


def test_a_listening_port_is_refused_at_once_naming_the_service():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(PortInUse, match=f"port {port} .*a server listens on it.*so etcd cannot start"):
            ensure_free(port, "etcd", progress=pytest.fail)
        assert time.monotonic() - began < 2
