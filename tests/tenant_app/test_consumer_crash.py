"""A consumer killed with SIGKILL mid-stream and restarted loses no reading and stores none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from tests.tenant_app.helpers import wait_for
from tests.tenant_app.test_ingestion import register

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 900  # below the broker's default 1000 queued messages per offline client


def consumer_env(settings) -> dict[str, str]:
    return {
        **os.environ,
        "CUSTOMER_ID": settings.customer_id,
        "DATABASE_URL": settings.database_url,
        "IOTISTIC_LICENSE_KEY_FILE": str(settings.license_key_file),
        "LICENSE_PUBLIC_KEY_FILE": str(settings.license_public_key_file),
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(settings.mqtt_port),
        "MQTT_USERNAME": settings.mqtt_username,
        "MQTT_PASSWORD": settings.mqtt_password,
        "CONSUMER_CLIENT_ID": settings.consumer_client_id,
        # Large, slow-to-fill batches make a kill in the middle of one likely.
        "CONSUMER_BATCH_SIZE": "200",
        "CONSUMER_BATCH_MS": "100",
        "PYTHONPATH": str(ROOT),
    }


def start_consumer_process(settings, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tenant_app.consumer"],
        env=consumer_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        cwd=ROOT,
    )


def stored(db: str, device: str) -> tuple[int, int, int]:
    with psycopg.connect(db) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT timestamp) FROM sensor_readings WHERE device_id = %s", (device,)
        ).fetchone()
        ingested = conn.execute(
            "SELECT value FROM usage_counters WHERE name = 'readings_ingested'"
        ).fetchone()[0]
    return rows, distinct, ingested


def test_kill_9_mid_batch_and_restart_loses_nothing_and_duplicates_nothing(api, settings, tmp_path):
    creds = register(api)
    device = creds["username"]
    log = tmp_path / "consumer.log"
    proc = start_consumer_process(settings, log)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
    publisher.username_pw_set(device, creds["password"])
    publisher.connect("127.0.0.1", settings.mqtt_port)
    publisher.loop_start()
    try:
        wait_for(lambda: b"connected to broker" in log.read_bytes(), what="the consumer to connect")
        base = time.time() - 3600
        infos = []
        killed_at = None
        for i in range(TOTAL):
            payload = {"ts": base + i, "temperature": 20 + (i % 50) / 10, "humidity": 40.0}
            infos.append(publisher.publish(creds["topic"], json.dumps(payload), qos=1))
            if i % 50 == 49:
                time.sleep(0.02)
            if killed_at is None and i >= TOTAL // 3 and stored(settings.database_url, device)[0] > 0:
                proc.send_signal(signal.SIGKILL)  # no chance to finish the batch or say goodbye
                proc.wait(5)
                killed_at = stored(settings.database_url, device)[0]
        for info in infos:
            info.wait_for_publish(10)
        assert killed_at is not None and 0 < killed_at < TOTAL, "the kill should land mid-stream"

        proc = start_consumer_process(settings, log)
        wait_for(lambda: stored(settings.database_url, device)[0] >= TOTAL, timeout=30, what="all readings")
        time.sleep(0.5)  # any duplicate would land now
        rows, distinct, ingested = stored(settings.database_url, device)
        assert (rows, distinct, ingested) == (TOTAL, TOTAL, TOTAL), f"killed with {killed_at} rows stored"
        assert api.call("GET", "/api/dead-letters").body["dead_letters"] == []
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_sigterm_stops_the_consumer_cleanly(settings, tmp_path):
    log = tmp_path / "consumer.log"
    proc = start_consumer_process(settings, log)
    wait_for(lambda: b"connected to broker" in log.read_bytes(), what="the consumer to connect")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_ingestion_pauses_while_the_license_is_expired_and_resumes_on_renewal(
    api, settings, keys, start_consumer, license_file
):
    creds = register(api)
    license_file.write_text(keys.license(days=-1))
    start_consumer()
    from tests.tenant_app.test_ingestion import Device, count_rows

    dev = Device(creds)
    try:
        dev.publish(creds["topic"], {"ts": time.time(), "temperature": 20})
        time.sleep(1.5)
        assert count_rows(settings.database_url, creds["username"]) == 0  # held by the broker, unacknowledged
        license_file.write_text(keys.license(days=30))
        wait_for(
            lambda: count_rows(settings.database_url, creds["username"]) == 1, what="ingestion to resume"
        )
    finally:
        dev.close()
