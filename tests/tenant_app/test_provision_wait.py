"""The API pod's init step waits for Postgres and Mosquitto that start after it (a fresh instance)."""

from __future__ import annotations

import psycopg
import pytest

from devenv.ports import free_port
from tenant_app.config import Settings
from tenant_app.dynsec import DynsecError
from tenant_app.provision import provision, provision_when_ready


def settings_without_servers() -> Settings:
    port = free_port()  # nothing listens there
    return Settings(
        customer_id="late",
        database_url=f"postgresql://postgres:x@127.0.0.1:{port}/db?connect_timeout=1",
        mqtt_port=free_port(),
        mqtt_admin_username="admin",
        mqtt_admin_password="x",
        mqtt_password="x",
    )


def test_an_unreachable_database_is_waited_for_then_reported(capsys):
    with pytest.raises(psycopg.OperationalError):
        provision_when_ready(settings_without_servers(), wait=0.5, sleep=lambda s: None)
    assert "waiting for the database and the broker" in capsys.readouterr().err


def test_it_goes_on_as_soon_as_the_dependencies_answer():
    calls = []

    def attempt(settings):
        calls.append(settings)
        if len(calls) < 3:
            provision(settings)  # fails: nothing listens yet

    provision_when_ready(settings_without_servers(), wait=60, attempt=attempt, sleep=lambda s: None)
    assert len(calls) == 3


def test_a_broker_that_refuses_is_not_retried():
    def refused(settings):
        raise DynsecError("broker refused createClient: Client already exists")

    with pytest.raises(DynsecError, match="refused"):
        provision_when_ready(settings_without_servers(), wait=60, attempt=refused, sleep=pytest.fail)
