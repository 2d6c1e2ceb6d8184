"""Ingestion benchmark: MQTT -> Postgres readings per second and publish-to-row latency.

    .venv/bin/python bench/ingest.py            # about 2-3 minutes on 2 cores

One run starts its own Postgres 15 and Mosquitto 2 on free loopback ports (data under
.data/bench-<pid>, removed afterwards) and measures, with the same broker, database and load:

1. sustained throughput of the real consumer (`python -m tenant_app.consumer`, batched) with 100
   and with 1,000 simulated devices, each device its own MQTT connection publishing at QoS 1;
2. the same load against a naive consumer: one INSERT and one commit per message, ack after commit;
3. p50/p99 publish-to-row latency at a steady 1,000 readings/s from 1,000 devices.

Zero loss is checked by counting rows against messages the broker acknowledged. Everything is
bounded (message counts and timeouts) and loopback only. The broker is configured like production
should be: no cap on queued messages for the consumer's persistent session (Mosquitto's default of
1,000 drops QoS 1 messages whenever the consumer falls more than that behind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from devenv.mosquitto import ADMIN_USER, LocalMosquitto  # noqa: E402
from devenv.ports import free_port  # noqa: E402
from devenv.postgres import LocalPostgres  # noqa: E402
from licensing import sign_license  # noqa: E402
from licensing.keys import generate_private_key_pem, public_key_pem  # noqa: E402
from tenant_app.db import TABLES, ensure_schema  # noqa: E402
from tenant_app.dynsec import DynsecAdmin  # noqa: E402

CUSTOMER = "bench"
PUBLISHER_USER, PUBLISHER_PASSWORD = "bench-publisher", "bench-publisher-pw"
CONSUMER_PASSWORD = "bench-consumer-pw"
WINDOW = 50  # unacknowledged publishes per device connection


class BenchMosquitto(LocalMosquitto):
    """The devenv broker plus the queue settings a production tenant broker needs."""

    def _write_config(self) -> None:
        super()._write_config()
        with self.config_file.open("a") as f:
            f.write("max_queued_messages 0\nmax_queued_bytes 0\n")


# --- a minimal MQTT 3.1.1 QoS 1 publisher (asyncio), cheap enough to simulate 1,000 devices -------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    body = (
        _str("MQTT")
        + bytes([4, 0xC2])
        + struct.pack("!H", 60)
        + _str(client_id)
        + _str(username)
        + _str(password)
    )
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    body = _str(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + _varint(len(body)) + body


@dataclass
class PublishStats:
    acked: int = 0
    first: float = 0.0
    last: float = 0.0


async def device(
    port: int, device_id: str, payloads, stats: PublishStats, pace: float | None = None, start_at: float = 0.0
) -> None:
    """One device connection: publish every payload at QoS 1, keeping at most WINDOW unacked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect_packet(f"bench-{device_id}", PUBLISHER_USER, PUBLISHER_PASSWORD))
    connack = await reader.readexactly(4)
    if connack[3] != 0:
        raise RuntimeError(f"broker refused the bench publisher: {connack!r}")
    window = asyncio.Semaphore(WINDOW)
    topic = f"sensor/{device_id}/telemetry"
    done = asyncio.Event()
    total = len(payloads) if isinstance(payloads, list) else payloads[1]

    async def read_acks() -> None:
        got = 0
        while got < total:
            await reader.readexactly(4)
            got += 1
            stats.acked += 1
            stats.last = time.monotonic()
            window.release()
        done.set()

    acks = asyncio.create_task(read_acks())
    if start_at:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    for i in range(total):
        await window.acquire()
        # Latency mode: payloads is (make_payload, count), so each payload carries its publish time.
        payload = payloads[0](device_id) if pace is not None else payloads[i]
        writer.write(publish_packet(topic, i % 65535 + 1, payload))
        if not stats.first:
            stats.first = time.monotonic()
        if pace is not None:
            await writer.drain()
            await asyncio.sleep(pace)
        elif i % 20 == 19:
            await writer.drain()
    await writer.drain()
    await asyncio.wait_for(done.wait(), 120)
    acks.cancel()
    writer.close()


def reading(ts: float, i: int) -> bytes:
    return json.dumps(
        {
            "ts": ts,
            "temperature": 20 + i % 10 / 10,
            "humidity": 45.5,
            "pressure": 1013.2,
            "gas_resistance": 120000,
        }
    ).encode()


async def publish_burst(port: int, devices: list[str], per_device: int) -> PublishStats:
    stats = PublishStats()
    base = time.time() - 3600
    await asyncio.gather(
        *(device(port, d, [reading(base + i * 0.001, i) for i in range(per_device)], stats) for d in devices)
    )
    return stats


async def publish_paced(port: int, devices: list[str], per_device: int, interval: float) -> PublishStats:
    """Each device publishes every `interval` s, devices staggered evenly: len(devices)/interval msg/s."""
    stats = PublishStats()
    t0 = time.monotonic() + 0.5
    step = interval / len(devices)
    counter = {"i": 0}

    def make(_device: str) -> bytes:
        counter["i"] += 1
        return reading(time.time(), counter["i"])

    await asyncio.gather(
        *(
            device(port, d, (make, per_device), stats, pace=interval, start_at=t0 + n * step)
            for n, d in enumerate(devices)
        )
    )
    return stats


# --- the system under test ---------------------------------------------------------------------------
@dataclass
class Env:
    pg: LocalPostgres
    broker: BenchMosquitto
    admin: DynsecAdmin
    db: str
    env: dict[str, str]


def setup(data: Path) -> Env:
    pg = LocalPostgres(data / "postgres", port=free_port())
    broker = BenchMosquitto(data / "mosquitto", port=free_port(), ws_port=free_port())
    pg.start()
    broker.start()
    db = pg.create_database("bench")
    ensure_schema(db)
    admin = DynsecAdmin("127.0.0.1", broker.port, ADMIN_USER, broker.admin_password)
    admin.execute(
        {
            "command": "createRole",
            "rolename": "bench-publisher",
            "acls": [{"acltype": "publishClientSend", "topic": "sensor/+/telemetry", "allow": True}],
        },
        {
            "command": "createClient",
            "username": PUBLISHER_USER,
            "password": PUBLISHER_PASSWORD,
            "roles": [{"rolename": "bench-publisher"}],
        },
    )
    private = generate_private_key_pem()
    (data / "public.pem").write_bytes(public_key_pem(private))
    (data / "license.jwt").write_text(
        sign_license(
            private,
            kid="bench",
            customer_id=CUSTOMER,
            plan="enterprise",
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
    )
    env = {
        **os.environ,
        "CUSTOMER_ID": CUSTOMER,
        "DATABASE_URL": db,
        "IOTISTIC_LICENSE_KEY_FILE": str(data / "license.jwt"),
        "LICENSE_PUBLIC_KEY_FILE": str(data / "public.pem"),
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "MQTT_USERNAME": "iotistic-ingest",
        "MQTT_PASSWORD": CONSUMER_PASSWORD,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    return Env(pg, broker, admin, db, env)


def reset(env: Env, devices: list[str]) -> None:
    with psycopg.connect(env.db, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        with conn.cursor().copy("COPY devices (id) FROM STDIN") as copy:
            for d in devices:
                copy.write_row((d,))
    ensure_schema(env.db)


def count(env: Env) -> int:
    with psycopg.connect(env.db) as conn:
        return conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0]


def start_consumer(env: Env, naive: bool, client_id: str) -> subprocess.Popen:
    # The consumer's account is bound to one client id; each scenario gets a fresh session.
    env.admin.ensure_consumer("iotistic-ingest", CONSUMER_PASSWORD, client_id)
    cmd = (
        [sys.executable, str(Path(__file__)), "--naive-consumer"]
        if naive
        else [sys.executable, "-m", "tenant_app.consumer"]
    )
    proc = subprocess.Popen(
        cmd, env={**env.env, "CONSUMER_CLIENT_ID": client_id}, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    # Wait for the subscription to exist so the first messages are routed to the session.
    time.sleep(1.5)
    if proc.poll() is not None:
        raise RuntimeError(f"consumer exited early: {proc.stderr.read()}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class Throughput:
    label: str
    devices: int
    messages: int
    stored: int
    publish_rate: float
    rate: float  # rows/s, between 10 % and 90 % of the rows
    seconds: float


def run_throughput(env: Env, n_devices: int, per_device: int, naive: bool, timeout: float) -> Throughput:
    devices = [f"d{i:04d}" for i in range(n_devices)]
    reset(env, devices)
    label = "naive" if naive else "batched"
    proc = start_consumer(env, naive, f"bench-{label}-{n_devices}-{time.time_ns()}")
    total = n_devices * per_device
    marks: list[tuple[float, int]] = []
    try:
        loop = asyncio.new_event_loop()
        t0 = time.monotonic()
        pub_task = loop.run_in_executor(
            None, lambda: asyncio.run(publish_burst(env.broker.port, devices, per_device))
        )
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            n = count(env)
            marks.append((time.monotonic(), n))
            if n >= total:
                break
            time.sleep(0.1)
        stats = loop.run_until_complete(pub_task)
        loop.close()
    finally:
        stop(proc)
    stored = count(env)
    lo = next((t, n) for t, n in marks if n >= 0.1 * stored)
    hi = next((t, n) for t, n in marks if n >= 0.9 * stored)
    rate = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else float("nan")
    pub_rate = stats.acked / (stats.last - stats.first) if stats.last > stats.first else float("nan")
    return Throughput(label, n_devices, total, stored, pub_rate, rate, marks[-1][0] - t0)


def run_latency(env: Env, n_devices: int, rate: float, seconds: float) -> dict:
    devices = [f"d{i:04d}" for i in range(n_devices)]
    reset(env, devices)
    proc = start_consumer(env, False, f"bench-latency-{time.time_ns()}")
    interval = n_devices / rate
    per_device = max(1, int(seconds / interval))
    latencies: list[float] = []
    try:
        loop = asyncio.new_event_loop()
        task = loop.run_in_executor(
            None, lambda: asyncio.run(publish_paced(env.broker.port, devices, per_device, interval))
        )
        last_id = 0
        deadline = time.monotonic() + seconds + 30
        with psycopg.connect(env.db, autocommit=True) as conn:
            while time.monotonic() < deadline and len(latencies) < n_devices * per_device:
                rows = conn.execute(
                    "SELECT id, extract(epoch from timestamp) FROM sensor_readings WHERE id > %s ORDER BY id",
                    (last_id,),
                ).fetchall()
                seen = time.time()
                for row_id, ts in rows:
                    latencies.append(seen - float(ts))
                    last_id = max(last_id, row_id)
                time.sleep(0.01)
        loop.run_until_complete(task)
        loop.close()
    finally:
        stop(proc)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return {
        "messages": n_devices * per_device,
        "stored": len(latencies),
        "p50": q[49],
        "p99": q[98],
        "max": latencies[-1],
    }


# --- the naive baseline consumer (run as a subprocess by the benchmark) -------------------------------
def naive_consumer() -> None:
    """One INSERT + commit per message, PUBACK after the commit: the simplest correct consumer."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from tenant_app.ingest import parse_message
    from tenant_app.readings import InvalidReading

    env = os.environ
    conn = psycopg.connect(env["DATABASE_URL"])
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))

    def on_message(client, userdata, msg):
        try:
            r = parse_message(msg.topic, msg.payload, datetime.now(UTC))
            conn.execute(
                "INSERT INTO sensor_readings (device_id, timestamp, temperature, humidity, pressure, "
                "gas_resistance) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (r.device_id, r.timestamp, r.temperature, r.humidity, r.pressure, r.gas_resistance),
            )
            conn.commit()
        except InvalidReading:
            pass
        client.ack(msg.mid, msg.qos)

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=env["CONSUMER_CLIENT_ID"],
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    client.username_pw_set(env["MQTT_USERNAME"], env["MQTT_PASSWORD"])
    client.on_connect = lambda c, *a: c.subscribe("sensor/+/telemetry", qos=1)
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    props.ReceiveMaximum = 10000
    client.connect("127.0.0.1", int(env["MQTT_PORT"]), clean_start=False, properties=props)
    client.loop_start()
    while not stopping:
        time.sleep(0.1)
    client.disconnect()
    client.loop_stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--naive-consumer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, default=60_000, help="messages per batched scenario")
    parser.add_argument("--naive-messages", type=int, default=6_000, help="messages per naive scenario")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    args = parser.parse_args()
    if args.naive_consumer:
        naive_consumer()
        return 0

    data = Path(os.environ.get("IOTISTIC_DATA", ROOT / ".data")) / f"bench-{os.getpid()}"
    data.mkdir(parents=True, exist_ok=True)
    env = setup(data)
    print(f"bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    try:
        results: list[Throughput] = []
        for n_devices in (100, 1000):
            for naive in (False, True):
                total = args.naive_messages if naive else args.messages
                r = run_throughput(env, n_devices, max(1, total // n_devices), naive, timeout=120)
                results.append(r)
                loss = "zero loss" if r.stored == r.messages else "LOSS"
                print(
                    f"{r.label:8s} {r.devices:5d} devices: {r.rate:9,.0f} readings/s sustained "
                    f"({r.stored:,}/{r.messages:,} stored, {loss}; "
                    f"publishers reached {r.publish_rate:,.0f}/s)",
                    flush=True,
                )
        print()
        for n_devices in (100, 1000):
            b = next(r for r in results if r.devices == n_devices and r.label == "batched")
            n = next(r for r in results if r.devices == n_devices and r.label == "naive")
            print(f"{n_devices:5d} devices: batched/naive = {b.rate / n.rate:.1f}x")
        lat = run_latency(env, 1000, 1000.0, args.latency_seconds)
        print(
            "\nlatency at 1,000 readings/s from 1,000 devices "
            f"({lat['stored']:,}/{lat['messages']:,} stored): "
            f"p50 {lat['p50'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms, max {lat['max'] * 1000:.0f} ms "
            "(publish to row visible to a 10 ms poller)"
        )
        best = min(r.rate for r in results if r.label == "batched")
        lossless = all(r.stored == r.messages for r in results) and lat["stored"] == lat["messages"]
        verdict = {True: "met", False: "MISSED"}
        print(
            f"\ngoals: >= 10,000 readings/s: {verdict[best >= 10_000]} (lowest batched {best:,.0f}/s); "
            f"zero loss: {verdict[lossless]}; p99 < 1 s: {verdict[lat['p99'] < 1]}"
        )
    finally:
        env.broker.stop()
        env.pg.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
