"""MQTT publish -> consumer -> Postgres -> API and dashboard reads, with the real broker and database."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg

from tenant_app.dashboard import create_app as create_dashboard
from tenant_app.simulator import publish_readings
from tests.tenant_app.conftest import new_device_id
from tests.tenant_app.helpers import Server, http, wait_for


def register(api, device: str | None = None) -> dict:
    r = api.call("POST", "/api/devices", {"id": device or new_device_id()})
    assert r.status == 201, r.body
    return r.body["mqtt"]


class Device:
    """A device's own MQTT 5 connection; `publish` returns the broker's PUBACK reason."""

    def __init__(self, creds: dict) -> None:
        self.acks: dict[int, mqtt.ReasonCode] = {}
        self._acked = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=creds["client_id"], protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(creds["username"], creds["password"])
        self.client.on_publish = self._on_publish
        self.client.connect(creds["host"], creds["port"])
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        with self._acked:
            self.acks[mid] = reason
            self._acked.notify_all()

    def publish(self, topic: str, payload: dict | bytes) -> mqtt.ReasonCode:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, body, qos=1)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.acks, 5), "no PUBACK"
            return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def count_rows(db: str, device: str) -> int:
    with psycopg.connect(db) as conn:
        return conn.execute(
            "SELECT count(*) FROM sensor_readings WHERE device_id = %s", (device,)
        ).fetchone()[0]


def test_simulated_device_readings_reach_the_api_and_the_dashboard(api, start_consumer, settings, mosquitto):
    start_consumer()
    creds = register(api)
    device = creds["username"]
    url = f"mqtt://{creds['host']}:{creds['port']}"
    assert publish_readings(url, device, creds["password"], count=5, interval=0.05) == 5

    rows = wait_for(
        lambda: (
            (r := api.call("GET", f"/api/devices/{device}/readings").body["readings"]) and len(r) == 5 and r
        ),
        what="5 readings through the API",
    )
    assert all(15 <= r["temperature"] <= 32 and 980 <= r["pressure"] <= 1040 for r in rows)
    latest = api.call("GET", "/api/readings/latest").body["readings"]
    assert [x["device_id"] for x in latest] == [device] and latest[0]["timestamp"] == rows[-1]["timestamp"]

    dashboard = Server(create_dashboard(settings.with_(api_url=api.url)))
    try:
        assert dashboard.call("GET", f"/api/devices/{device}/readings").status == 401  # signed out
        via_dashboard = dashboard.call("GET", f"/api/devices/{device}/readings", token=api.token)
        assert via_dashboard.status == 200 and via_dashboard.body["readings"] == rows
        page = http("GET", dashboard.url + "/")
        assert page.status == 200 and "Upgrade to paid plan" in page.text
    finally:
        dashboard.stop()


def test_bad_messages_are_dead_lettered_and_never_stop_the_consumer(api, start_consumer, settings):
    consumer = start_consumer()
    creds = register(api)
    device, topic = creds["username"], creds["topic"]
    dev = Device(creds)
    now = time.time()
    try:
        dev.publish(topic, b"{not json")
        dev.publish(topic, {"ts": now, "temperature": 999})
        dev.publish(topic, {"temperature": 20})  # no timestamp
        dev.publish(topic, {"ts": now + 1, "temperature": 21.5, "humidity": 40})
    finally:
        dev.close()
    wait_for(lambda: count_rows(settings.database_url, device) == 1, what="the one good reading")
    dead = wait_for(
        lambda: len(d := api.call("GET", "/api/dead-letters").body["dead_letters"]) == 3 and d,
        what="3 dead letters",
    )
    reasons = sorted(d["reason"] for d in dead)
    assert reasons[0].startswith("payload is not JSON")
    assert "temperature 999 °C is outside" in reasons[1]
    assert "timestamp is required" in reasons[2]
    assert consumer.stats.dead_letters == 3
    assert api.call("GET", "/api/dead-letters").body["usage"]["dead_letters"] == 3


def test_a_device_cannot_publish_to_another_devices_topic(api, start_consumer, settings):
    start_consumer()
    a, b = register(api), register(api)
    dev = Device(a)
    try:
        refused = dev.publish(b["topic"], {"ts": time.time(), "temperature": 30})
        accepted = dev.publish(a["topic"], {"ts": time.time(), "temperature": 20})
    finally:
        dev.close()
    assert refused == "Not authorized" and not accepted.is_failure
    wait_for(lambda: count_rows(settings.database_url, a["username"]) == 1, what="device a's own reading")
    time.sleep(0.3)  # give a (wrongly) forwarded message the chance to land
    assert count_rows(settings.database_url, b["username"]) == 0


def test_http_ingestion_alerts_and_history(api):
    device = register(api)["username"]
    r = api.call(
        "POST",
        "/api/alerts/rules",
        {
            "metric": "temperature",
            "operator": ">",
            "threshold": 30,
            "name": "Too hot",
            "cooldown_seconds": 60,
        },
    )
    assert r.status == 201
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    batch = [
        {"device_id": device, "timestamp": (t0 + timedelta(seconds=10 * i)).isoformat(), "temperature": temp}
        for i, temp in enumerate([25, 31, 32, 33, 26])
    ]
    r = api.call("POST", "/api/sensor-data", batch)
    assert r.status == 201 and r.body == {"stored": 5, "duplicates": 0, "alerts": 1}
    # Node-RED retrying the same batch stores nothing twice.
    assert api.call("POST", "/api/sensor-data", batch).body == {
        "stored": 0,
        "duplicates": 5,
        "alerts": 0,
    }
    # One bad reading rejects the whole batch, naming it.
    bad = api.call("POST", "/api/sensor-data", [batch[0], {"device_id": device, "humidity": 101}])
    assert bad.status == 400 and bad.body["error"].startswith("reading 1: humidity 101")
    assert api.call("POST", "/api/sensor-data", {"device_id": "ghost", "temperature": 1}).status == 422

    alerts = api.call("GET", "/api/alerts").body["alerts"]
    assert [(a["rule_name"], a["value"], a["device_id"]) for a in alerts] == [("Too hot", 31.0, device)]
    assert api.call("GET", "/api/alerts/rules").body["rules"][0]["name"] == "Too hot"


def test_long_ranges_are_downsampled_on_the_server(api, settings):
    device = register(api)["username"]
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=2)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO sensor_readings (device_id, timestamp, temperature) "
            "SELECT %s, t, 20 + extract(hour from t) / 10.0 "
            "FROM generate_series(%s::timestamptz, %s, '60 s') t",
            (device, start, end - timedelta(seconds=1)),
        )
    url = f"/api/devices/{device}/readings?from={start.timestamp():.0f}&to={end.timestamp():.0f}"
    r = api.call("GET", url + "&max_points=100").body
    assert r["bucket_seconds"] == 1800 and len(r["readings"]) == 96
    assert all(x["count"] == 30 for x in r["readings"])
    raw = api.call(
        "GET",
        url.replace(f"from={start.timestamp():.0f}", f"from={(end - timedelta(minutes=30)).timestamp():.0f}"),
    )
    assert raw.body["bucket_seconds"] is None and len(raw.body["readings"]) == 30


def test_a_redelivered_reading_is_stored_once(api, start_consumer, settings):
    consumer = start_consumer()
    creds = register(api)
    dev = Device(creds)
    reading = {"ts": time.time() - 5, "temperature": 22.0, "humidity": 50.0}
    try:
        for _ in range(2):  # what the broker does after a consumer died between commit and PUBACK
            assert not dev.publish(creds["topic"], reading).is_failure
    finally:
        dev.close()
    wait_for(lambda: consumer.stats.stored + consumer.stats.duplicates == 2, what="both deliveries processed")
    assert count_rows(settings.database_url, creds["username"]) == 1
    assert consumer.stats.duplicates == 1
