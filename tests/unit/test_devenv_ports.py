"""devenv's ports: movable by environment, never handed out to throw-away test services."""

from __future__ import annotations

import pytest

from devenv.cluster import LocalCluster
from devenv.ports import DEFAULT_PORTS, PortConfigError, default_port, free_port, reserved_ports
from devenv.postgres import LocalPostgres


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
