"""Postgres 15 and Mosquitto 2 from Debian packages, started by the project on loopback ports."""

from __future__ import annotations

import socket
import subprocess
import threading

import paho.mqtt.client as mqtt
import psycopg
import pytest

from devenv.mosquitto import ADMIN_USER, LocalMosquitto
from devenv.ports import PortInUse
from devenv.postgres import LocalPostgres


def test_postgres_is_real_and_on_loopback(postgres):
    with psycopg.connect(postgres.url()) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]
    assert version.startswith("15.")
    assert listen == "127.0.0.1"
    assert postgres.port != 5432


def test_postgres_rejects_a_wrong_password(postgres):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://postgres:wrong@127.0.0.1:{postgres.port}/postgres")


def test_postgres_second_start_is_a_noop(postgres):
    postgres.start()
    with psycopg.connect(postgres.url()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_created_database_survives_a_restart(postgres):
    url = postgres.create_database("survivor")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (v int)")
        conn.execute("INSERT INTO t VALUES (42)")
    postgres.stop()
    assert not postgres.running()
    postgres.start()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [(42,)]


def _dynsec(broker: LocalMosquitto, *args: str) -> None:
    subprocess.run(
        [
            "mosquitto_ctrl",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-u",
            ADMIN_USER,
            "-P",
            broker.admin_password,
            "dynsec",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def test_mosquitto_authenticated_pubsub_and_no_anonymous(mosquitto):
    _dynsec(mosquitto, "createClient", "sensor1", "-p", "s3cret")
    _dynsec(mosquitto, "createRole", "telemetry")
    _dynsec(mosquitto, "addRoleACL", "telemetry", "publishClientSend", "sensor/#", "allow")
    _dynsec(mosquitto, "addRoleACL", "telemetry", "subscribePattern", "sensor/#", "allow")
    _dynsec(mosquitto, "addRoleACL", "telemetry", "publishClientReceive", "sensor/#", "allow")
    _dynsec(mosquitto, "addClientRole", "sensor1", "telemetry")

    received: list[bytes] = []
    got = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub")
    sub.username_pw_set("sensor1", "s3cret")
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: (received.append(m.payload), got.set())
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    sub.subscribe("sensor/#", qos=1)
    assert subscribed.wait(5)

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub")
    pub.username_pw_set("sensor1", "s3cret")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish("sensor/telemetry", b'{"temperature": 22.5}', qos=1).wait_for_publish(5)
    assert got.wait(5)
    assert received == [b'{"temperature": 22.5}']
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()

    refused = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    reasons = []
    refused.on_connect = lambda c, u, f, rc, p: reasons.append(rc)
    refused.connect("127.0.0.1", mosquitto.port)
    refused.loop_start()
    deadline = threading.Event()
    deadline.wait(1)
    refused.loop_stop()
    assert reasons and reasons[0].is_failure  # anonymous access is off


def test_busy_port_is_named(tmp_path, service_data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        pg = LocalPostgres(service_data_dir / "busy-pg", port=port)
        with pytest.raises(PortInUse, match=f"port {port} .*postgres"):
            pg.start()
        broker = LocalMosquitto(service_data_dir / "busy-mq", port=port, ws_port=port + 1)
        with pytest.raises(PortInUse, match=f"port {port} .*mosquitto"):
            broker.start()
