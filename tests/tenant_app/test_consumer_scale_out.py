"""Two consumer processes on one instance share the readings; a kill -9 of one loses and doubles nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tenant_app.config import ConfigError, Settings
from tenant_app.consumer import end_session
from tests.tenant_app.helpers import wait_for
from tests.tenant_app.test_consumer_crash import ROOT, consumer_env
from tests.tenant_app.test_ingestion import register

PER_DEVICE = 400
DEVICES = 3
TOTAL = PER_DEVICE * DEVICES


def log_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def stored_totals(db: str) -> tuple[int, int, int]:
    import psycopg

    with psycopg.connect(db) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, timestamp)) FROM sensor_readings"
        ).fetchone()
        ingested = conn.execute(
            "SELECT value FROM usage_counters WHERE name = 'readings_ingested'"
        ).fetchone()[0]
    return rows, distinct, ingested


def test_two_consumer_processes_share_the_readings_and_a_kill_9_of_one_loses_nothing(
    api, settings, broker_admin, tmp_path
):
    two = settings.with_(consumer_processes=2)
    accounts = two.consumer_accounts()
    assert [client_id for _, client_id in accounts] == [
        settings.consumer_client_id,
        settings.consumer_client_id + "-1",
    ]
    for username, client_id in accounts:  # what tenant_app.provision does with CONSUMER_PROCESSES=2
        broker_admin.ensure_consumer(username, settings.mqtt_password, client_id)
    log = tmp_path / "consumer.log"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "tenant_app.consumer"],
        env=consumer_env(settings) | {"CONSUMER_PROCESSES": "2"},
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        cwd=ROOT,
    )
    publishers: list[mqtt.Client] = []
    try:
        wait_for(
            lambda: sum(e["msg"] == "connected to broker" for e in log_lines(log)) == 2,
            what="both consumer processes to connect",
        )
        first, second = children(supervisor.pid)
        creds = [register(api) for _ in range(DEVICES)]
        for c in creds:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=c["client_id"], protocol=mqtt.MQTTv5
            )
            client.username_pw_set(c["username"], c["password"])
            client.connect("127.0.0.1", settings.mqtt_port)
            client.loop_start()
            publishers.append(client)
        base = time.time() - 3600
        infos, killed_at = [], None
        for i in range(PER_DEVICE):
            for c, client in zip(creds, publishers, strict=True):
                reading = {"ts": base + i, "temperature": 20 + (i % 50) / 10, "humidity": 40.0}
                infos.append(client.publish(c["topic"], json.dumps(reading), qos=1))
            if i % 20 == 19:
                time.sleep(0.02)
            if killed_at is None and i >= PER_DEVICE // 3 and stored_totals(settings.database_url)[0] > 0:
                os.kill(second, signal.SIGKILL)  # no chance to finish its batch or say goodbye
                killed_at = stored_totals(settings.database_url)[0]
        for info in infos:
            info.wait_for_publish(10)
        assert killed_at is not None and 0 < killed_at < TOTAL, "the kill should land mid-stream"

        # The supervisor starts the killed process again under its client id; its session
        # redelivers what it had not acknowledged and what the broker routed to it meanwhile.
        wait_for(
            lambda: any(
                e["msg"] == "consumer process exited; restarting" and e["process_index"] == 1
                for e in log_lines(log)
            ),
            what="the supervisor to restart the killed process",
        )
        wait_for(lambda: stored_totals(settings.database_url)[0] >= TOTAL, timeout=30, what="all readings")
        time.sleep(0.5)  # any duplicate would land now
        assert stored_totals(settings.database_url) == (TOTAL, TOTAL, TOTAL), f"killed at {killed_at} rows"
        assert first in children(supervisor.pid), "the process that was not killed kept running"
        assert api.call("GET", "/api/dead-letters").body["dead_letters"] == []
    finally:
        for client in publishers:
            client.disconnect()
            client.loop_stop()
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(30)
        end_session(settings.with_(mqtt_username=accounts[1][0], consumer_client_id=accounts[1][1]))
    assert code == 0
    # Both processes took a share: each of the two running at the end says what it received.
    stopped = [e for e in log_lines(log) if e["msg"] == "consumer stopped"]
    assert len(stopped) == 2 and all(e["stats"]["received"] > 0 for e in stopped), stopped


def test_the_number_of_consumer_processes_is_checked_and_names_its_variable():
    base = {"CUSTOMER_ID": "acme", "DATABASE_URL": "postgresql://x@127.0.0.1/db", "MQTT_USERNAME": "ingest"}
    s = Settings.from_env(base | {"CONSUMER_PROCESSES": "3", "CONSUMER_CLIENT_ID": "c"})
    assert s.consumer_accounts() == [("ingest", "c"), ("ingest-1", "c-1"), ("ingest-2", "c-2")]
    for bad in ("0", "17", "-1"):
        with pytest.raises(ConfigError, match="CONSUMER_PROCESSES"):
            Settings.from_env(base | {"CONSUMER_PROCESSES": bad})
