"""Devices cannot reach each other's data on the broker, and reach it from outside over websockets."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tenant_app.config import TELEMETRY_SUBSCRIPTION
from tenant_app.simulator import publish_readings
from tests.tenant_app.helpers import wait_for
from tests.tenant_app.test_ingestion import Device, count_rows, register


class Attacker:
    """A device's credentials on an MQTT 5 connection under a client id of the attacker's choosing."""

    def __init__(self, port: int, creds: dict, client_id: str) -> None:
        self.connack: list[mqtt.ReasonCode] = []
        self.suback: list[list[mqtt.ReasonCode]] = []
        self.received: list[bytes] = []
        self.answered = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(creds["username"], creds["password"])
        self.client.on_connect = lambda c, u, f, rc, p: (self.connack.append(rc), self.answered.set())
        self.client.on_subscribe = lambda c, u, mid, rcs, p: (self.suback.append(rcs), self.subscribed.set())
        self.client.on_message = lambda c, u, m: self.received.append(m.payload)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # ask to resume (and keep) the session it takes over
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.answered.wait(5), "the broker did not answer the CONNECT"

    @property
    def refused(self) -> bool:
        return self.connack[0].is_failure

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_device_cannot_take_over_the_consumers_or_another_devices_session(
    api, start_consumer, settings, mosquitto
):
    consumer = start_consumer()
    connection_before = consumer.connection_number
    mallory, victim = register(api), register(api)

    # 1. The consumer's persistent session: its client id, clean_start=False, a device's password.
    takeover = Attacker(mosquitto.port, mallory, settings.consumer_client_id)
    try:
        assert takeover.refused, "a device took over the consumer's session"
    finally:
        takeover.close()
    # 2. Another device's session, the same way.
    hijack = Attacker(mosquitto.port, mallory, victim["client_id"])
    try:
        assert hijack.refused, "a device took over another device's session"
    finally:
        hijack.close()
    # 3. Under its own id it may connect, but not subscribe to anyone's telemetry.
    snoop = Attacker(mosquitto.port, mallory, mallory["client_id"])
    try:
        assert not snoop.refused
        snoop.client.subscribe(TELEMETRY_SUBSCRIPTION, qos=1)
        assert snoop.subscribed.wait(5)
        assert all(rc.is_failure for rc in snoop.suback[0])

        dev = Device(victim)  # the victim is still connected and publishing normally
        try:
            assert not dev.publish(victim["topic"], {"ts": time.time(), "temperature": 23.5}).is_failure
        finally:
            dev.close()
        wait_for(
            lambda: count_rows(settings.database_url, victim["username"]) == 1, what="the victim's reading"
        )
        time.sleep(0.3)  # give a (wrongly) forwarded copy the time to arrive
        assert snoop.received == []
    finally:
        snoop.close()
    # The consumer was never kicked off its session: same connection, still connected.
    assert consumer.connected.is_set() and consumer.connection_number == connection_before


def test_a_device_publishes_over_websockets_with_its_credentials(api, start_consumer, settings, mosquitto):
    start_consumer()
    creds = register(api)
    url = creds["websocket_url"]
    assert url == f"ws://127.0.0.1:{mosquitto.ws_port}/mqtt"
    assert publish_readings(url, creds["username"], creds["password"], count=3, interval=0.05) == 3
    wait_for(
        lambda: count_rows(settings.database_url, creds["username"]) == 3, what="3 readings over websockets"
    )
    stored = api.call("GET", f"/api/devices/{creds['username']}/readings").body["readings"]
    assert len(stored) == 3 and all(15 <= r["temperature"] <= 32 for r in stored)


def test_the_broker_refuses_oversized_messages(api, start_consumer, settings, mosquitto):
    """Over 16 KiB, Mosquitto (2.0) closes the sender's connection: nothing reaches the consumer."""
    consumer = start_consumer()
    creds = register(api)
    dropped = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=creds["client_id"], protocol=mqtt.MQTTv5)
    client.username_pw_set(creds["username"], creds["password"])
    client.on_disconnect = lambda *a: dropped.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        huge = b'{"ts": %d, "temperature": 20, "pad": "%s"}' % (int(time.time()), b"x" * 20000)
        info = client.publish(creds["topic"], huge, qos=1)
        assert dropped.wait(5), "the broker kept the connection of a client sending 20 KB"
        assert not info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
    dev = Device(creds)  # a well-behaved reconnect works as before
    try:
        assert not dev.publish(creds["topic"], {"ts": time.time(), "temperature": 21}).is_failure
    finally:
        dev.close()
    wait_for(lambda: count_rows(settings.database_url, creds["username"]) == 1, what="the small reading")
    assert consumer.stats.dead_letters == 0 and consumer.stats.received == 1
