"""What tenant_app/mqtt_batching.py relies on in paho, and what it promises the consumer.

The paho internals it uses (`_create_socket`, `_handle_publish` with `_in_packet`, the PUBACK bytes)
are checked against the pinned paho version here, so an upgrade that changes them fails loudly.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tenant_app.config import TELEMETRY_TOPIC, Settings
from tenant_app.consumer import end_session
from tenant_app.mqtt_batching import BatchingClient, BufferedSocket, puback_packets
from tests.tenant_app.helpers import wait_for


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_body(topic: str, payload: bytes, mid: int | None, properties: bytes = b"") -> bytes:
    """A PUBLISH's variable header and payload as MQTT 5 frames them (everything after the length)."""
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name
    if mid is not None:
        body += struct.pack("!H", mid)
    return body + _varint(len(properties)) + properties + payload


def test_pubacks_are_the_bytes_paho_sends_for_each():
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    mids = [1, 255, 256, 40000, 65535]
    for mid in mids:
        client._send_puback(mid)
    assert puback_packets(mids) == b"".join(p["packet"] for p in client._out_packet)


@pytest.mark.parametrize(
    "qos,properties,payload",
    [
        (1, b"", b'{"ts": 1, "temperature": 20}'),
        (0, b"", b"{}"),
        (1, b"\x02\x00\x00\x0e\x10", b"x"),  # message expiry interval
        (1, b"\x26\x00\x01k\x00\x01v" * 30, b"y" * 300),  # user properties: a 2-byte property length
        (1, b"", b""),  # empty payload
        (1, b"", b"z" * 20000),  # a 3-byte remaining length
    ],
)
def test_the_lean_publish_decoder_reads_what_paho_reads(qos, properties, payload):
    client = BatchingClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    received: list[tuple] = []
    client.sink = lambda *args: received.append(args)
    header = 0x30 | qos << 1
    body = publish_body("sensor/dev-1/telemetry", payload, 4242 if qos else None, properties)
    client._in_packet = {"command": header, "packet": bytearray(body)}
    assert client._handle_publish() == mqtt.MQTT_ERR_SUCCESS
    paho = _packet.decode_publish(header, bytearray(body), mqtt.MQTTv5)
    assert received == [(paho.mid, paho.qos, paho.topic.decode(), paho.payload, 0)]


def test_anything_but_a_plain_qos_0_or_1_publish_goes_to_paho():
    client = BatchingClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.sink = lambda *args: pytest.fail("the lean decoder took a QoS 2 message")
    seen: list[mqtt.MQTTMessage] = []
    client.on_message = lambda c, u, m: seen.append(m)
    client._in_packet = {"command": 0x34, "packet": bytearray(publish_body("a/b", b"q2", 7))}
    client._handle_publish()  # paho stores QoS 2 messages until PUBREL
    assert 7 in client._in_messages


class CountingSocket:
    """Wraps a socket and counts the recv() and send() calls that reach it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = self.sends = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def send(self, data) -> int:
        self.sends += 1
        return self.sock.send(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


class Subscriber:
    """A BatchingClient on the consumer's account, run by its own I/O loop, counting its syscalls."""

    def __init__(self, port: int, client_id: str, password: str) -> None:
        self.received: list[tuple[int, int, str, bytes, int]] = []
        self.subscribed = threading.Event()
        self.client = BatchingClient(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        self.client.username_pw_set("iotistic-ingest", password)
        self.client.sink = lambda *args: self.received.append(args)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("sensor/+/telemetry", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 60
        props.ReceiveMaximum = 1000
        self.client.connect_async("127.0.0.1", port, clean_start=False, properties=props)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.client.run_io, args=(self._stop,), daemon=True)
        self._thread.start()
        assert self.subscribed.wait(10), "the subscriber did not subscribe"
        sock = self.client.socket()
        assert isinstance(sock, BufferedSocket), "paho no longer creates its socket in _create_socket"
        self.counter = CountingSocket(sock._sock)
        sock._sock = self.counter

    def close(self) -> None:
        self._stop.set()
        self.client.wake()
        self._thread.join(10)


def test_a_burst_is_read_with_few_recv_calls_and_acknowledged_in_one_write(mosquitto, broker_admin):
    client_id, password = f"batching-{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    broker_admin.ensure_consumer("iotistic-ingest", password, client_id)
    device = f"dev-{uuid.uuid4().hex[:10]}"
    broker_admin.create_device(device, "device-pw")
    sub = Subscriber(mosquitto.port, client_id, password)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
    publisher.username_pw_set(device, "device-pw")
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    try:
        topic = TELEMETRY_TOPIC.format(device_id=device)
        infos = [publisher.publish(topic, json.dumps({"n": i}), qos=1) for i in range(500)]
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: len(sub.received) == 500, what="500 messages through the sink")
        assert [json.loads(r[3])["n"] for r in sub.received] == list(range(500))
        assert {r[2] for r in sub.received} == {topic} and {r[1] for r in sub.received} == {1}
        assert sub.counter.recvs < 250, f"{sub.counter.recvs} recv() calls for 500 messages"

        # Acknowledge the first 300 in one write; the other 200 stay unacknowledged.
        sends = sub.counter.sends
        connection = sub.received[0][4]
        sub.client.ack_many(connection, [r[0] for r in sub.received[:300]])
        wait_for(lambda: sub.counter.sends > sends, what="the PUBACKs to be written")
        time.sleep(0.3)
        assert sub.counter.sends == sends + 1
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        sub.close()
    # The broker took those PUBACKs: after a reconnect it redelivers exactly the other 200.
    again = Subscriber(mosquitto.port, client_id, password)
    try:
        wait_for(lambda: len(again.received) >= 200, what="the 200 unacknowledged messages again")
        time.sleep(0.3)
        assert sorted(json.loads(r[3])["n"] for r in again.received) == list(range(300, 500))
        # Acknowledgements naming another connection are dropped, never sent on this one.
        stale = again.received[0][4] - 1
        sends = again.counter.sends
        again.client.ack_many(stale, [r[0] for r in again.received])
        time.sleep(0.3)
        assert again.counter.sends == sends
    finally:
        again.close()
        broker_admin.delete_device(device)
        end_session(
            Settings(
                customer_id="acme",
                mqtt_port=mosquitto.port,
                mqtt_password=password,
                consumer_client_id=client_id,
            )
        )


# --- the run of PUBLISHes decoded straight from the read buffer (BatchingClient._take_publishes) ------
class Segmented:
    """A socket that hands out `data` in pieces of random sizes (how TCP may deliver it)."""

    def __init__(self, data: bytes, rng: random.Random, largest: int = 3000) -> None:
        self.data, self.pos, self.rng, self.largest = data, 0, rng, largest

    def recv(self, n: int) -> bytes:
        if self.pos >= len(self.data):
            raise BlockingIOError
        size = min(n, self.rng.randint(1, self.largest))
        chunk = self.data[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass

    @property
    def drained(self) -> bool:
        return self.pos >= len(self.data)


def publish_packet(topic: str, payload: bytes, mid: int, qos: int = 1, properties: bytes = b"") -> bytes:
    body = publish_body(topic, payload, mid if qos else None, properties)
    return bytes([0x30 | qos << 1]) + _varint(len(body)) + body


def read_all(client: BatchingClient, wire: Segmented) -> None:
    sock = BufferedSocket(wire)  # type: ignore[arg-type]
    client._sock = sock
    for _ in range(100_000):
        client._read_available(sock)
        if wire.drained and not sock.pending():
            return
    pytest.fail("the reader made no progress")


def lean_client() -> tuple[BatchingClient, list[tuple]]:
    client = BatchingClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    received: list[tuple] = []
    client.sink = lambda mid, qos, topic, payload, conn: received.append((mid, qos, topic, payload))
    return client, received


@pytest.mark.parametrize("seed", range(8))
def test_any_content_in_any_segmentation_is_framed_exactly(seed):
    """Payloads are whatever devices send (here: random bytes, some shaped like MQTT packets, up
    to 70 KB across buffer refills), topics any UTF-8, properties any size; the wire is cut at
    random places. Every message comes out whole, in order, once."""
    rng = random.Random(seed)
    sent: list[tuple] = []
    wire = bytearray()
    for _ in range(400):
        kind = rng.random()
        if kind < 0.1:
            payload = bytes([0x32, 0x05, 0, 1, 0x61, 0, 1]) * rng.randint(1, 50)  # looks like PUBLISHes
        elif kind < 0.15:
            payload = rng.randbytes(rng.randint(16_000, 70_000))
        else:
            payload = rng.randbytes(rng.randint(0, 400))
        name = "".join(rng.choice("aé€😀/_-z9") for _ in range(rng.randint(1, 40)))
        topic = f"sensor/{name}/telemetry"
        qos = rng.choice((0, 1, 1, 1))
        mid = rng.randint(1, 65535) if qos else 0
        props = b"\x26\x00\x01k\x00\x01v" * rng.choice((0, 0, 1, 40))  # user properties
        wire += publish_packet(topic, payload, mid, qos, props)
        sent.append((mid, qos, topic, payload))
    client, received = lean_client()
    read_all(client, Segmented(bytes(wire), rng))
    assert received == sent


def test_other_packets_between_publishes_go_to_paho():
    client, received = lean_client()
    client._ping_t = 123.0  # a PINGREQ is out: paho's PINGRESP handler clears it
    client._last_bytes_received = 0.0
    p = [publish_packet("sensor/d1/telemetry", f'{{"n": {i}}}'.encode(), i + 1) for i in range(6)]
    pingresp = b"\xd0\x00"
    wire = p[0] + p[1] + p[2] + pingresp + p[3] + p[4] + p[5]
    read_all(client, Segmented(wire, random.Random(1), largest=len(wire)))
    assert [r[0] for r in received] == [1, 2, 3, 4, 5, 6]
    assert client._ping_t == 0  # paho read the PINGRESP in the middle
    assert client._last_bytes_received > 0  # the keepalive saw the traffic


@pytest.mark.parametrize(
    "bad",
    [
        b"\x32\xff\xff\xff\xff\x7f",  # a remaining length of 5 bytes
        b"\x36\x05\x00\x01a\x00\x01",  # QoS 3
        b"\x32\x04\x00\x09ab",  # topic length beyond the packet
        b"\x32\x05\x00\x01a\x00\x01",  # MQTT 5 properties length missing
        b"\x32\x06\x00\x01a\x00\x01\x09",  # properties longer than the packet
        b"\x32\x00",  # empty PUBLISH
    ],
)
def test_a_malformed_packet_is_paho_s_to_refuse_and_nothing_is_misread(bad):
    client, received = lean_client()
    good = publish_packet("sensor/d1/telemetry", b'{"n": 1}', 1)
    lost: list[int] = []
    client.on_disconnect = lambda *a: lost.append(1)
    sock = BufferedSocket(Segmented(good + bad + good, random.Random(0), largest=1 << 20))  # type: ignore[arg-type]
    client._sock = sock
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    for _ in range(10):
        client._read_available(sock)
        if client.socket() is not sock:
            break
    # The good message before it is read; paho refuses the bad one and drops the connection (the
    # broker would resend what was not acknowledged); nothing after it is read as a message.
    assert received == [(1, 1, "sensor/d1/telemetry", b'{"n": 1}')]
    assert client.socket() is not sock
