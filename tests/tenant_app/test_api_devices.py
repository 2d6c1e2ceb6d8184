"""Devices: registration with broker credentials, limits, deletion, features, input errors."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from tests.tenant_app.conftest import new_device_id


def mqtt_login(port: int, username: str, password: str, client_id: str | None = None) -> mqtt.ReasonCode:
    """The broker's answer to a login attempt (client id: the username, as devices must use)."""
    result: list[mqtt.ReasonCode] = []
    answered = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or username, protocol=mqtt.MQTTv5
    )
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: (result.append(rc), answered.set())
    client.connect("127.0.0.1", port)
    client.loop_start()
    answered.wait(5)
    client.disconnect()
    client.loop_stop()
    return result[0]


def test_register_list_show_and_delete_a_device(api, mosquitto):
    device = new_device_id()
    r = api.call("POST", "/api/devices", {"id": device, "name": "Greenhouse"})
    assert r.status == 201
    creds = r.body["mqtt"]
    assert creds["username"] == device and creds["topic"] == f"sensor/{device}/telemetry"
    assert creds["port"] == mosquitto.port and len(creds["password"]) >= 16
    assert not mqtt_login(mosquitto.port, device, creds["password"]).is_failure

    listed = api.call("GET", "/api/devices").body["devices"]
    assert [(d["id"], d["name"], d["last_seen"]) for d in listed] == [(device, "Greenhouse", None)]
    assert api.call("GET", f"/api/devices/{device}").body["device"]["id"] == device

    assert api.call("POST", "/api/devices", {"id": device}).status == 409
    assert api.call("DELETE", f"/api/devices/{device}").status == 204
    assert api.call("GET", f"/api/devices/{device}").status == 404
    assert api.call("DELETE", f"/api/devices/{device}").status == 404
    # The broker account is gone too: the deleted device can no longer log in.
    assert mqtt_login(mosquitto.port, device, creds["password"]).is_failure


def test_max_devices_is_enforced_with_a_clear_403(api):
    for _ in range(5):  # starter plan: maxDevices 5
        assert api.call("POST", "/api/devices", {"id": new_device_id()}).status == 201
    r = api.call("POST", "/api/devices", {"id": new_device_id()})
    assert r.status == 403
    assert "device limit reached: the starter plan allows 5 devices and 5 are registered" in r.body["error"]
    assert len(api.call("GET", "/api/devices").body["devices"]) == 5


def test_concurrent_registrations_cannot_exceed_the_limit(api):
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(api.call("POST", "/api/devices", {"id": new_device_id()}).status)
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] * 5 + [403] * 3


def test_bad_input_gets_4xx_with_a_json_error(api):
    cases = [
        ("POST", "/api/devices", {"id": "Not Valid!"}, 400),
        ("POST", "/api/devices", {"name": "no id"}, 400),
        ("POST", "/api/devices", [1, 2], 400),
        ("GET", "/api/devices/unknown-device", None, 404),
        ("GET", "/api/nowhere", None, 404),
        ("PUT", "/api/devices", {}, 405),
        ("GET", "/api/devices/x/readings?from=yesterday", None, 400),
        ("GET", "/api/devices/x/readings?max_points=1", None, 400),
        ("POST", "/api/alerts/rules", {"metric": "co2"}, 400),
    ]
    for method, path, body, status in cases:
        r = api.call(method, path, body)
        assert r.status == status, (method, path, r.text)
        assert isinstance(r.body, dict) and r.body["error"], (method, path, r.text)
    r = api.call("POST", "/api/devices", None)
    assert r.status == 415 and "Content-Type: application/json" in r.body["error"]


def test_features_switch_endpoints_on_and_off(keys, license_file, api):
    device = new_device_id()
    assert api.call("POST", "/api/devices", {"id": device}).status == 201
    r = api.call("GET", f"/api/devices/{device}/readings.csv")
    assert r.status == 403 and "'data_export' is not included in the starter plan" in r.body["error"]

    license_file.write_text(keys.license(plan="professional"))
    assert api.call("POST", "/api/sensor-data", {"device_id": device, "temperature": 20.5}).status == 201
    r = api.call("GET", f"/api/devices/{device}/readings.csv")
    assert (
        r.status == 200 and r.text.splitlines()[0] == "timestamp,temperature,humidity,pressure,gas_resistance"
    )
    assert r.text.splitlines()[1].endswith(",20.5,,,")

    license_file.write_text(keys.license(plan="starter", features=["mqtt_ingestion", "history"]))
    r = api.call("POST", "/api/sensor-data", {"device_id": device, "temperature": 20.5})
    assert r.status == 403 and "'http_ingestion'" in r.body["error"]
    assert api.call("GET", "/api/alerts").status == 403
