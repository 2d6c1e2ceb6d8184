"""Ingestion benchmark: does the consumer keep up with the broker? Ratios from one run.

    .venv/bin/python bench/ingest.py              # about 3 minutes on 2 cores
    .venv/bin/python bench/ingest.py --profile    # and where the consumer's CPU goes

One run starts its own Postgres 15 and Mosquitto 2 on free loopback ports (data under
.data/bench-<pid>, removed afterwards) with the instance's hardening on: every simulated device is
its own dynamic-security account bound to its client id and allowed only its own topic, the
consumer processes are bound to theirs and share the subscription, payload caps, full validation,
dead letters and license gating. With the same broker, database and load it measures:

1. for 100 and 1,000 devices (each its own MQTT connection, QoS 1): the rate the publishers reach
   and the rate the consumer stores rows at (sustained, 10-90 % of the rows), with 1 and with 2
   consumer processes, and the consumer / publishers ratio (goal: >= 60 %);
2. the same load against a naive consumer (one INSERT and one commit per message, ack after
   commit): the consumer / naive ratio (goal: >= 10x);
3. p50/p99 publish-to-commit latency at a steady 1,000 readings/s from 1,000 devices (goal: p99 <
   250 ms);
4. with --profile, one more 1,000-device run under cProfile: where the consumer's CPU goes.

Absolute rates depend on the machine and on what else runs on it; the ratios are what carries over.
Zero loss is checked by counting rows against messages the broker acknowledged. Everything is
bounded (message counts and timeouts) and loopback only. The broker is configured like production
should be: no cap on queued messages for the consumer's persistent sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import pstats
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
from tenant_app.config import TELEMETRY_TOPIC, Settings  # noqa: E402
from tenant_app.consumer import end_session  # noqa: E402
from tenant_app.db import TABLES, ensure_schema  # noqa: E402
from tenant_app.dynsec import DynsecAdmin, device_role  # noqa: E402

CUSTOMER = "bench"
CONSUMER_PASSWORD = "bench-consumer-pw"
CONSUMER_CLIENT_ID = "iotistic-ingest-bench"
MAX_DEVICES = 1000
WINDOW = 50  # unacknowledged publishes per device connection


def device_id(n: int) -> str:
    return f"d{n:04d}"


def device_password(device: str) -> str:
    return f"pw-{device}"


class BenchPostgres(LocalPostgres):
    """The devenv Postgres, recording when each transaction committed (for the latency figures)."""

    def init(self) -> None:
        super().init()
        conf = self.pgdata / "postgresql.conf"
        if "track_commit_timestamp = on" not in conf.read_text():
            with conf.open("a") as f:
                f.write("track_commit_timestamp = on\n")


class BenchMosquitto(LocalMosquitto):
    """The devenv broker plus the queue settings a production tenant broker needs, and the devices.

    The 1,000 device accounts (each bound to its client id, allowed only its own topic) are written
    into the dynamic-security file before the broker starts: creating them through the plugin would
    rewrite that file after each of 2,000 commands.
    """

    def _write_config(self) -> None:
        super()._write_config()
        with self.config_file.open("a") as f:
            f.write("max_queued_messages 0\nmax_queued_bytes 0\n")

    def init(self) -> None:
        super().init()
        config = json.loads(self.dynsec_file.read_text())
        salt = os.urandom(12)
        for n in range(MAX_DEVICES):
            device = device_id(n)
            digest = hashlib.pbkdf2_hmac("sha512", device_password(device).encode(), salt, 101)
            config["roles"].append(
                {
                    "rolename": device_role(device),
                    "acls": [
                        {
                            "acltype": "publishClientSend",
                            "topic": TELEMETRY_TOPIC.format(device_id=device),
                            "priority": 0,
                            "allow": True,
                        }
                    ],
                }
            )
            config["clients"].append(
                {
                    "username": device,
                    "clientid": device,
                    "password": base64.b64encode(digest).decode(),
                    "salt": base64.b64encode(salt).decode(),
                    "iterations": 101,
                    "roles": [{"rolename": device_role(device)}],
                }
            )
        config["defaultACLAccess"]["publishClientSend"] = False
        self.dynsec_file.write_text(json.dumps(config))


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
    writer.write(connect_packet(device_id, device_id, device_password(device_id)))
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


async def publish_burst(port: int, devices: list[str], per_device: int, stats: PublishStats) -> PublishStats:
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
    data: Path


def setup(data: Path, processes: int) -> Env:
    pg = BenchPostgres(data / "postgres", port=free_port())
    broker = BenchMosquitto(data / "mosquitto", port=free_port(), ws_port=free_port())
    pg.start()
    broker.start()
    db = pg.create_database("bench")
    ensure_schema(db)
    admin = DynsecAdmin("127.0.0.1", broker.port, ADMIN_USER, broker.admin_password)
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
        "CONSUMER_CLIENT_ID": CONSUMER_CLIENT_ID,
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
    }
    bench_env = Env(pg, broker, admin, db, env, data)
    for username, client_id in consumer_settings(bench_env, processes).consumer_accounts():
        admin.ensure_consumer(username, CONSUMER_PASSWORD, client_id)  # what provision does
    return bench_env


def consumer_settings(env: Env, processes: int) -> Settings:
    return Settings.from_env(env.env | {"CONSUMER_PROCESSES": str(processes)})


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


@dataclass
class Running:
    proc: subprocess.Popen
    processes: int
    log: Path


def start_consumer(env: Env, naive: bool, processes: int = 1, extra: dict | None = None) -> Running:
    """The real consumer (`python -m tenant_app.consumer`, N processes) or the naive one, subscribed."""
    cmd = (
        [sys.executable, str(Path(__file__)), "--naive-consumer"]
        if naive
        else [sys.executable, "-m", "tenant_app.consumer"]
    )
    log = env.data / f"consumer-{time.time_ns()}.log"
    proc = subprocess.Popen(
        cmd,
        env=env.env | {"CONSUMER_PROCESSES": str(processes)} | (extra or {}),
        cwd=ROOT,
        stderr=log.open("wb"),
    )
    running = Running(proc, processes, log)
    # Publishing starts once every process has its subscription (the broker only routes to it then).
    deadline = time.monotonic() + 30
    while log.read_bytes().count(b"subscribed") < processes:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"consumer did not subscribe: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return running


def stop(env: Env, running: Running) -> None:
    """Stop the consumer, then end its sessions: each scenario starts with none queued or shared."""
    running.proc.send_signal(signal.SIGTERM)
    try:
        running.proc.wait(30)
    except subprocess.TimeoutExpired:
        running.proc.kill()
        running.proc.wait()
    for username, client_id in consumer_settings(env, running.processes).consumer_accounts():
        end_session(Settings.from_env(env.env | {"MQTT_USERNAME": username, "CONSUMER_CLIENT_ID": client_id}))


@dataclass
class Throughput:
    label: str
    devices: int
    messages: int
    stored: int
    publish_rate: float  # messages/s the broker acknowledged to the publishers, 10-90 % of them
    rate: float  # rows/s stored, between 10 % and 90 % of the rows
    seconds: float

    @property
    def ratio(self) -> float:
        return self.rate / self.publish_rate

    @property
    def lossless(self) -> bool:
        return self.stored == self.messages


def run_throughput(
    env: Env,
    n_devices: int,
    per_device: int,
    naive: bool,
    processes: int,
    timeout: float,
    extra: dict | None = None,
) -> Throughput:
    devices = [device_id(i) for i in range(n_devices)]
    reset(env, devices)
    label = "naive" if naive else f"consumer x{processes}"
    running = start_consumer(env, naive, processes, extra)
    total = n_devices * per_device
    stats = PublishStats()
    # Publishers' acknowledged messages and stored rows, sampled together every 0.1 s.
    marks: list[tuple[float, int, int]] = []
    try:
        loop = asyncio.new_event_loop()
        t0 = time.monotonic()
        pub_task = loop.run_in_executor(
            None, lambda: asyncio.run(publish_burst(env.broker.port, devices, per_device, stats))
        )
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            acked, n = stats.acked, count(env)
            marks.append((time.monotonic(), acked, n))
            if n >= total:
                break
            time.sleep(0.1)
        loop.run_until_complete(pub_task)
        loop.close()
    finally:
        stop(env, running)
    stored = count(env)
    return Throughput(
        label,
        n_devices,
        total,
        stored,
        sustained([(t, a) for t, a, _ in marks], total),
        sustained([(t, n) for t, _, n in marks], stored),
        marks[-1][0] - t0,
    )


def sustained(marks: list[tuple[float, int]], total: int) -> float:
    """Rate between the samples where 10 % and 90 % of `total` was reached (ramp-up and tail left out).

    Publishers and consumer are measured the same way from the same samples.
    """
    lo = next(((t, n) for t, n in marks if n >= 0.1 * total), marks[0])
    hi = next(((t, n) for t, n in marks if n >= 0.9 * total), marks[-1])
    if hi[0] <= lo[0]:
        # 10 % to 90 % within one 0.1 s sample (a fast burst): the rate from the start to the end.
        lo, hi = marks[0], next(((t, n) for t, n in marks if n >= total), marks[-1])
    return (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else float("nan")


def run_latency(env: Env, n_devices: int, rate: float, seconds: float, processes: int) -> dict:
    """Publish-to-commit latency of each reading: its transaction's commit time minus its timestamp.

    Devices stamp each reading with the time they publish it; Postgres records when the batch
    holding it committed (track_commit_timestamp), on the same clock.
    """
    devices = [device_id(i) for i in range(n_devices)]
    reset(env, devices)
    running = start_consumer(env, False, processes)
    interval = n_devices / rate
    per_device = max(1, int(seconds / interval))
    total = n_devices * per_device
    try:
        loop = asyncio.new_event_loop()
        task = loop.run_in_executor(
            None, lambda: asyncio.run(publish_paced(env.broker.port, devices, per_device, interval))
        )
        loop.run_until_complete(task)
        loop.close()
        deadline = time.monotonic() + 30
        while count(env) < total and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(env, running)
    with psycopg.connect(env.db) as conn:
        latencies = sorted(
            float(x)
            for (x,) in conn.execute(
                "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - timestamp) FROM sensor_readings"
            )
        )
    q = statistics.quantiles(latencies, n=100)
    return {"messages": total, "stored": len(latencies), "p50": q[49], "p99": q[98], "max": latencies[-1]}


# --- where the consumer's CPU goes ---------------------------------------------------------------------
CATEGORIES = (  # first match wins, on the file of the function that spent the time
    ("MQTT: paho and buffered I/O", ("paho/", "mqtt_batching.py", "select", "socket")),
    ("JSON decoding and validation", ("json/", "readings.py", "ingest.py", "jsonsafe.py", "_strptime")),
    ("Postgres: COPY, statements, waiting", ("psycopg", "store.py")),
    ("batching, acknowledging, threads", ("consumer.py", "services.py", "threading.py", "queue.py")),
)


# Where a thread blocks (for the network, the database, the batch window): time, but not CPU.
BLOCKING = ("select.select", "'acquire' of '_thread", "connection.py:479(wait)", "'wait' of")


def profile_summary(directory: Path, top: int = 12) -> str:
    """Own CPU time of the consumer's threads by category and by function, from cProfile dumps."""
    files = sorted(directory.glob("*.prof"))
    if not files:
        return "no profile written"
    stats = pstats.Stats(*map(str, files))
    rows: list[tuple[float, str, str]] = []
    for (file, line, func), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        name = func if file == "~" else f"{Path(file).name}:{line}({func})"
        if any(b in name for b in BLOCKING):
            continue
        category = next(
            (label for label, keys in CATEGORIES if any(k in file or k in func for k in keys)), "other"
        )
        rows.append((tottime, category, name))
    total = sum(t for t, _, _ in rows) or 1.0
    by_category: dict[str, float] = {}
    for seconds, category, _ in rows:
        by_category[category] = by_category.get(category, 0.0) + seconds
    lines = [f"consumer CPU by category ({total:.1f} s under cProfile, blocking waits left out):"]
    lines += [f"  {t / total:6.1%}  {c}" for c, t in sorted(by_category.items(), key=lambda kv: -kv[1])]
    lines.append(f"top {top} functions by own time:")
    lines += [f"  {t / total:6.1%}  {name}" for t, _, name in sorted(rows, reverse=True)[:top]]
    return "\n".join(lines)


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
    client.on_subscribe = lambda *a: print("subscribed", file=sys.stderr, flush=True)
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
    parser.add_argument("--messages", type=int, default=60_000, help="messages per consumer scenario")
    parser.add_argument("--naive-messages", type=int, default=6_000, help="messages per naive scenario")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--processes", type=int, default=2, help="consumer processes of the scale-out runs")
    parser.add_argument("--profile", action="store_true", help="also print where the consumer's CPU goes")
    args = parser.parse_args()
    if args.naive_consumer:
        naive_consumer()
        return 0

    data = Path(os.environ.get("IOTISTIC_DATA", ROOT / ".data")) / f"bench-{os.getpid()}"
    data.mkdir(parents=True, exist_ok=True)
    print(
        f"bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start "
        "(publishers, broker, consumer and Postgres share them)",
        flush=True,
    )
    env = setup(data, args.processes)
    try:
        results: list[Throughput] = []
        for n_devices in (100, 1000):
            for naive, processes in ((False, 1), (False, args.processes), (True, 1)):
                total = args.naive_messages if naive else args.messages
                r = run_throughput(env, n_devices, max(1, total // n_devices), naive, processes, timeout=120)
                results.append(r)
                print(
                    f"{r.devices:5d} devices, {r.label:11s}: publishers {r.publish_rate:8,.0f}/s, "
                    f"consumer {r.rate:8,.0f}/s = {r.ratio:4.0%} of the publishers "
                    f"({r.stored:,}/{r.messages:,} stored{'' if r.lossless else ', LOSS'})",
                    flush=True,
                )
        print()
        goals = []
        for n_devices in (100, 1000):
            naive = next(r for r in results if r.devices == n_devices and r.label == "naive")
            for r in (r for r in results if r.devices == n_devices and r.label != "naive"):
                print(
                    f"{n_devices:5d} devices, {r.label:11s}: {r.ratio:4.0%} of the publishers' rate, "
                    f"{r.rate / naive.rate:5.1f}x the naive consumer"
                )
                goals.append((r, r.rate / naive.rate))
        lat = run_latency(env, 1000, 1000.0, args.latency_seconds, args.processes)
        print(
            f"\nlatency at 1,000 readings/s from 1,000 devices, consumer x{args.processes} "
            f"({lat['stored']:,}/{lat['messages']:,} stored): "
            f"p50 {lat['p50'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms, max {lat['max'] * 1000:.0f} ms "
            "(publish to the commit of the row's batch)"
        )
        verdict = {True: "met", False: "MISSED"}
        lossless = all(r.lossless for r in results) and lat["stored"] == lat["messages"]
        for processes in sorted({1, args.processes}):
            mine = [(r, x) for r, x in goals if r.label == f"consumer x{processes}"]
            worst_ratio = min(r.ratio for r, _ in mine)
            worst_naive = min(x for _, x in mine)
            print(
                f"goals, consumer x{processes}: >= 60% of the publishers: {verdict[worst_ratio >= 0.6]} "
                f"(lowest {worst_ratio:.0%}); >= 10x naive: {verdict[worst_naive >= 10]} "
                f"(lowest {worst_naive:.1f}x)"
            )
        print(
            f"goals: zero loss: {verdict[lossless]}; "
            f"p99 < 250 ms at 1,000/s: {verdict[lat['p99'] < 0.25]} ({lat['p99'] * 1000:.0f} ms)"
        )
        if args.profile:
            directory = data / "profile"
            run_throughput(
                env, 1000, args.messages // 1000, False, 1, 120, {"CONSUMER_PROFILE_DIR": str(directory)}
            )
            print(f"\nprofile of one consumer process draining {args.messages:,} readings from 1,000 devices")
            print(profile_summary(directory))
    finally:
        env.broker.stop()
        env.pg.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
